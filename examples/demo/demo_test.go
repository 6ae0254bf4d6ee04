// Package demo_test runs the one-command demo for real, as a user would:
// `demo.sh up` twice in a row, the portal through DNS, HTTP and a browser
// while calc containers stop and start, and `demo.sh down`, which must
// leave the machine as it found it.
package demo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/examples/internal/pagetest"
)

const zone = "servicediscovery.internal."

func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIPPING the demo test in -short mode")
	}
	out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no Docker engine answers, and CI=true: %v\n%s", err, out)
	}
	t.Skipf("SKIPPING the demo test: no Docker engine answers (%v)", err)
}

// freePort returns a loopback port free for both TCP and UDP (the demo's
// DNS port takes both).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}

// docker runs the docker CLI and returns its trimmed output.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// demoRun is one demo, with its own prefix, ports and temporary directory.
type demoRun struct {
	prefix                       string
	dns, portal                  string
	env                          []string
	tmp, state                   string
	dnsPort, apiPort, portalPort int
}

func newDemo(t *testing.T) *demoRun {
	d := &demoRun{
		// A prefix of its own: a demo the user has running is left alone.
		prefix:     fmt.Sprintf("signpost-demotest-%d", os.Getpid()),
		dnsPort:    freePort(t),
		apiPort:    freePort(t),
		portalPort: freePort(t),
		tmp:        filepath.Join(t.TempDir(), "tmp"),
	}
	if err := os.Mkdir(d.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	// The state dir is the script's default, under TMPDIR.
	d.state = filepath.Join(d.tmp, d.prefix)
	d.dns = fmt.Sprintf("127.0.0.1:%d", d.dnsPort)
	d.portal = fmt.Sprintf("http://127.0.0.1:%d", d.portalPort)
	d.env = []string{
		"DEMO_PREFIX=" + d.prefix,
		fmt.Sprintf("DEMO_DNS_PORT=%d", d.dnsPort),
		fmt.Sprintf("DEMO_API_PORT=%d", d.apiPort),
		fmt.Sprintf("DEMO_PORTAL_PORT=%d", d.portalPort),
		"TMPDIR=" + d.tmp,
	}
	return d
}

// run runs `demo.sh verb`, fails the test if it fails, and returns what
// it printed.
func (d *demoRun) run(t *testing.T, verb string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "demo.sh", verb)
	cmd.Env = append(os.Environ(), d.env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh %s: %v\n%s", verb, err, out)
	}
	t.Logf("demo.sh %s (%v):\n%s", verb, time.Since(start).Round(time.Millisecond), out)
	return string(out)
}

