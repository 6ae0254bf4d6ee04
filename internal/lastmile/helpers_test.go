package lastmile

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

const zone = "servicediscovery.internal."

// ttl is the server's answer TTL in the tests: signpost's default.
const ttl = 5 * time.Second

// signpost is a real server on random loopback ports with an API client.
type signpost struct {
	*signposttest.Server
	api *apiclient.Client
}

func startSignpost(t *testing.T) *signpost {
	t.Helper()
	s := &signpost{Server: signposttest.Start(t, server.Config{DNS: dnsserver.Config{FailOpen: true, TTL: uint32(ttl / time.Second)}})}
	var err error
	if s.api, err = apiclient.New(s.URL(), ""); err != nil {
		t.Fatal(err)
	}
	return s
}

// register adds an instance of service and returns its id.
func (s *signpost) register(t *testing.T, service, id, addr string, port uint16) string {
	t.Helper()
	in := registry.Instance{ID: id, Service: service, Address: netip.MustParseAddr(addr), Port: port}
	if _, err := s.api.Register(context.Background(), in); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return id
}

func (s *signpost) deregister(t *testing.T, id string) {
	t.Helper()
	if _, err := s.api.Deregister(context.Background(), id); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

// instanceID is a realistic instance id: 28 characters, as the agent
// derives them from container ids.
func instanceID(service string, i int) string {
	return fmt.Sprintf("%s-%03d-5f2c1d9e8a7b6c5d4e3f2a1b", service, i)[:28]
}

// need returns the path of a program, skipping the test when it is
// missing, except in CI where .ci/run installs it.
func need(t *testing.T, prog string) string { t.Helper(); return signposttest.Need(t, prog) }

// docConfig returns docs/resolvers/<name> with each of the documented
// placeholders replaced (see signposttest.DocFile).
func docConfig(t *testing.T, name string, replace ...string) string {
	t.Helper()
	return signposttest.DocFile(t, "docs/resolvers/"+name, replace...)
}

// freePort returns a loopback port free for both UDP and TCP right now.
func freePort(t *testing.T) int { t.Helper(); return signposttest.FreePort(t) }

// run starts a program for the rest of the test (see signposttest.Run).
func run(t *testing.T, prog string, args ...string) *exec.Cmd {
	t.Helper()
	return signposttest.Run(t, prog, args...)
}

// ask sends one query over netw ("udp" or "tcp") with an EDNS0 size (0:
// none) and returns the answer.
func ask(addr, netw, name string, qtype uint16, edns uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second, UDPSize: edns}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s over %s at %s: %w", name, dns.TypeToString[qtype], netw, addr, err)
	}
	return r, nil
}

// resolve asks like a stub resolver: UDP, then TCP if truncated.
func resolve(addr, name string, qtype uint16) (*dns.Msg, error) {
	r, err := ask(addr, "udp", name, qtype, 1232)
	if err == nil && r.Truncated {
		r, err = ask(addr, "tcp", name, qtype, 1232)
	}
	return r, err
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// srvs returns the SRV records of an answer.
func srvs(m *dns.Msg) []*dns.SRV {
	var out []*dns.SRV
	for _, rr := range m.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, s)
		}
	}
	return out
}

// addrsOf returns the A records' addresses of an answer's section.
func addrsOf(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}
