package agent_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/network"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/dockerfake"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// These tests run the real agent (its engine: the moby client with API
// version negotiation) against a fake Docker engine of each API version,
// and a real signpost server: no Docker needed.

// fakeLabel is the label the test agent follows.
const fakeLabel = "signpost.test"

// fakeStack is one test's fake engine, signpost server and agent log.
type fakeStack struct {
	t      *testing.T
	engine *dockerfake.Server
	srv    *server.Server
	log    *syncBuf
}

func newFakeStack(t *testing.T, apiVersion string) *fakeStack {
	t.Helper()
	return newFakeEngineStack(t, dockerfake.Config{APIVersion: apiVersion})
}

// newFakeEngineStack is newFakeStack with the fake engine's configuration.
func newFakeEngineStack(t *testing.T, cfg dockerfake.Config) *fakeStack {
	t.Helper()
	logs := &syncBuf{}
	cfg.Log = slog.New(slog.NewTextHandler(logs, nil)).With("dockerfake", cfg.APIVersion)
	engine, err := dockerfake.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := engine.Close(); err != nil {
			t.Errorf("close the fake engine: %v", err)
		}
	})
	srv := signposttest.Start(t, server.Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}).Server
	s := &fakeStack{t: t, engine: engine, srv: srv, log: logs}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s\nrequests: %v", logs.String(), engine.Requests())
		}
	})
	return s
}

// fakeKey is a second label of the fake's containers, which the agent of
// TestAgentOnPodmanEvents follows by its key alone.
const fakeKey = "signpost.fake"

// runAgent runs the production agent against the fake engine until the
// test ends, and returns it; opts edit its configuration.
func (s *fakeStack) runAgent(node string, opts ...func(*agent.Config)) *agent.Agent {
	s.t.Helper()
	c, err := apiclient.New(s.srv.URL(), "")
	if err != nil {
		s.t.Fatal(err)
	}
	cfg := agent.Config{
		Node:        node,
		Docker:      s.engine.Addr(),
		AdvertiseIP: "127.0.0.1",
		LeaseTTL:    10 * time.Second,
		MaxBackoff:  time.Second,
		Labels:      map[string]string{fakeLabel: s.t.Name()},
		Log:         slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_agent", node),
	}
	for _, o := range opts {
		o(&cfg)
	}
	be, err := serverbackend.New(c, cfg.Node, cfg.LeaseTTL)
	if err != nil {
		s.t.Fatal(err)
	}
	a, err := agent.New(cfg, be)
	if err != nil {
		s.t.Fatal(err)
	}
	runUntilCleanup(s.t, a, node)
	return a
}

// listener is a TCP service on a loopback port that accepts and holds
// connections, so that the agent's connect check passes.
func listener(t *testing.T) uint16 { return listenerOn(t, "127.0.0.1") }

// listenerOn is listener on another address (any of 127.0.0.0/8).
func listenerOn(t *testing.T, ip string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// startWeb starts a container that publishes 8080/tcp as service "web"
// on hostPort, with a Docker HEALTHCHECK in status health ("" for none).
func (s *fakeStack) startWeb(name string, hostPort uint16, health string) string {
	s.t.Helper()
	id, err := s.engine.Start(dockerfake.Container{
		Name:     name,
		Labels:   map[string]string{fakeLabel: s.t.Name(), fakeKey: "1"},
		Env:      []string{"SERVICE_8080_NAME=web", "WEB_PASSWORD=hunter2"},
		Ports:    []string{"8080/tcp"},
		Bindings: network.PortMap{network.MustParsePort("8080/tcp"): {{HostIP: netip.IPv4Unspecified(), HostPort: fmt.Sprint(hostPort)}}},
		Networks: map[string]netip.Addr{"bridge": netip.MustParseAddr("172.17.0.9")},
		Health:   health,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return id
}

// waitSRV waits until name's SRV ports are exactly ports.
func (s *fakeStack) waitSRV(name string, ports ...uint16) {
	s.t.Helper()
	want := slices.Clone(ports)
	slices.Sort(want)
	waitFor(s.t, fmt.Sprintf("SRV %s should have ports %v", name, want), func() (bool, string) {
		recs, rcode, err := lookup(s.srv.DNSAddr(), name)
		if err != nil {
			return false, err.Error()
		}
		var ps []uint16
		for _, r := range recs {
			ps = append(ps, r.Port)
		}
		return slices.Equal(ps, want), fmt.Sprintf("rcode %s, %v", dns.RcodeToString[rcode], recs)
	})
}

// waitLog waits until the log has a line with every one of parts.
func (s *fakeStack) waitLog(parts ...string) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("a log line with %q", parts), func() (bool, string) {
		for line := range strings.SplitSeq(s.log.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true, ""
			}
		}
		return false, "not yet"
	})
}

