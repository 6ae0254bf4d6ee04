// Package demo_test runs the one-command demo for real: it builds the
// images, starts the containers, uses the portal through a browser and
// DNS, and checks that `demo.sh down` leaves nothing behind.
package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"
)

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

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func demo(t *testing.T, env []string, verb string) {
	t.Helper()
	cmd := exec.Command("bash", "demo.sh", verb)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh %s: %v\n%s", verb, err, out)
	}
	t.Logf("demo.sh %s:\n%s", verb, out)
}

func srvPorts(t *testing.T, dnsAddr, name string) map[uint16]bool {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, dnsAddr)
	if err != nil {
		t.Fatalf("ask %s SRV: %v", name, err)
	}
	ports := map[uint16]bool{}
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			ports[s.Port] = true
		}
	}
	return ports
}

func TestDemo(t *testing.T) {
	requireDocker(t)
	dnsPort, apiPort, portalPort := freePort(t), freePort(t), freePort(t)
	env := []string{
		fmt.Sprintf("DEMO_DNS_PORT=%d", dnsPort),
		fmt.Sprintf("DEMO_API_PORT=%d", apiPort),
		fmt.Sprintf("DEMO_PORTAL_PORT=%d", portalPort),
		"DEMO_STATE=" + t.TempDir() + "/state",
	}
	t.Cleanup(func() { demo(t, env, "down") })
	demo(t, env, "up")

	portal := fmt.Sprintf("http://127.0.0.1:%d", portalPort)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort)

	// Two calc and two time instances, each with its own dynamic host port.
	for _, svc := range []string{"_calc._tcp", "_time._tcp"} {
		if p := srvPorts(t, dnsAddr, svc+".servicediscovery.internal."); len(p) != 2 {
			t.Fatalf("%s: want 2 instances with distinct ports, got %v", svc, p)
		}
	}
	// Over time, the portal's calls reach both calc containers.
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		resp, err := http.Get(portal + "/calc/" + "%282%2B6%29%2A3")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Value       float64 `json:"value"`
			ContainerID string  `json:"containerid"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.Value != 24 {
			t.Fatalf("portal /calc/(2+6)*3: %+v %v", body, err)
		}
		seen[body.ContainerID] = true
	}
	if len(seen) != 2 {
		t.Errorf("the portal reached only %v of the two calc containers", seen)
	}

	// The page, in a real browser.
	if chromium, err := exec.LookPath("chromium"); err == nil {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("headless", true))
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		defer cancelAlloc()
		ctx, cancel := chromedp.NewContext(allocCtx)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.Navigate(portal+"/")); err != nil {
			t.Fatalf("open the portal: %v", err)
		}
		step, cancelStep := context.WithTimeout(ctx, 60*time.Second)
		defer cancelStep()
		if err := chromedp.Do(step, chromedp.SetValue("#calc-formula", "(2+6)*3"), chromedp.Click("#calc-go"), chromedp.WaitVisible("#calc-who")); err != nil {
			t.Fatalf("calculate in the page: %v", err)
		}
		result, err := chromedp.Run(step, chromedp.Text("#calc-result"))
		if err != nil || !strings.Contains(result, "24") {
			t.Fatalf("page shows %q (%v), want 24", result, err)
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("chromium not installed, and CI=true")
	}

	// A stopped calc leaves DNS, and the portal keeps answering.
	before := srvPorts(t, dnsAddr, "_calc._tcp.servicediscovery.internal.")
	if out, err := exec.Command("docker", "stop", "-t", "1", "signpost-demo-calc-1").CombinedOutput(); err != nil {
		t.Fatalf("docker stop: %v %s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(srvPorts(t, dnsAddr, "_calc._tcp.servicediscovery.internal.")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stopped calc still in DNS: %v", before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		resp, err := http.Get(portal + "/calc/1%2B1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("portal with one calc down: %d %s", resp.StatusCode, b)
		}
	}

	// down removes everything up created.
	demo(t, env, "down")
	for _, args := range [][]string{
		{"ps", "-aq", "--filter", "label=signpost.demo=1"},
		{"network", "ls", "-q", "--filter", "label=signpost.demo=1"},
		{"images", "-q", "--filter", "label=signpost.demo=1"},
	} {
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("docker %v after down: %q %v", args, out, err)
		}
	}
}
