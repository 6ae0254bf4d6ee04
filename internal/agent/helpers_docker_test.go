package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

const zone = "servicediscovery.internal."

// waitTimeout bounds every wait for a condition.
const waitTimeout = 30 * time.Second

// syncBuf is a log sink tests can read while agents write.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stack is one test's signpost server, its agents and its Docker session.
type stack struct {
	t      *testing.T
	srv    *server.Server
	client *apiclient.Client
	sess   *dockertest.Session
	log    *syncBuf
}

// newStack starts a server; agents are added with addAgent.
// opts edit the server's configuration (fail-open, say).
func newStack(t *testing.T, opts ...func(*server.Config)) *stack {
	t.Helper()
	sess := dockertest.New(t)
	dockertest.Image(t)
	return startStack(t, sess, opts...)
}

// startStack starts the server of a stack whose agents follow the engine
// of sess (nil: an engine the caller runs, Podman say).
func startStack(t *testing.T, sess *dockertest.Session, opts ...func(*server.Config)) *stack {
	t.Helper()
	logs := &syncBuf{}
	scfg := server.Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, o := range opts {
		o(&scfg)
	}
	srv := signposttest.Start(t, scfg).Server
	c, err := apiclient.New(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, srv: srv, client: c, sess: sess, log: logs}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return s
}

// agentConfig is the configuration of a test agent: loopback address,
// only this test's containers.
func (s *stack) agentConfig(node string) agent.Config {
	return agent.Config{
		Node:        node,
		AdvertiseIP: "127.0.0.1",
		LeaseTTL:    10 * time.Second,
		MaxBackoff:  time.Second,
		Labels:      map[string]string{dockertest.TestLabel: s.sess.ID},
		Log:         slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_agent", node),
	}
}

// addAgent runs an agent in-process until the test ends.
func (s *stack) addAgent(cfg agent.Config) {
	s.t.Helper()
	be, err := serverbackend.New(s.client, cfg.Node, cfg.LeaseTTL)
	if err != nil {
		s.t.Fatal(err)
	}
	a, err := agent.New(cfg, be)
	if err != nil {
		s.t.Fatal(err)
	}
	runUntilCleanup(s.t, a, cfg.Node)
}

// runUntilCleanup runs an agent until the test ends, and fails the test
// if Run returns an error.
func runUntilCleanup(t testing.TB, a *agent.Agent, node string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", node, err)
		}
	})
}

// wantRunning fails the test unless Docker runs exactly the test's
// containers ids: what the test assumed of Docker held.
func wantRunning(t testing.TB, sess *dockertest.Session, ids ...string) {
	t.Helper()
	running := sess.Running()
	slices.Sort(running)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(running, want) {
		t.Fatalf("docker runs %v, the test expected %v", running, want)
	}
}

// benchSize skips the test unless SIGNPOST_BENCH=1 (what names the
// benchmark in the message), and returns the positive integer in the
// environment variable env, or def.
func benchSize(t testing.TB, what, env string, def int) int {
	t.Helper()
	if os.Getenv("SIGNPOST_BENCH") != "1" {
		t.Skip("set SIGNPOST_BENCH=1 to run the " + what)
	}
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil && v > 0 {
		return v
	}
	return def
}

// srv is one SRV record of an answer, with its glue.
type srv struct {
	Target string
	Port   uint16
	Addr   string
}

func (r srv) String() string { return fmt.Sprintf("%s:%d(%s)", r.Target, r.Port, r.Addr) }

// lookup asks the signpost DNS server for name's SRV records, over TCP so
// that large answers come whole.
func lookup(dnsAddr, name string) ([]srv, int, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name)+zone, dns.TypeSRV)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, dnsAddr)
	if err != nil {
		return nil, 0, err
	}
	glue := map[string]string{}
	for _, rr := range r.Extra {
		if a, ok := rr.(*dns.A); ok {
			glue[a.Hdr.Name] = a.A.String()
		}
	}
	var out []srv
	for _, rr := range r.Answer {
		if v, ok := rr.(*dns.SRV); ok {
			out = append(out, srv{Target: v.Target, Port: v.Port, Addr: glue[v.Target]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, r.Rcode, nil
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s; last seen: %s", waitTimeout, what, last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition wait
	}
}

// waitSRV waits until name's SRV ports are exactly ports (none: NXDOMAIN
// or an empty answer).
func (s *stack) waitSRV(name string, ports ...uint16) []srv {
	s.t.Helper()
	want := slices.Clone(ports)
	slices.Sort(want)
	var got []srv
	waitFor(s.t, fmt.Sprintf("SRV %s should have ports %v", name, want), func() (bool, string) {
		recs, rcode, err := lookup(s.srv.DNSAddr(), name)
		if err != nil {
			return false, err.Error()
		}
		var ps []uint16
		for _, r := range recs {
			ps = append(ps, r.Port)
		}
		got = recs
		return slices.Equal(ps, want), fmt.Sprintf("rcode %s, %v", dns.RcodeToString[rcode], recs)
	})
	return got
}

// hostPort is the host port Docker published for a container port ("8081/tcp").
func hostPort(t testing.TB, id, port string) uint16 {
	t.Helper()
	out := dockertest.Docker(t, "port", id, port)
	for _, line := range strings.Split(out, "\n") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(line))
		if err == nil {
			return ap.Port()
		}
	}
	t.Fatalf("docker port %s %s: no host port in %q", id, port, out)
	return 0
}

// waitLog waits until the agents' log has a line with every one of parts.
func (s *stack) waitLog(parts ...string) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("a log line with %q", parts), func() (bool, string) {
		for _, line := range strings.Split(s.log.String(), "\n") {
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

// freePort finds a loopback tcp port nobody listens on.
func freePort(t testing.TB) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, _ := strconv.Atoi(strings.TrimPrefix(l.Addr().String(), "127.0.0.1:"))
	return uint16(p)
}