// wantVersionedRequests fails the test unless every request the agent
// made beyond /_ping carried version v, and the fake served them all.
func (s *fakeStack) wantVersionedRequests(v string) {
	s.t.Helper()
	for k := range s.engine.Requests() {
		_, p, _ := strings.Cut(k, " ")
		if p != "/_ping" && !strings.HasPrefix(p, "/v"+v+"/") {
			s.t.Errorf("request %q: want API version %s", k, v)
		}
	}
	if u := s.engine.Unhandled(); len(u) > 0 {
		s.t.Errorf("the agent asked what the fake does not serve: %v", u)
	}
}

// TestAgentOnEngineVersions: on Docker 20.10 (API 1.41, events with the
// legacy status/id/from) and Docker 29 (API 1.52, without them, nothing
// below 1.44 served), the agent negotiates the engine's version, registers
// a labelled container, takes out one whose HEALTHCHECK turns unhealthy
// and brings it back when healthy, and deregisters stopped and removed
// ones.
func TestAgentOnEngineVersions(t *testing.T) {
	for _, v := range []string{"1.41", "1.52"} {
		t.Run(v, func(t *testing.T) {
			s := newFakeStack(t, v)
			p1, p2 := listener(t), listener(t)
			a := s.startWeb("web-a", p1, "") // before the agent: the first list finds it
			s.runAgent("node-" + v)
			s.waitLog("connected to Docker", "api_version="+`"`+v+" (engine "+v+`)"`)
			s.waitSRV("web", p1)

			b := s.startWeb("web-b", p2, "healthy") // after: the start event brings it
			s.waitSRV("web", p1, p2)
			if err := s.engine.SetHealth(b, "unhealthy", "curl: (7) connection refused"); err != nil {
				t.Fatal(err)
			}
			s.waitSRV("web", p1)
			if err := s.engine.SetHealth(b, "healthy", "ok"); err != nil {
				t.Fatal(err)
			}
			s.waitSRV("web", p1, p2)

			if err := s.engine.Stop(a); err != nil {
				t.Fatal(err)
			}
			s.waitSRV("web", p2)
			if err := s.engine.Remove(b); err != nil {
				t.Fatal(err)
			}
			s.waitSRV("web")
			s.wantVersionedRequests(v)
			if strings.Contains(s.log.String(), "hunter2") {
				t.Error("a container's other environment variable reached the logs")
			}
		})
	}
}

// TestAgentOnPodmanEvents: on an engine whose events are Podman 4.3's
// (dockerfake's Podman flavour; TestAgentOnPodman runs the real one), the
// agent follows containers by a bare label key, which Podman's event
// filter cannot match; asks for died, the only name Podman's filter
// matches die events by; keeps a container that got a signal Podman does
// not name; takes out and brings back one whose HEALTHCHECK turns
// unhealthy and healthy though the events name no status and come before
// the result; and deregisters on Podman's stop (die alone) and remove.
func TestAgentOnPodmanEvents(t *testing.T) {
	s := newFakeEngineStack(t, dockerfake.Config{APIVersion: "1.41", Podman: true})
	p1, p2, p3 := listener(t), listener(t), listener(t)
	a := s.startWeb("web-a", p1, "")
	s.runAgent("node-podman", func(c *agent.Config) { c.Labels[fakeKey] = "" })
	s.waitSRV("web", p1)
	b := s.startWeb("web-b", p2, "healthy")
	s.waitSRV("web", p1, p2)

	if err := s.engine.Signal(b, "HUP"); err != nil {
		t.Fatal(err)
	}
	c := s.startWeb("web-c", p3, "") // events come in order: c's start is the barrier
	s.waitSRV("web", p1, p2, p3)

	if err := s.engine.SetHealth(b, "unhealthy", "curl: (7) connection refused"); err != nil {
		t.Fatal(err)
	}
	s.waitSRV("web", p1, p3)
	s.waitLog("health_status result recorded after the event", "docker_health=unhealthy")
	if err := s.engine.SetHealth(b, "healthy", "ok"); err != nil {
		t.Fatal(err)
	}
	s.waitSRV("web", p1, p2, p3)
	if err := s.engine.SetHealth(b, "healthy", "ok"); err != nil {
		t.Fatal(err)
	}
	s.waitLog("health_status event without a change")

	if err := s.engine.Stop(a); err != nil {
		t.Fatal(err)
	}
	s.waitSRV("web", p2, p3)
	if err := s.engine.Remove(b); err != nil {
		t.Fatal(err)
	}
	s.waitSRV("web", p3)
	if err := s.engine.Remove(c); err != nil {
		t.Fatal(err)
	}
	s.waitSRV("web")
	s.wantVersionedRequests("1.41")
}
