package agent_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/agent/internal/podmantest"
)

// podmanStack is a stack whose agent follows a Podman service of the
// test's own instead of Docker.
type podmanStack struct {
	*stack
	pm *podmantest.Service
}

func newPodmanStack(t *testing.T) *podmanStack {
	t.Helper()
	pm := podmantest.Start(t)
	pm.Image()
	return &podmanStack{stack: startStack(t, nil), pm: pm}
}

// agentConfig follows the Podman service, and only this test's
// containers: by a bare label key, which Podman's event filter cannot
// match (containers/podman#26702), and by a key and value.
func (s *podmanStack) agentConfig(node string) agent.Config {
	return agent.Config{
		Node:        node,
		Docker:      s.pm.Host(),
		AdvertiseIP: "127.0.0.1",
		LeaseTTL:    10 * time.Second,
		MaxBackoff:  time.Second,
		Labels:      map[string]string{dockertest.Label: "", dockertest.TestLabel: s.pm.ID},
		Log:         slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_agent", node),
	}
}

// port is the host port Podman published for a container port ("8081/tcp").
func (s *podmanStack) port(id, port string) uint16 {
	s.t.Helper()
	out := s.pm.Podman("port", id, port)
	_, p, ok := strings.Cut(strings.TrimSpace(out), ":")
	var n uint16
	if _, err := fmt.Sscan(p, &n); !ok || err != nil {
		s.t.Fatalf("podman port %s %s: no host port in %q", id, port, out)
	}
	return n
}

// timeSRV waits until name's SRV ports are exactly ports and returns how
// long that took.
func (s *podmanStack) timeSRV(name string, ports ...uint16) time.Duration {
	s.t.Helper()
	start := time.Now()
	s.waitSRV(name, ports...)
	return time.Since(start)
}

// TestAgentOnPodman runs the real agent against Podman's Docker-compatible
// API (podman system service; Debian's podman 4.3.1 in CI): a container
// running before the agent is found by the first list, one started after
// by its start event, both with the host ports Podman published; a
// SIGHUP (Podman's kill event names no signal) leaves a container
// served; a failing /health takes one out of DNS and a recovered one
// brings it back; a HEALTHCHECK that Podman reports unhealthy (its
// health_status event carries no status) takes one out too; stop, kill
// and remove take them out (die events, found by asking for "died").
func TestAgentOnPodman(t *testing.T) {
	s := newPodmanStack(t)

	fixed := freePort(t)
	a := s.pm.Run("--name", "pm-a-"+s.pm.ID, "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=calc", "-e", "CALC_PASSWORD=hunter2",
		"-p", fmt.Sprintf("127.0.0.1:%d:8081", fixed))
	s.addAgent(s.agentConfig("podman-node"))
	s.waitLog("connected to Docker", "api_version=")
	recs := s.waitSRV("calc", fixed)
	if recs[0].Addr != "127.0.0.1" {
		t.Errorf("calc: address %q, want the advertised 127.0.0.1", recs[0].Addr)
	}

	start := time.Now()
	b := s.pm.Run("--name", "pm-b-"+s.pm.ID, "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=calc", "-e", "SERVICE_8081_CHECK_HTTP=/health",
		"-p", "127.0.0.1::8081")
	pb := s.port(b, "8081/tcp")
	s.waitSRV("calc", fixed, pb)
	t.Logf("podman: start to DNS %s (podman run included)", time.Since(start).Round(time.Millisecond))

	// A reload signal: Podman's kill event carries no signal name, and the
	// container keeps serving. The next container's start is the barrier:
	// events are handled in order.
	s.pm.Podman("kill", "--signal", "HUP", b)
	c := s.pm.Run("--name", "pm-c-"+s.pm.ID, "-e", "PORTS=8082", "-e", "SERVICE_8082_NAME=web",
		"--health-cmd", `["/web", "-healthcheck"]`, "--health-interval", "1h", "--health-retries", "1",
		"-p", "127.0.0.1::8082")
	pc := s.port(c, "8082/tcp")
	s.waitSRV("web", pc)
	s.waitSRV("calc", fixed, pb)

	// signpost's own check: /health failing takes b out, recovering brings it back.
	getPath(t, pb, "/fail")
	t.Logf("podman: failing /health out of DNS in %s", s.timeSRV("calc", fixed).Round(time.Millisecond))
	getPath(t, pb, "/recover")
	s.waitSRV("calc", fixed, pb)

	// The container's HEALTHCHECK: Podman runs none without systemd, so
	// the test runs it; each run sends a health_status event without the
	// status.
	getPath(t, pc, "/fail")
	if s.pm.HealthcheckRun(c) {
		t.Fatal("podman healthcheck run passed on a failing container")
	}
	t.Logf("podman: HEALTHCHECK unhealthy out of DNS in %s", s.timeSRV("web").Round(time.Millisecond))
	s.waitLog("docker health transition", "docker_health=unhealthy")
	getPath(t, pc, "/recover")
	if !s.pm.HealthcheckRun(c) {
		t.Fatal("podman healthcheck run failed on a recovered container")
	}
	s.waitSRV("web", pc)
	if !s.pm.HealthcheckRun(c) { // the same status again: nothing to write
		t.Fatal("podman healthcheck run failed on a recovered container")
	}
	s.waitLog("health_status event without a change")

	start = time.Now()
	s.pm.Podman("stop", "-t", "5", b)
	s.waitSRV("calc", fixed)
	t.Logf("podman: stop to out of DNS %s (podman stop included)", time.Since(start).Round(time.Millisecond))
	s.waitLog("instance deregistered", "container=pm-b-"+s.pm.ID, `why="event `)

	s.pm.Podman("start", b) // same container, new host port
	pb = s.port(b, "8081/tcp")
	s.waitSRV("calc", fixed, pb)

	s.pm.Podman("kill", a)
	s.waitSRV("calc", pb)
	s.pm.Podman("rm", "-f", "-t", "0", b)
	s.waitSRV("calc")
	s.pm.Podman("rm", "-f", "-t", "0", c)
	s.waitSRV("web")

	if strings.Contains(s.log.String(), "hunter2") {
		t.Error("a container's other environment variable reached the logs")
	}
	if strings.Contains(s.log.String(), "lost Docker") {
		t.Error("the agent lost the Podman event stream")
	}
}
