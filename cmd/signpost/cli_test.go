package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/buildinfo"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// cli runs a command line as main does and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, _ := cli(t, args...)
		if code != 0 || !strings.HasPrefix(out, "signpost ") || !strings.Contains(out, "commit ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("%v: exit %d, %q; want one line naming the version, the commit and %s", args, code, out, runtime.Version())
		}
	}
	code, out, _ := cli(t, "version", "-o", "json")
	var info buildinfo.Info
	if err := json.Unmarshal([]byte(out), &info); code != 0 || err != nil {
		t.Fatalf("version -o json: exit %d, %q: %v", code, out, err)
	}
	if info.GoVersion != runtime.Version() || info.Version == "" || info.Revision == "" || info.Path != "github.com/signpost-dns/signpost" {
		t.Errorf("version -o json: %+v, want the module path, a version, a revision and %s", info, runtime.Version())
	}
}

// TestBuildInfoMetric runs `signpost server` and finds signpost_build_info
// in its /metrics.
func TestBuildInfoMetric(t *testing.T) {
	p := signposttest.StartProcess(t, 0)
	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `signpost_build_info{goversion="` + runtime.Version() + `"`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics has no %s...} line", want)
	}
}

// TestUsageErrors checks that every usage error is one line saying what is
// wrong and one pointing at -h, with exit code 2.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"services", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"services", "a", "b"}, "one SERVICE at most"},
		{[]string{"services", "-o", "yaml"}, `-o "yaml"`},
		{[]string{"lookup"}, "missing NAME"},
		{[]string{"lookup", "a", "b"}, "one NAME at a time"},
		{[]string{"register", "--service", "db"}, "missing --address, --port"},
		{[]string{"register", "--service", "db", "--address", "10.0.0.1", "--port", "70000"}, "--port 70000: want 1-65535"},
		{[]string{"register", "--service", "db", "--address", "10.0.0.1", "--port", "1", "--weight", "0"}, "--weight 0"},
		{[]string{"register", "--port", "x"}, `invalid value "x" for flag -port`},
		{[]string{"deregister"}, "missing ID"},
		{[]string{"server", "--ttl", "soon"}, `invalid value "soon" for flag -ttl`},
		{[]string{"agent", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"agent", "--backend", "consul"}, `--backend "consul": want server or route53`},
		{[]string{"agent", "--check", "ping"}, `--check: check kind "ping"`},
		{[]string{"agent", "--check-interval", "1s", "--check-timeout", "5s"}, "--check-*: "},
		{[]string{"agent", "--only-label", "=x"}, `--only-label "=x"`},
		{[]string{"agent", "--lease-ttl", "-1s"}, "--lease-ttl -1s: want at least 1s"},
		{[]string{"agent", "--address-mode", "bridge"}, `--address-mode "bridge": want "host" or "container"`},
		{[]string{"agent", "--ecs-introspection", "localhost:51678"}, `--ecs-introspection: ECS introspection endpoint "localhost:51678": want http://host:port`},
		{[]string{"agent", "--ecs-introspection", "http://localhost:51678", "--backend", "route53"}, "--ecs-introspection with --backend route53"},
		{[]string{"server", "--lease-ttl", "0s"}, "--lease-ttl 0s: want at least 1s"},
		{[]string{"server", "--ttl", "0s"}, "--ttl 0s, --negative-ttl 5s: want at least 1s"},
		{[]string{"up", "--lease-ttl", "500ms"}, "--lease-ttl 500ms: want at least 1s"},
		{[]string{"watch", "Bad_Name"}, "SERVICE"},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
	} {
		code, out, errOut := cli(t, tc.args...)
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		cmd := tc.args[0]
		if code != 2 || out != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "signpost "+cmd+": ") ||
			!strings.Contains(lines[0], tc.want) || lines[1] != "Run 'signpost "+cmd+" -h' for usage." {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2, one line with %q and the pointer to -h", tc.args, code, out, errOut, tc.want)
		}
	}
	if code, _, errOut := cli(t, "nosuch"); code != 2 || strings.Count(errOut, "\n") != 2 || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
}

