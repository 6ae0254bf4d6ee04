package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/metricstest"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// fastChecks are the test agents' thresholds: a check every 300ms,
// critical after 3 failures, passing after 2 passes.
var fastChecks = health.Config{Interval: 300 * time.Millisecond, Timeout: 250 * time.Millisecond, Failures: 3, Passes: 2, StartPeriod: 2 * time.Second}

// failWithin is how long an instance may take to leave DNS once its
// /health fails: interval × failures, plus a generous margin for a loaded
// CI machine.
var failWithin = time.Duration(fastChecks.Failures)*fastChecks.Interval + 4*time.Second

// flip asks the test server in a container to fail ("fail") or pass
// ("recover") its /health, through its published port on loopback.
func flip(t *testing.T, hostPort uint16, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		// Docker's proxy accepts before the container's server listens
		// (a reset, then): asked again until it answers.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/%s", hostPort, what), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("GET /%s of the container at 127.0.0.1:%d: %v", what, hostPort, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSRVWithin is waitSRV with a shorter deadline, for what must happen
// within a few check intervals.
func (s *stack) waitSRVWithin(d time.Duration, name string, ports ...uint16) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		recs, _, err := lookup(s.srv.DNSAddr(), name)
		var got []uint16
		for _, r := range recs {
			got = append(got, r.Port)
		}
		if err == nil && fmt.Sprint(got) == fmt.Sprint(ports) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %s: SRV %s has ports %v (err %v), want %v", d, name, got, err, ports)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition wait
	}
}

// instanceHealth reads one instance's health from the API.
func (s *stack) instanceHealth(service, id string) (registry.Health, bool) {
	svc, err := s.client.Service(context.Background(), service, 0, 0)
	if err != nil {
		return registry.Health{}, false
	}
	for _, in := range svc.Instances {
		if in.ID == id {
			return in.Health, true
		}
	}
	return registry.Health{}, false
}

// waitHealth waits until the API shows the instance with status and an
// output containing out.
func (s *stack) waitHealth(service, id, status, out string) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("instance %s of %s should be %s with output %q", id, service, status, out), func() (bool, string) {
		h, ok := s.instanceHealth(service, id)
		return ok && h.Status == status && strings.Contains(h.Output, out), fmt.Sprintf("%+v (found %v)", h, ok)
	})
}

func sortedPorts(ps ...uint16) []uint16 {
	if len(ps) == 2 && ps[0] > ps[1] {
		ps[0], ps[1] = ps[1], ps[0]
	}
	return ps
}

// TestHealthFailLeavesDNSAndComesBack: an instance whose /health fails
// leaves DNS within interval × failures, shows critical with the HTTP
// status in the API, comes back after passing again; when every instance
// fails, DNS answers with all of them (fail open). The transitions are
// counted.
func TestHealthFailLeavesDNSAndComesBack(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(c *server.Config) { c.DNS.FailOpen = true })
	cfg := s.agentConfig("host-a")
	cfg.Health = fastChecks
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	s.addAgent(cfg)
	run := func() (string, uint16) {
		id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=flip", "-e", "SERVICE_8081_CHECK_HTTP=/health")
		return id, hostPort(t, id, "8081/tcp")
	}
	a, pa := run()
	b, pb := run()
	s.waitSRV("flip", sortedPorts(pa, pb)...)
	ida := agent.InstanceID("host-a", a, 8081, "tcp")
	s.waitHealth("flip", ida, registry.HealthPassing, "HTTP 200")

	flip(t, pa, "fail")
	s.waitSRVWithin(failWithin, "flip", pb)
	s.waitHealth("flip", ida, registry.HealthCritical, "HTTP 503")
	s.waitLog("health transition", "to=critical", ida)

	flip(t, pa, "recover")
	s.waitSRVWithin(time.Duration(fastChecks.Passes)*fastChecks.Interval+4*time.Second, "flip", sortedPorts(pa, pb)...)
	s.waitLog("health transition", "from=critical", "to=passing", ida)

	// Every instance failing: fail open, both are answered.
	flip(t, pa, "fail")
	flip(t, pb, "fail")
	s.waitHealth("flip", ida, registry.HealthCritical, "HTTP 503")
	s.waitHealth("flip", agent.InstanceID("host-a", b, 8081, "tcp"), registry.HealthCritical, "HTTP 503")
	s.waitSRV("flip", sortedPorts(pa, pb)...)

	if got := metricstest.Counter(t, reg, "signpost_health_transitions_total", "from", "passing", "to", "critical"); got < 3 {
		t.Errorf("signpost_health_transitions_total{from=passing,to=critical} = %v, want at least 3", got)
	}
	if got := metricstest.Counter(t, reg, "signpost_health_checks_total", "kind", "http", "result", "fail"); got < 9 {
		t.Errorf("signpost_health_checks_total{kind=http,result=fail} = %v, want at least 9", got)
	}
}

