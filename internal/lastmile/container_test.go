package lastmile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/forward"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// dockerSession is this test's share of the Docker engine: everything it
// creates carries the label signpost.test.t=<id> and is removed at the end.
type dockerSession struct {
	t  *testing.T
	id string
}

func newDockerSession(t *testing.T) *dockerSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.APIVersion}}").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("NO DOCKER ENGINE ANSWERS (docker version: %v: %s): the container test did not run", err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI makes it required")
		}
		fmt.Fprintln(os.Stderr, "\n*** SKIPPED: "+msg+" ***")
		t.Skip(msg)
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	s := &dockerSession{t: t, id: "lastmile-" + hex.EncodeToString(b)}
	t.Cleanup(s.cleanup)
	return s
}

func (s *dockerSession) labels() []string {
	return []string{"--label", "signpost.test=1", "--label", "signpost.test.t=" + s.id}
}

// docker runs the docker CLI and returns its trimmed output.
func (s *dockerSession) docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func (s *dockerSession) must(args ...string) string {
	s.t.Helper()
	out, err := s.docker(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *dockerSession) cleanup() {
	filter := "label=signpost.test.t=" + s.id
	if ids, err := s.docker("ps", "-aq", "--filter", filter); err == nil && ids != "" {
		_, _ = s.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if ids, err := s.docker("network", "ls", "-q", "--filter", filter); err == nil && ids != "" {
		_, _ = s.docker(append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	_, _ = s.docker("image", "rm", "-f", s.image())
}

func (s *dockerSession) image() string { return "signpost-test-" + s.id + ":probe" }

// buildProbe builds testdata/probe, a program with no signpost code in
// it, into a FROM scratch image.
func (s *dockerSession) buildProbe() string {
	s.t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := s.t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "probe"), "./testdata/probe")
	cmd.Dir = filepath.Dir(file)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("build the probe: %v\n%s", err, out)
	}
	df := "FROM scratch\nLABEL signpost.test=1\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.must("build", "-q", "-t", s.image(), dir)
	return s.image()
}

// TestContainerResolvesThroughSystemResolver runs a container with no
// signpost code in it on a network whose embedded DNS forwards to
// signpost's resolver for containers (docker run --dns <gateway>): it
// resolves calc.servicediscovery.internal with Go's own resolver, reaches
// calc on its container port (the agent in container-address mode), and
// keeps doing so as instances come and go; a name outside the zone goes
// to the (fake, loopback) upstream.
func TestContainerResolvesThroughSystemResolver(t *testing.T) {
	s := newDockerSession(t)
	img := s.buildProbe()
	network := s.id
	s.must(append(append([]string{"network", "create"}, s.labels()...), network)...)
	gw := s.must("network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", network)
	if net.ParseIP(gw) == nil {
		t.Fatalf("network %s: gateway %q", network, gw)
	}

	up := startFakeUpstream(t)
	// Default allowed networks: loopback and the host's Docker bridges,
	// which now include the test's network.
	sp := signposttest.Start(t, server.Config{
		DNS:      dnsserver.Config{FailOpen: true},
		Resolver: forward.Config{Addr: net.JoinHostPort(gw, "53"), Upstreams: []string{up}},
	})
	api := sp.Client(t)
	be, err := serverbackend.New(api, s.id, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(agent.Config{
		Node:        s.id,
		AddressMode: agent.ModeContainer,
		Network:     network,
		Labels:      map[string]string{"signpost.test.t": s.id},
		MaxBackoff:  time.Second,
	}, be)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})

	calc := func() (id, ip string) {
		t.Helper()
		id = s.must(append(append([]string{"run", "-d", "--network", network, "-e", "SERVICE_8081_NAME=calc", "--expose", "8081"}, s.labels()...), img, "serve", "8081")...)
		ip = s.must("inspect", "--format", "{{(index .NetworkSettings.Networks \""+network+"\").IPAddress}}", id)
		return id, ip
	}
	// instances waits until signpost serves exactly ips for calc.
	instances := func(ips ...string) {
		t.Helper()
		slices.Sort(ips)
		waitFor(t, fmt.Sprintf("signpost serving calc at %v", ips), 60*time.Second, func() error {
			r, err := ask(sp.DNSAddr(), "tcp", "calc."+zone, dns.TypeA, 0)
			if err != nil {
				return err
			}
			got := addrsOf(r.Answer)
			slices.Sort(got)
			if !slices.Equal(got, ips) {
				return fmt.Errorf("serving %v", got)
			}
			return nil
		})
	}
	// probe runs a fresh plain container that looks name up with the
	// system resolver and GETs it on port (none: lookup only).
	probe := func(name string, port string) (string, error) {
		args := append([]string{"run", "--rm", "--network", network, "--dns", gw}, s.labels()...)
		args = append(args, img, "get", name)
		if port != "" {
			args = append(args, port)
		}
		return s.docker(args...)
	}
	// reaches waits until a probe finds exactly ips and gets an answer
	// from one of them.
	reaches := func(ips ...string) {
		t.Helper()
		slices.Sort(ips)
		want := "addresses: " + strings.Join(ips, " ")
		var out string
		waitFor(t, "a plain container reaching calc at "+strings.Join(ips, ","), 60*time.Second, func() error {
			var err error
			if out, err = probe("calc.servicediscovery.internal", "8081"); err != nil {
				return err
			}
			if !strings.Contains(out, want+"\n") || !strings.Contains(out, "body: hello from ") {
				return fmt.Errorf("probe printed %q, want %q and calc's answer", out, want)
			}
			return nil
		})
		t.Logf("probe: %s", strings.ReplaceAll(out, "\n", " | "))
	}

	id1, ip1 := calc()
	instances(ip1)
	reaches(ip1)

	_, ip2 := calc()
	instances(ip1, ip2)
	reaches(ip1, ip2)

	s.must("rm", "-f", id1)
	instances(ip2)
	reaches(ip2)

	// A name outside the zone goes to the upstream: the container needs
	// no other name server.
	out, err := probe("www.example.test", "")
	if err != nil || !strings.Contains(out, "addresses: 192.0.2.1") {
		t.Errorf("www.example.test from the container: %q %v, want the upstream's 192.0.2.1", out, err)
	}
	// A name that does not exist fails as it should.
	if out, err := probe("nothing.servicediscovery.internal", ""); err == nil || !strings.Contains(out, "no such host") {
		t.Errorf("nothing.servicediscovery.internal from the container: %q %v, want no such host", out, err)
	}
}

// startFakeUpstream runs a tiny upstream resolver on loopback standing in
// for the host's: www.example.test has the address 192.0.2.1, anything
// else is NXDOMAIN. Tests never use the real host resolver.
func startFakeUpstream(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		q := req.Question[0]
		switch {
		case strings.EqualFold(q.Name, "www.example.test.") && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		case strings.EqualFold(q.Name, "www.example.test."):
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return addr
}