// passing asks the demo's API for each service's instances and how many
// of them pass their check.
func (d *demoRun) passing(t *testing.T) map[string][2]int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/services", d.apiPort))
	if err != nil {
		t.Fatalf("the demo's API: %v", err)
	}
	defer resp.Body.Close()
	var list []struct {
		Name      string `json:"name"`
		Instances int    `json:"instances"`
		Passing   int    `json:"passing"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("the demo's API /v1/services: %v", err)
	}
	out := map[string][2]int{}
	for _, s := range list {
		out[s.Name] = [2]int{s.Instances, s.Passing}
	}
	return out
}

func (d *demoRun) label() string { return "label=signpost.demo=" + d.prefix }

// containerID is the short id of a demo container, which its services
// report as "containerid" (Docker sets the host name to it).
func (d *demoRun) containerID(t *testing.T, name string) string {
	t.Helper()
	return docker(t, "inspect", "-f", "{{.Config.Hostname}}", d.prefix+"-"+name)
}

// srvPorts asks the demo's DNS for the SRV records of name.
func (d *demoRun) srvPorts(t *testing.T, name string) []uint16 {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, d.dns)
	if err != nil {
		t.Fatalf("ask %s SRV: %v", name, err)
	}
	var ports []uint16
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			ports = append(ports, s.Port)
		}
	}
	slices.Sort(ports)
	return ports
}

// TestDemo runs the demo as the README tells a user to, and then removes
// it: up twice in a row (the second replaces the first), the services
// through DNS, HTTP and a browser while calc containers stop and start,
// and down, after which the machine must be as it was before.
func TestDemo(t *testing.T) {
	requireDocker(t)
	d := newDemo(t)
	before := snapshot(t, d.prefix)
	if _, err := os.Stat(d.state); !os.IsNotExist(err) {
		t.Fatalf("state dir %s exists before the demo: %v", d.state, err)
	}
	down := false
	t.Cleanup(func() {
		if !down {
			d.run(t, "down")
		}
	})

	out := d.run(t, "up")
	if want := "DEMO_PREFIX=" + d.prefix + " examples/demo/demo.sh down"; !strings.Contains(out, want) {
		t.Errorf("demo.sh up printed no cleanup line with its prefix (%q)", want)
	}
	ui := fmt.Sprintf("http://127.0.0.1:%d/ui/", d.apiPort)
	if want := "UI:      " + ui; !strings.Contains(out, want) {
		t.Errorf("demo.sh up printed no line with the UI's URL (%q)", want)
	}
	if resp, err := http.Get(ui); err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET %s: %v %v, want 200 text/html", ui, resp, err)
	} else {
		resp.Body.Close()
	}
	first := docker(t, "ps", "-q", "--no-trunc", "--filter", d.label())
	d.run(t, "up")

	t.Run("second up replaces the first and duplicates nothing", func(t *testing.T) {
		var want []string
		for _, n := range []string{"signpost", "time-1", "time-2", "calc-1", "calc-2", "portal"} {
			want = append(want, d.prefix+"-"+n)
		}
		slices.Sort(want)
		running := lines(docker(t, "ps", "-a", "--filter", d.label(), "--filter", "status=running", "--format", "{{.Names}}"))
		all := lines(docker(t, "ps", "-a", "--filter", d.label(), "--format", "{{.Names}}"))
		slices.Sort(running)
		slices.Sort(all)
		if !slices.Equal(all, want) || !slices.Equal(running, want) {
			t.Errorf("after the second up: containers %v, running %v; want exactly %v, all running", all, running, want)
		}
		for _, id := range lines(first) {
			if out, err := exec.Command("docker", "inspect", id).CombinedOutput(); err == nil {
				t.Errorf("container %s of the first up is still there after the second:\n%.300s", id, out)
			}
		}
		if nets := lines(docker(t, "network", "ls", "-q", "--filter", d.label())); len(nets) != 1 {
			t.Errorf("after the second up: networks %v, want one", nets)
		}
		images := lines(docker(t, "images", "--filter", d.label(), "--filter", "dangling=false", "--format", "{{.Repository}}:{{.Tag}}"))
		slices.Sort(images)
		wantImages := []string{d.prefix + "/calc:latest", d.prefix + "/portal:latest", d.prefix + "/signpost:latest", d.prefix + "/time:latest"}
		if !slices.Equal(images, wantImages) {
			t.Errorf("after the second up: images %v, want %v", images, wantImages)
		}
		for _, f := range []string{"token", "password"} {
			if fi, err := os.Stat(filepath.Join(d.state, f)); err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
				t.Errorf("state file %s: %v %v, want non-empty with mode 0600", f, fi, err)
			}
		}
	})

	t.Run("every instance passes its check, the portal included", func(t *testing.T) {
		want := map[string]int{"time": 2, "calc": 2, "portal": 1}
		start := time.Now()
		var got map[string][2]int
		for deadline := start.Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got = d.passing(t)
			ok := len(got) == len(want)
			for svc, n := range want {
				ok = ok && got[svc] == [2]int{n, n}
			}
			if ok {
				t.Logf("all instances passing %v after up", time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("15 s after up, services (instances, passing): %v; want %v, every one passing", got, want)
			}
		}
	})

	t.Run("DNS serves two time and two calc instances", func(t *testing.T) {
		for _, svc := range []string{"_calc._tcp.", "_time._tcp."} {
			if p := d.srvPorts(t, svc+zone); len(p) != 2 || p[0] == p[1] {
				t.Errorf("%s: SRV ports %v, want 2 instances with distinct ports", svc, p)
			}
		}
	})

	t.Run("the portal reaches both calc containers", func(t *testing.T) {
		want := map[string]bool{d.containerID(t, "calc-1"): true, d.containerID(t, "calc-2"): true}
		seen := map[string]bool{}
		for i := 0; i < 60 && len(seen) < 2; i++ {
			resp, err := http.Get(d.portal + "/calc/%282%2B6%29%2A3")
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Value       float64 `json:"value"`
				ContainerID string  `json:"containerid"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || body.Value != 24 || !want[body.ContainerID] {
				t.Fatalf("portal /calc/(2+6)*3: %d %+v %v, want 24 from one of %v", resp.StatusCode, body, err, want)
			}
			seen[body.ContainerID] = true
		}
		if len(seen) != 2 {
			t.Errorf("in 60 calls the portal reached only %v of the two calc containers", seen)
		}
	})

	t.Run("browser", func(t *testing.T) { browser(t, d) })

	t.Run("down leaves the machine as it found it", func(t *testing.T) {
		down = true
		d.run(t, "down")
		compare(t, before, d.prefix)
		if _, err := os.Stat(d.state); !os.IsNotExist(err) {
			t.Errorf("state dir %s is still there after down (%v)", d.state, err)
		}
		if left, err := os.ReadDir(d.tmp); err != nil || len(left) != 0 {
			t.Errorf("the demo left files in its TMPDIR: %v %v", left, err)
		}
	})
}