// TestHealthPendingUntilFirstPass: an instance with a check is registered
// pending and is not in DNS until its check passes; bad check settings are
// warned about, naming the container and the variable, and the defaults
// used.
func TestHealthPendingUntilFirstPass(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := s.agentConfig("host-a")
	cfg.Health = fastChecks
	cfg.Health.StartPeriod = time.Minute // stays pending, never critical, during the test
	s.addAgent(cfg)
	name := "pending-" + s.sess.ID
	id := s.sess.Run("--name", name, "-p", "8081", "-e", "PORTS=8081", "-e", "HEALTH=fail", "-e", "SERVICE_8081_NAME=late",
		"-e", "SERVICE_8081_CHECK_HTTP=health", "-e", "SERVICE_8081_CHECK_INTERVAL=abc")
	hp := hostPort(t, id, "8081/tcp")
	iid := agent.InstanceID("host-a", id, 8081, "tcp")
	// The API says why it is pending: the first check's output (a reset
	// while the server starts, or the 503).
	waitFor(t, "the pending instance should show its first check's output", func() (bool, string) {
		h, ok := s.instanceHealth("late", iid)
		return ok && h.Status == registry.HealthPending && h.Output != "" && !h.CheckedAt.IsZero(), fmt.Sprintf("%+v", h)
	})
	s.waitLog("bad health-check setting", "container="+name, "variable=SERVICE_8081_CHECK_HTTP")
	s.waitLog("bad health-check setting", "container="+name, "variable=SERVICE_8081_CHECK_INTERVAL")
	if recs, _, err := lookup(s.srv.DNSAddr(), "late"); err != nil || len(recs) != 0 {
		t.Fatalf("a pending instance is in DNS: %v %v", recs, err)
	}
	flip(t, hp, "recover")
	s.waitSRV("late", hp)
	s.waitHealth("late", iid, registry.HealthPassing, "HTTP 200")
	// A container without a check setting gets the agent's default (tcp).
	other := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=plain")
	s.waitSRV("plain", hostPort(t, other, "8081/tcp"))
	s.waitHealth("plain", agent.InstanceID("host-a", other, 8081, "tcp"), registry.HealthPassing, "tcp connect")
}

// TestStopUnhealthy: with StopUnhealthy, a container whose check fails
// Failures times in a row is stopped, and the reason is logged.
func TestStopUnhealthy(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	cfg := s.agentConfig("host-a")
	cfg.Health = fastChecks
	cfg.StopUnhealthy = true
	s.addAgent(cfg)
	keep := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=doomed", "-e", "SERVICE_8081_CHECK_HTTP=/health")
	id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=doomed", "-e", "SERVICE_8081_CHECK_HTTP=/health")
	hp := hostPort(t, id, "8081/tcp")
	s.waitSRV("doomed", sortedPorts(hostPort(t, keep, "8081/tcp"), hp)...)
	flip(t, hp, "fail")
	waitFor(t, "the failing container should be stopped", func() (bool, string) {
		st := dockertest.Docker(t, "inspect", "--format", "{{.State.Status}}", id)
		return st == "exited", st
	})
	s.waitLog("stopped unhealthy container", "id="+id[:12], "failed its check 3 times in a row", "HTTP 503")
	s.waitSRV("doomed", hostPort(t, keep, "8081/tcp"))
	if st := dockertest.Docker(t, "inspect", "--format", "{{.State.Status}}", keep); st != "running" {
		t.Errorf("the healthy container is %s, want running", st)
	}
}

// TestDockerHealthcheck: a container's own HEALTHCHECK is followed: one
// that starts unhealthy is critical (out of DNS) with Docker's output,
// healthy brings it in, unhealthy takes it out again.
func TestDockerHealthcheck(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := dockertest.HealthImage(t)
	cfg := s.agentConfig("host-a")
	cfg.Health = fastChecks
	s.addAgent(cfg)
	id := s.sess.RunImage(img, "-p", "8081", "-e", "PORTS=8081", "-e", "HEALTH=fail", "-e", "SERVICE_8081_NAME=docked", "-e", "SERVICE_8081_CHECK=none")
	hp := hostPort(t, id, "8081/tcp")
	iid := agent.InstanceID("host-a", id, 8081, "tcp")
	s.waitHealth("docked", iid, registry.HealthCritical, "docker HEALTHCHECK unhealthy")
	if recs, _, _ := lookup(s.srv.DNSAddr(), "docked"); len(recs) != 0 {
		t.Fatalf("an unhealthy container is in DNS: %v", recs)
	}
	flip(t, hp, "recover")
	s.waitSRV("docked", hp)
	s.waitLog("docker health transition", "docker_health=healthy")
	flip(t, hp, "fail")
	s.waitSRV("docked")
	s.waitHealth("docked", iid, registry.HealthCritical, "503")
}

// TestAgentSIGKILLLeaseExpiry: a SIGKILLed agent's instances leave DNS
// and the API once its lease runs out.
func TestAgentSIGKILLLeaseExpiry(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	bin := signposttest.Binary(t)
	const node = "host-dead"
	cmd := exec.Command(bin, "agent", "--server", s.srv.URL(), "--node", node, "--advertise-ip", "127.0.0.1",
		"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--lease-ttl", "3s")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=orphan")
	s.waitSRV("orphan", hostPort(t, id, "8081/tcp"))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	s.waitSRV("orphan")
	waitFor(t, "the dead node's instances should leave the API", func() (bool, string) {
		list, _, err := s.client.Instances(context.Background(), node)
		return err == nil && len(list) == 0, fmt.Sprintf("%d instances, err %v", len(list), err)
	})
	if st := dockertest.Docker(t, "inspect", "--format", "{{.State.Status}}", id); st != "running" {
		t.Errorf("the container is %s; only its agent died", st)
	}
}