// TestFieldErrors checks that a bad value is reported as the flag the user
// gave, not as something derived from it, as a usage error: one line and
// the pointer to -h.
func TestFieldErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--service", "my_db", "--address", "10.0.0.1", "--port", "5432"}, `--service: invalid service "my_db"`},
		{[]string{"--service", "db", "--address", "10.0.0.1", "--port", "5432", "--tag", ""}, "--tag: invalid tags"},
		{[]string{"--service", "db", "--address", "10.0.0.999", "--port", "5432"}, `--address "10.0.0.999": not an IP address`},
		{[]string{"--service", "db", "--address", "10.0.0.1", "--port", "5432", "--meta", "novalue"}, `--meta "novalue": want KEY=VALUE`},
	} {
		code, _, errOut := cli(t, append([]string{"register", "--server", "http://127.0.0.1:1"}, tc.args...)...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || len(lines) != 2 || !strings.Contains(lines[0], tc.want) || strings.Contains(errOut, "my_db-") ||
			lines[1] != "Run 'signpost register -h' for usage." {
			t.Errorf("register %q: exit %d, %q; want exit 2, one line with %q (and no derived id), and the pointer to -h", tc.args, code, errOut, tc.want)
		}
	}
}

// TestEnvConfig sets flags from SIGNPOST_<FLAG> and checks that the
// command line wins and that -h documents it.
func TestEnvConfig(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	t.Setenv("SIGNPOST_SERVER", srv.URL())
	t.Setenv("SIGNPOST_OUTPUT", "json")
	if code, out, errOut := cli(t, "register", "--service", "db", "--address", "10.0.0.7", "--port", "5432"); code != 0 {
		t.Fatalf("register with $SIGNPOST_SERVER: exit %d, %s %s", code, out, errOut)
	}
	code, out, errOut := cli(t, "services")
	var list []registry.ServiceSummary
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || list[0].Name != "db" {
		t.Fatalf("services with $SIGNPOST_OUTPUT=json: exit %d, %q %q: %v", code, out, errOut, err)
	}
	// The command line wins over the environment.
	if code, out, _ := cli(t, "services", "-o", "wide"); code != 0 || !strings.HasPrefix(out, "SERVICE") || !strings.Contains(out, "_db._tcp") {
		t.Errorf("services -o wide over $SIGNPOST_OUTPUT=json: exit %d, %q", code, out)
	}
	t.Setenv("SIGNPOST_SERVER", "http://127.0.0.1:1")
	if code, out, _ := cli(t, "services", "--server", srv.URL()); code != 0 || !strings.Contains(out, `"db"`) {
		t.Errorf("--server over a wrong $SIGNPOST_SERVER: exit %d, %q", code, out)
	}
	// A bad value in the environment names the variable.
	t.Setenv("SIGNPOST_TIMEOUT", "soon")
	code, _, errOut = cli(t, "lookup", "db")
	if code != 2 || !strings.Contains(errOut, `$SIGNPOST_TIMEOUT="soon" (--timeout)`) {
		t.Errorf("lookup with $SIGNPOST_TIMEOUT=soon: exit %d, %q", code, errOut)
	}
	// -h documents the variables (the help goes to the flag set's output).
	fs := newFlagSet("server", "[flags]")
	serverFlags(fs)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.Usage()
	for _, want := range []string{"[$SIGNPOST_DATA_DIR]", "[$SIGNPOST_DNS]", "SIGNPOST_<FLAG>"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("server -h does not show %s:\n%s", want, help.String())
		}
	}
}

