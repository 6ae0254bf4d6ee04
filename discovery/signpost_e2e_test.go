package discovery_test

// End-to-end tests of the discovery client against a real signpost server
// (DNS and HTTP API on random loopback ports, embedded store), registering
// instances through the API as an agent would.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/discovery"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

const e2eZone = "servicediscovery.internal"

// signpost is a running signpost server and an API client for it.
type signpost struct {
	srv    *server.Server
	client *apiclient.Client
}

// startSignpost starts a server whose DNS answers carry ttl (the server's
// --ttl and --negative-ttl).
func startSignpost(t *testing.T, ttl time.Duration) *signpost {
	t.Helper()
	secs := uint32(ttl / time.Second)
	srv := signposttest.Start(t, server.Config{DNS: dnsserver.Config{TTL: secs, NegTTL: secs}}).Server
	client, err := apiclient.New(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	return &signpost{srv: srv, client: client}
}

func (s *signpost) resolver() *discovery.Resolver {
	return &discovery.Resolver{Server: s.srv.DNSAddr(), Zone: e2eZone}
}

func (s *signpost) register(t *testing.T, id, service string, port, weight, priority uint16) {
	t.Helper()
	in := registry.Instance{
		ID: id, Service: service, Address: netip.MustParseAddr("127.0.0.1"),
		Port: port, Weight: weight, Priority: priority,
	}
	if _, err := s.client.Register(context.Background(), in); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func (s *signpost) deregister(t *testing.T, id string) {
	t.Helper()
	if _, err := s.client.Deregister(context.Background(), id); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

// dnsQueries is how many DNS queries the server has answered.
func (s *signpost) dnsQueries(t *testing.T) float64 {
	t.Helper()
	families, err := s.srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() == "signpost_dns_queries_total" {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// waitInstances waits until a fresh lookup of service finds n instances.
func waitInstances(t *testing.T, r *discovery.Resolver, service string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r.Forget(service)
		got, err := r.Lookup(context.Background(), service)
		if err == nil && len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d instances in DNS, have %v (%v)", service, n, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoServer listens on loopback and answers each connection with its name.
// It counts the connections it accepted.
type echoServer struct {
	name string
	ln   net.Listener
	hits atomic.Int64
}

func startEcho(t *testing.T, name string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{name: name, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go e.serve()
	return e
}

// serve answers until the listener is closed.
func (e *echoServer) serve() {
	for conn, err := e.ln.Accept(); err == nil; conn, err = e.ln.Accept() {
		e.hits.Add(1)
		io.WriteString(conn, e.name+"\n")
		conn.Close()
	}
}

func (e *echoServer) port() uint16 { return uint16(e.ln.Addr().(*net.TCPAddr).Port) }

func (e *echoServer) count() int { return int(e.hits.Load()) }

// refusingPort returns a loopback port on which nothing listens.
func refusingPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return port
}

// dialName dials service and returns the name the instance reached says.
func dialName(ctx context.Context, r *discovery.Resolver, service string) (string, error) {
	conn, err := r.Dial(ctx, "tcp", service)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestSignpostWeights: connections made with Dial reach the instances of
// the lowest priority in proportion to their registered weights, and never
// an instance of a higher priority while those are up.
func TestSignpostWeights(t *testing.T) {
	sp := startSignpost(t, 5*time.Second)
	weights := map[string]uint16{"light": 1, "middle": 3, "heavy": 6}
	echoes := map[string]*echoServer{}
	for name, w := range weights {
		echoes[name] = startEcho(t, name)
		sp.register(t, "weighted-"+name, "weighted", echoes[name].port(), w, 1)
	}
	backup := startEcho(t, "backup")
	sp.register(t, "weighted-backup", "weighted", backup.port(), 100, 2)

	r := sp.resolver()
	waitInstances(t, r, "weighted", 4)
	const dials = 3000
	ctx := context.Background()
	for i := 0; i < dials; i++ {
		if _, err := dialName(ctx, r, "_weighted._tcp"); err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	if n := backup.count(); n != 0 {
		t.Errorf("the priority-2 instance got %d connections while every priority-1 instance was up, want 0", n)
	}
	for name, w := range weights {
		got := float64(echoes[name].count()) / dials
		want := float64(w) / 10
		// 3000 draws: the standard deviation of a share is at most 0.009.
		if got < want-0.04 || got > want+0.04 {
			t.Errorf("instance %q of weight %d got %.3f of the connections, want %.2f ± 0.04", name, w, got, want)
		}
	}
}

// TestSignpostTTLCaching: with the server's TTL at 1s, answers are cached
// for 1s: lookups within it do not reach the server, and a change in the
// registry (a new instance, then every instance gone) is seen only once the
// TTL has run out, and soon after.
func TestSignpostTTLCaching(t *testing.T) {
	const ttl = time.Second
	sp := startSignpost(t, ttl)
	sp.register(t, "cached-1", "cached", 10001, 1, 1)
	r := sp.resolver()
	waitInstances(t, r, "_cached._tcp", 1)
	r.Forget("_cached._tcp")

	ctx := context.Background()
	before := sp.dnsQueries(t)
	start := time.Now()
	if got, err := r.Lookup(ctx, "_cached._tcp"); err != nil || len(got) != 1 {
		t.Fatalf("first lookup: %v %v, want one instance", got, err)
	}
	for i := 0; i < 100; i++ {
		if _, err := r.Lookup(ctx, "_cached._tcp"); err != nil {
			t.Fatal(err)
		}
	}
	if time.Since(start) < ttl/2 {
		if q := sp.dnsQueries(t) - before; q != 1 {
			t.Errorf("101 lookups within the TTL sent %v DNS queries, want 1", q)
		}
	} else {
		t.Logf("the lookups took %v, too long to count queries within the TTL", time.Since(start))
	}

	// A second instance: the client sees it only after the TTL.
	sp.register(t, "cached-2", "cached", 10002, 1, 1)
	seen := waitChange(t, r, "_cached._tcp", func(in []discovery.Instance, err error) bool { return len(in) == 2 })
	if elapsed := seen.Sub(start); elapsed < ttl || elapsed > ttl+2*time.Second {
		t.Errorf("the new instance was seen %v after the first lookup, want after the TTL (%v) and within 2s of it", elapsed, ttl)
	}

	// Every instance gone: the cached answer lasts its TTL, then the client
	// says the service is not found.
	r.Forget("_cached._tcp")
	start = time.Now()
	if got, err := r.Lookup(ctx, "_cached._tcp"); err != nil || len(got) != 2 {
		t.Fatalf("lookup: %v %v, want two instances", got, err)
	}
	sp.deregister(t, "cached-1")
	sp.deregister(t, "cached-2")
	seen = waitChange(t, r, "_cached._tcp", func(_ []discovery.Instance, err error) bool {
		return errors.Is(err, discovery.ErrNotFound)
	})
	if elapsed := seen.Sub(start); elapsed < ttl || elapsed > ttl+2*time.Second {
		t.Errorf("the removal was seen %v after the lookup, want after the TTL (%v) and within 2s of it", elapsed, ttl)
	}
}

// waitChange polls r.Lookup (which answers from its cache) until done says
// the answer shows the change, and returns when it did.
func waitChange(t *testing.T, r *discovery.Resolver, service string, done func([]discovery.Instance, error) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := r.Lookup(context.Background(), service)
		if done(got, err) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the change never showed; last answer %v (%v)", service, got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSignpostFailover: an instance that refuses connections is skipped,
// however heavy its weight; with every instance refusing, the error says
// so and names the service.
func TestSignpostFailover(t *testing.T) {
	sp := startSignpost(t, 5*time.Second)
	live := startEcho(t, "live")
	sp.register(t, "failover-dead", "failover", refusingPort(t), 1000, 1)
	sp.register(t, "failover-live", "failover", live.port(), 1, 1)
	r := sp.resolver()
	waitInstances(t, r, "failover", 2)

	ctx := context.Background()
	for i := 0; i < 20; i++ {
		name, err := dialName(ctx, r, "failover")
		if err != nil || name != "live" {
			t.Fatalf("dial %d with one instance refusing: reached %q (%v), want the live one", i, name, err)
		}
	}

	sp.register(t, "alldead-1", "alldead", refusingPort(t), 1, 1)
	sp.register(t, "alldead-2", "alldead", refusingPort(t), 1, 1)
	waitInstances(t, r, "alldead", 2)
	_, err := dialName(ctx, r, "alldead")
	if !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("dial with every instance refusing: %v, want an error wrapping ErrUnavailable", err)
	}
	for _, want := range []string{`"alldead"`, "no instance accepted a connection", "refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestSignpostUnknownService: a service signpost does not know gets
// NXDOMAIN, which the client reports as not found, naming the service.
func TestSignpostUnknownService(t *testing.T) {
	sp := startSignpost(t, 5*time.Second)
	sp.register(t, "known-1", "known", 10001, 1, 1)
	r := sp.resolver()
	waitInstances(t, r, "known", 1)

	ctx := context.Background()
	_, err := r.Lookup(ctx, "nosuch")
	if !errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrUnreachable) {
		t.Fatalf("lookup of an unknown service: %v, want an error wrapping ErrNotFound", err)
	}
	for _, want := range []string{`"nosuch"`, "NXDOMAIN", "no instances found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := r.Dial(ctx, "tcp", "nosuch"); !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("dial of an unknown service: %v, want a not-found error naming it", err)
	}
}