// TestDemoPortTaken runs the demo with its DNS port taken: it must say
// which port and which variable moves it, and leave nothing behind.
func TestDemoPortTaken(t *testing.T) {
	requireDocker(t)
	d := newDemo(t)
	// Taken as `signpost up` takes it: TCP and UDP on loopback.
	tl, err := net.Listen("tcp", d.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", d.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	before := snapshot(t, d.prefix)
	t.Cleanup(func() {
		// Whatever a broken script left, with this test's prefix only.
		down := exec.Command("bash", "demo.sh", "down")
		down.Env = append(os.Environ(), d.env...)
		_ = down.Run()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "demo.sh", "up")
	cmd.Env = append(os.Environ(), d.env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("demo.sh up with port %d taken succeeded:\n%s", d.dnsPort, out)
	}
	msg := string(out)
	want := fmt.Sprintf("port %d for the demo's DNS is taken", d.dnsPort)
	if !strings.Contains(msg, want) || !strings.Contains(msg, "DEMO_DNS_PORT=") || strings.Count(strings.TrimSpace(msg), "\n") > 2 {
		t.Errorf("demo.sh up with port %d taken said:\n%s\nwant a short message with %q and DEMO_DNS_PORT=", d.dnsPort, msg, want)
	}
	compare(t, before, d.prefix)
	if _, err := os.Stat(d.state); !os.IsNotExist(err) {
		t.Errorf("state dir %s exists after the failed start (%v)", d.state, err)
	}
	if left, err := os.ReadDir(d.tmp); err != nil || len(left) != 0 {
		t.Errorf("the failed start left files in its TMPDIR: %v %v", left, err)
	}
}

// browser drives the portal's page in headless Chromium while calc
// containers stop and start.
func browser(t *testing.T, d *demoRun) {
	pagetest.Chromium(t)
	calc1, calc2 := d.containerID(t, "calc-1"), d.containerID(t, "calc-2")
	times := map[string]bool{d.containerID(t, "time-1"): true, d.containerID(t, "time-2"): true}
	portalBefore := docker(t, "inspect", "-f", "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}", d.prefix+"-portal")
	page := pagetest.Open(t, d.portal+"/")
	ask := func(kind, value string) pagetest.Answer {
		t.Helper()
		return pagetest.Ask(t, page, kind, value)
	}
	isTime := regexp.MustCompile(`^\d\d:\d\d [A-Z][a-z]{2} \d{1,2}$`)
	namesCalc := regexp.MustCompile(`service "calc"`)

	if a := ask("calc", "(2+6)*3"); a.Error || a.Text != "24" || (a.Container != calc1 && a.Container != calc2) {
		t.Errorf("calc (2+6)*3: the page shows %v, want 24 from %s or %s", a, calc1, calc2)
	}
	if a := ask("time", "15:04 Jan 2"); a.Error || !isTime.MatchString(a.Text) || !times[a.Container] {
		t.Errorf("time 15:04 Jan 2: the page shows %v, want a time like 15:04 Jan 2 from one of %v", a, times)
	}

	// One calc stopped: every answer comes from the other, at once (the
	// portal's client skips an instance that refuses connections).
	docker(t, "stop", "-t", "1", d.prefix+"-calc-1")
	for range 5 {
		if a := ask("calc", "(2+6)*3"); a.Error || a.Text != "24" || a.Container != calc2 {
			t.Fatalf("with calc-1 stopped, calc (2+6)*3: the page shows %v, want 24 from calc-2 (%s)", a, calc2)
		}
	}

	// Both stopped: the page says calc cannot answer, and time still works.
	docker(t, "stop", "-t", "1", d.prefix+"-calc-2")
	if a := ask("calc", "(2+6)*3"); !a.Error || !namesCalc.MatchString(a.Text) {
		t.Errorf("with both calc stopped, the page shows %v, want an error naming calc", a)
	}
	if a := ask("time", "15:04 Jan 2"); a.Error || !isTime.MatchString(a.Text) {
		t.Errorf("with calc down, time 15:04 Jan 2: the page shows %v, want a time", a)
	}
	pagetest.Screenshot(t, page, "demo-portal-calc-down.png")

	// One started again: answers come back, the portal untouched. The
	// agent registers it once its health check passes; the portal's client
	// has "no calc" cached for up to the negative TTL (5 s).
	docker(t, "start", d.prefix+"-calc-1")
	var a pagetest.Answer
	for deadline := time.Now().Add(90 * time.Second); ; {
		if a = ask("calc", "(2+6)*3"); !a.Error {
			break
		}
		if !namesCalc.MatchString(a.Text) {
			t.Errorf("while calc-1 restarts, the page shows %v, want an error naming calc", a)
		}
		if time.Now().After(deadline) {
			t.Fatalf("90 s after calc-1 started, the page still shows %v, want 24", a)
		}
	}
	if a.Text != "24" || a.Container != calc1 {
		t.Errorf("after calc-1 started, the page shows %v, want 24 from calc-1 (%s)", a, calc1)
	}
	if after := docker(t, "inspect", "-f", "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}", d.prefix+"-portal"); after != portalBefore {
		t.Errorf("the portal was restarted: %q, then %q", portalBefore, after)
	}
	pagetest.Screenshot(t, page, "demo-portal.png")
}

// TestDemoRefusesBadSettings: a DEMO_* value Docker would choke on midway
// is refused first, in one line naming the variable.
func TestDemoRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"DEMO_PREFIX=My Demo", `DEMO_PREFIX="My Demo": want lower-case letters`},
		{"DEMO_PREFIX=demo-", `DEMO_PREFIX="demo-"`},
		{"DEMO_DNS_PORT=abc", `DEMO_DNS_PORT="abc": want a port number from 1 to 65535`},
		{"DEMO_API_PORT=70000", `DEMO_API_PORT="70000": want a port number`},
		{"DEMO_PORTAL_PORT=0", `DEMO_PORTAL_PORT="0": want a port number`},
	} {
		cmd := exec.Command("bash", "demo.sh", "up")
		cmd.Env = append(os.Environ(), "DEMO_PREFIX=signpost-demotest-bad", "TMPDIR="+t.TempDir(), tc.env)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("%s: demo.sh up ended with %v, want exit status 2", tc.env, err)
		}
		if msg := strings.TrimSpace(string(out)); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: demo.sh up said %q, want one line with %q", tc.env, msg, tc.want)
		}
	}
}