// TestOutputJSON reads `-o json` of services, services NAME and lookup
// back, and checks services NAME shows container, tags and metadata.
func TestOutputJSON(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	c := srv.Client(t)
	in := registry.Instance{ID: "web-1", Service: "web", Address: netip.MustParseAddr("10.0.0.9"), Port: 8081,
		Tags: []string{"blue"}, Meta: map[string]string{"version": "1.2"}, Container: "shop-web-1"}
	if _, err := c.ReplaceNode(ctx, "host-a", 10*time.Second, []registry.Instance{in}); err != nil {
		t.Fatal(err)
	}
	api := "--server=" + srv.URL()

	_, out, _ := cli(t, "services", api, "-o", "json")
	var list []registry.ServiceSummary
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Name != "web" || list[0].Instances != 1 {
		t.Errorf("services -o json: %q: %v", out, err)
	}
	_, out, _ = cli(t, "services", api, "web", "-o", "json")
	var svc apiclient.ServiceResponse
	if err := json.Unmarshal([]byte(out), &svc); err != nil || len(svc.Instances) != 1 || svc.Instances[0].Container != "shop-web-1" || svc.Instances[0].Meta["version"] != "1.2" {
		t.Errorf("services web -o json: %q: %v", out, err)
	}
	_, out, _ = cli(t, "services", api, "web")
	for _, want := range []string{"CONTAINER", "shop-web-1", "host-a", "blue", "version=1.2", "passing"} {
		if !strings.Contains(out, want) {
			t.Errorf("services web shows no %q:\n%s", want, out)
		}
	}
	code, out, errOut := cli(t, "lookup", "--dns", srv.DNSAddr(), "-o", "json", "web")
	var answers []srvAnswer
	if err := json.Unmarshal([]byte(out), &answers); code != 0 || err != nil || len(answers) != 1 || answers[0].Port != 8081 ||
		answers[0].Target != "web-1.web.servicediscovery.internal." || len(answers[0].Addresses) != 1 || answers[0].Addresses[0] != "10.0.0.9" {
		t.Errorf("lookup -o json: exit %d, %q %q: %v", code, out, errOut, err)
	}
	if _, out, _ := cli(t, "lookup", "--dns", srv.DNSAddr(), "-o", "wide", "web"); !strings.Contains(out, srv.DNSAddr()) {
		t.Errorf("lookup -o wide names no server:\n%s", out)
	}

	// A name given in upper case is said to be registered lower-cased.
	if code, out, errOut := cli(t, "register", api, "--service", "MyDB", "--address", "10.0.0.8", "--port", "5432"); code != 0 ||
		!strings.Contains(out, `note: service "MyDB" is registered as "mydb"`) {
		t.Errorf("register --service MyDB: exit %d, %q %q; want a note that it is registered as mydb", code, out, errOut)
	}

	// A hand deregistration of the agent's instance is refused, naming
	// the node, unless forced.
	code, _, errOut = cli(t, "deregister", api, "web-1")
	if code != 1 || !strings.Contains(errOut, "409") || !strings.Contains(errOut, `node "host-a"`) || !strings.Contains(errOut, "--force") {
		t.Errorf("deregister of an agent's instance: exit %d, %q; want a 409 naming the node and --force", code, errOut)
	}
	if code, out, errOut := cli(t, "deregister", api, "--force", "web-1"); code != 0 || !strings.Contains(out, "deregistered web-1") {
		t.Errorf("deregister --force: exit %d, %q %q", code, out, errOut)
	}
}

// startWatch runs `signpost watch args...` until the test ends and
// returns what it prints.
func startWatch(t *testing.T, args ...string) *signposttest.Output {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &signposttest.Output{}
	done := make(chan error, 1)
	go func() { done <- commands["watch"].run(ctx, args, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	return out
}

// TestWatch follows the stream while an instance is registered, turns
// critical and is deregistered, and sees each as it happens.
func TestWatch(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	api := "--server=" + srv.URL()
	if code, _, errOut := cli(t, "register", api, "--service", "old", "--address", "10.0.0.1", "--port", "1", "--id", "old-1"); code != 0 {
		t.Fatal(errOut)
	}
	out := startWatch(t, api)
	waitFor := func(what string, match func(line string) bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, l := range strings.Split(out.String(), "\n") {
				if match(l) {
					return
				}
			}
		}
		t.Fatalf("watch printed no line for %s in 20s:\n%s", what, out.String())
	}
	has := func(words ...string) func(string) bool {
		return func(l string) bool {
			for _, w := range words {
				if !strings.Contains(l, w) {
					return false
				}
			}
			return true
		}
	}
	waitFor("the instance there at the start", has("present", "old-1", "10.0.0.1:1"))
	if code, _, errOut := cli(t, "register", api, "--service", "db", "--address", "10.0.0.7", "--port", "5432", "--id", "db-1"); code != 0 {
		t.Fatal(errOut)
	}
	waitFor("the added instance", has("added", "db", "db-1", "10.0.0.7:5432", "passing", "(by hand)"))
	// A health change is a line of its own.
	cl := srv.Client(t)
	crit := registry.Instance{ID: "db-1", Service: "db", Address: netip.MustParseAddr("10.0.0.7"), Port: 5432,
		Health: registry.Health{Status: registry.HealthCritical, Output: "connection refused"}}
	if _, err := cl.Register(context.Background(), crit); err != nil {
		t.Fatal(err)
	}
	waitFor("the health change", has("changed", "db-1", "passing -> critical", "connection refused"))
	if code, _, errOut := cli(t, "deregister", api, "db-1"); code != 0 {
		t.Fatal(errOut)
	}
	waitFor("the removed instance", has("removed", "db-1", "10.0.0.7:5432"))

	// -o json: one object a line, for scripts.
	var js signposttest.Output
	jctx, jcancel := context.WithCancel(context.Background())
	jdone := make(chan error, 1)
	go func() { jdone <- commands["watch"].run(jctx, []string{api, "-o", "json", "old"}, &js) }()
	defer func() { jcancel(); <-jdone }()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(js.String(), "\n"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("watch -o json printed nothing in 20s")
		}
	}
	var c change
	if err := json.Unmarshal([]byte(strings.SplitN(js.String(), "\n", 2)[0]), &c); err != nil || c.Op != "present" || c.Instance.ID != "old-1" {
		t.Errorf("watch -o json first line: %+v %v", c, err)
	}
}

// TestAgentHealthz runs `signpost agent --metrics` with a Docker that does
// not answer: /healthz says so (503, naming the socket), and /metrics has
// signpost_build_info.
func TestAgentHealthz(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- commands["agent"].run(ctx, []string{"--metrics", addr, "--docker", "unix://" + sock, "--advertise-ip", "127.0.0.1",
			"--node", "healthz-test", "--server", "http://127.0.0.1:1", "--log-level", "error"}, io.Discard)
	}()
	defer func() { cancel(); <-done }()
	var body string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "unreachable") && strings.Contains(body, sock) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent /healthz: %q %v; want 503 saying Docker at %s is unreachable", body, err, sock)
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "signpost_build_info{") {
		t.Errorf("agent /metrics has no signpost_build_info")
	}
}

// TestWatchAcrossANewServer: the server behind the address is replaced
// by one on a fresh data dir, whose revisions start again below the
// watch's. The watch reconnects, reads the state again, and prints what
// went and what came.
func TestWatchAcrossANewServer(t *testing.T) {
	first := signposttest.Start(t, server.Config{})
	addr := first.HTTPAddr()
	api := "--server=" + first.URL()
	for i, id := range []string{"old-1", "old-2", "old-3"} {
		if code, _, errOut := cli(t, "register", api, "--service", "old", "--address", "10.0.0.1", "--port", strconv.Itoa(i+1), "--id", id); code != 0 {
			t.Fatal(errOut)
		}
	}
	out := startWatch(t, api)
	waitLines := func(what string, want ...string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			all := true
			for _, w := range want {
				all = all && strings.Contains(out.String(), w)
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("watch printed no lines for %s (%q) in 30s:\n%s", what, want, out.String())
			}
		}
	}
	waitLines("the first server's instances", "present  old  old-1", "present  old  old-3")
	first.Stop()
	second := signposttest.Start(t, server.Config{HTTPAddr: addr})
	if code, _, errOut := cli(t, "register", "--server="+second.URL(), "--service", "new", "--address", "10.0.0.2", "--port", "9", "--id", "new-1"); code != 0 {
		t.Fatal(errOut)
	}
	waitLines("the new server's state", "added    new  new-1  10.0.0.2:9",
		"removed  old  old-1", "removed  old  old-2", "removed  old  old-3")
}

// TestOneShotCommandsTimeOut: services, register and deregister against a
// server that accepts and never answers end after --timeout, saying so.
func TestOneShotCommandsTimeOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	api := "--server=http://" + l.Addr().String()
	for _, args := range [][]string{
		{"services", api, "--timeout", "300ms"},
		{"register", api, "--timeout", "300ms", "--service", "db", "--address", "10.0.0.1", "--port", "1"},
		{"deregister", api, "--timeout", "300ms", "db-1"},
	} {
		done := make(chan struct{})
		var code int
		var errOut string
		go func() {
			defer close(done)
			code, _, errOut = cli(t, args...)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%q still waiting after 30s", args)
		}
		if code != 1 || !strings.Contains(errOut, "deadline exceeded") {
			t.Errorf("%q: exit %d, %q; want exit 1 and the deadline named", args, code, errOut)
		}
	}
}
