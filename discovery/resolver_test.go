package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dns/signpost/discovery/discoverytest"
)

const zone = "servicediscovery.internal"

func startDNS(t *testing.T) *discoverytest.Server {
	t.Helper()
	srv, err := discoverytest.Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func newResolver(srv *discoverytest.Server) *Resolver {
	return &Resolver{Server: srv.Addr(), Zone: zone, Timeout: 2 * time.Second}
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNames(t *testing.T) {
	tests := []struct {
		service, zone string
		want          []string
		wantErr       bool
	}{
		{"calc", zone, []string{"_calc._tcp.servicediscovery.internal.", "calc.servicediscovery.internal."}, false},
		{"CALC", zone + ".", []string{"_calc._tcp.servicediscovery.internal.", "calc.servicediscovery.internal."}, false},
		{"_calc._tcp", zone, []string{"_calc._tcp.servicediscovery.internal."}, false},
		{"_calc._udp", zone, []string{"_calc._udp.servicediscovery.internal."}, false},
		{"_calc._tcp.servicediscovery.internal.", zone, []string{"_calc._tcp.servicediscovery.internal."}, false},
		{"calc.servicediscovery.internal", zone, []string{"calc.servicediscovery.internal."}, false},
		{"_calc._tcp.example.org", zone, []string{"_calc._tcp.example.org."}, false},
		{"calc", "", []string{"_calc._tcp.", "calc."}, false},
		{"", zone, nil, true},
		{"  ", zone, nil, true},
		{".", zone, nil, true},
		{"a..b", zone, nil, true},
	}
	for _, tt := range tests {
		got, err := names(tt.service, tt.zone)
		if (err != nil) != tt.wantErr {
			t.Errorf("names(%q, %q) error = %v, want error %v", tt.service, tt.zone, err, tt.wantErr)
			continue
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("names(%q, %q) = %q, want %q", tt.service, tt.zone, got, tt.want)
		}
	}
}

func TestLookupNameForms(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 10, 1, 30))
	srv.Add(discoverytest.Service("time", "time-1", 9091, 10, 1, 30))
	tests := []struct {
		service  string
		wantPort uint16
	}{
		{"calc", 8081},
		{"_calc._tcp", 8081},
		{"_calc._tcp.servicediscovery.internal", 8081},
		{"_calc._tcp.servicediscovery.internal.", 8081},
		// Published without the _tcp form: found through the second name.
		{"time", 9091},
		{"time.servicediscovery.internal", 9091},
	}
	for _, tt := range tests {
		r := newResolver(srv)
		got, err := r.Lookup(context.Background(), tt.service)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.service, err)
			continue
		}
		if len(got) != 1 || got[0].Port != tt.wantPort || got[0].Address() != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tt.wantPort).String() {
			t.Errorf("Lookup(%q) = %+v, want one instance on port %d", tt.service, got, tt.wantPort)
		}
	}
}

func TestLookupUsesGlueOrResolvesTargets(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 10, 1, 30))
	srv.Add(discoverytest.Record{Service: "_calc._tcp", Target: "calc-6", Addr: netip.MustParseAddr("::1"), Port: 8082, TTL: 30})

	ctx := context.Background()
	if _, err := newResolver(srv).Lookup(ctx, "calc"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Queries("calc-1", dns.TypeA); n != 0 {
		t.Errorf("with glue, the resolver asked for A of the target %d times, want 0", n)
	}

	srv.SetNoGlue(true)
	got, err := newResolver(srv).Lookup(ctx, "calc")
	if err != nil {
		t.Fatal(err)
	}
	if srv.Queries("calc-1", dns.TypeA) != 1 || srv.Queries("calc-6", dns.TypeAAAA) != 1 {
		t.Errorf("without glue, the resolver did not ask for the targets' addresses")
	}
	byPort := map[uint16]string{}
	for _, in := range got {
		byPort[in.Port] = in.Address()
	}
	if byPort[8081] != "127.0.0.1:8081" || byPort[8082] != "[::1]:8082" {
		t.Errorf("instances without glue = %v", byPort)
	}
}

func TestLookupSkipsTargetsWithoutAddress(t *testing.T) {
	srv := startDNS(t)
	srv.SetNoGlue(true)
	srv.Add(discoverytest.Record{Service: "_calc._tcp", Target: "calc-gone", Port: 1, TTL: 30})
	_, err := newResolver(srv).Lookup(context.Background(), "_calc._tcp")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no SRV target has an address") {
		t.Fatalf("Lookup with an addressless target: %v, want ErrNotFound saying why", err)
	}
}

func TestPickByPriorityThenWeight(t *testing.T) {
	srv := startDNS(t)
	srv.Add(
		discoverytest.Service("_calc._tcp", "light", 1001, 10, 1, 30),
		discoverytest.Service("_calc._tcp", "heavy", 1003, 10, 3, 30),
		discoverytest.Service("_calc._tcp", "backup", 2000, 20, 100, 30),
	)
	r := newResolver(srv)
	r.intn = rand.New(rand.NewPCG(1, 2)).IntN
	const n = 8000
	counts := map[uint16]int{}
	for range n {
		in, err := r.Pick(context.Background(), "calc")
		if err != nil {
			t.Fatal(err)
		}
		counts[in.Port]++
	}
	if counts[2000] != 0 {
		t.Errorf("the priority-20 instance was picked %d times while priority-10 ones exist", counts[2000])
	}
	share := float64(counts[1003]) / n
	if share < 0.72 || share > 0.78 {
		t.Errorf("weight 3 of 4 got share %.3f (counts %v), want about 0.75", share, counts)
	}
	if srv.Queries("_calc._tcp", dns.TypeSRV) != 1 {
		t.Errorf("%d picks made %d SRV queries, want 1 (cached)", n, srv.Queries("_calc._tcp", dns.TypeSRV))
	}

	ordered, err := r.Ordered(context.Background(), "calc")
	if err != nil {
		t.Fatal(err)
	}
	if len(ordered) != 3 || ordered[2].Port != 2000 {
		t.Errorf("Ordered = %v, want the priority-20 instance last", ordered)
	}
}

func TestOrderWeightZero(t *testing.T) {
	ins := []Instance{{Target: "zero", Weight: 0}, {Target: "five", Weight: 5}}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		got := order(ins, rng.IntN)
		if got[0].Target != "five" {
			t.Fatalf("order = %v: a weight-0 instance came before a weighted one", got)
		}
	}
	both := map[string]int{}
	for range 400 {
		both[order([]Instance{{Target: "a"}, {Target: "b"}}, rng.IntN)[0].Target]++
	}
	if both["a"] < 150 || both["b"] < 150 {
		t.Errorf("all weights 0: picks %v, want about even", both)
	}
}

func TestTTLCaching(t *testing.T) {
	tests := []struct {
		name        string
		ttl         uint32
		maxTTL      time.Duration
		stillCached time.Duration // a lookup after this long uses the cache
		expired     time.Duration // a lookup after this long asks again
	}{
		{"record TTL", 30, 0, 29 * time.Second, 30 * time.Second},
		{"floor for TTL 0", 0, 0, 900 * time.Millisecond, DefaultMinTTL},
		{"cap for a long TTL", 86400, 10 * time.Second, 9 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startDNS(t)
			srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 0, 0, tt.ttl))
			clock := &fakeClock{t: time.Unix(1000, 0)}
			r := newResolver(srv)
			r.MaxTTL = tt.maxTTL
			r.now = clock.now
			lookups := func() int { return srv.Queries("_calc._tcp", dns.TypeSRV) }
			ctx := context.Background()

			for range 3 {
				if _, err := r.Lookup(ctx, "calc"); err != nil {
					t.Fatal(err)
				}
			}
			clock.advance(tt.stillCached)
			if _, err := r.Lookup(ctx, "calc"); err != nil {
				t.Fatal(err)
			}
			if lookups() != 1 {
				t.Fatalf("after %v: %d queries, want 1 (cached)", tt.stillCached, lookups())
			}
			clock.advance(tt.expired - tt.stillCached)
			if _, err := r.Lookup(ctx, "calc"); err != nil {
				t.Fatal(err)
			}
			if lookups() != 2 {
				t.Fatalf("after %v: %d queries, want 2 (expired)", tt.expired, lookups())
			}
		})
	}
}

func TestNegativeCachingAndRecovery(t *testing.T) {
	srv := startDNS(t)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	r := newResolver(srv)
	r.now = clock.now
	ctx := context.Background()

	if _, err := r.Lookup(ctx, "calc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of a missing service: %v, want ErrNotFound", err)
	}
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 0, 0, 30))
	clock.advance(4 * time.Second) // the SOA says 5 s
	if _, err := r.Lookup(ctx, "calc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("within the negative TTL: %v, want the cached ErrNotFound", err)
	}
	clock.advance(time.Second)
	if got, err := r.Lookup(ctx, "calc"); err != nil || len(got) != 1 {
		t.Fatalf("after the negative TTL: %v, %v, want the new instance", got, err)
	}
}

func TestNotFoundErrors(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 0, 0, 30))
	tests := []struct {
		service string
		want    []string
	}{
		{"time", []string{`service "time"`, "no instances found", "_time._tcp.servicediscovery.internal. SRV: NXDOMAIN", "time.servicediscovery.internal. SRV: NXDOMAIN"}},
		{"calc-1.servicediscovery.internal.", []string{`service "calc-1.servicediscovery.internal."`, "NODATA"}},
	}
	for _, tt := range tests {
		_, err := newResolver(srv).Lookup(context.Background(), tt.service)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, want ErrNotFound", tt.service, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Lookup(%q) error %q does not say %q", tt.service, err, w)
			}
		}
	}
}

func TestRefusedIsNotNotFound(t *testing.T) {
	srv := startDNS(t)
	_, err := newResolver(srv).Lookup(context.Background(), "_calc._tcp.example.org.")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "REFUSED") {
		t.Fatalf("Lookup outside the zone: %v, want an error saying REFUSED", err)
	}
}

func TestUnreachable(t *testing.T) {
	// A UDP port that answers nothing: the query times out.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A UDP port nobody listens on: the query is refused.
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()

	for _, server := range []string{silent.LocalAddr().String(), closedAddr} {
		r := &Resolver{Server: server, Zone: zone, Timeout: 300 * time.Millisecond}
		start := time.Now()
		_, err := r.Lookup(context.Background(), "calc")
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("Lookup through %s: %v, want ErrUnreachable", server, err)
			continue
		}
		if !strings.Contains(err.Error(), `service "calc"`) || !strings.Contains(err.Error(), server) {
			t.Errorf("error %q should name the service and the server", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Lookup through %s took %v, want it bounded by Timeout", server, d)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 0, 0, 30))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newResolver(srv).Lookup(ctx, "calc")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("Lookup with a canceled context: %v, want context.Canceled", err)
	}
}

func TestTruncatedAnswerFallsBackToTCP(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Service("_calc._tcp", "calc-1", 8081, 0, 0, 30))
	srv.SetTruncateUDP(true)
	got, err := newResolver(srv).Lookup(context.Background(), "calc")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Port != 8081 {
		t.Fatalf("Lookup over TCP = %v, want the instance", got)
	}
	udp, tcp := srv.Transports()
	if udp != 1 || tcp != 1 {
		t.Errorf("queries: %d over UDP, %d over TCP; want 1 and 1", udp, tcp)
	}
}

func TestLookupAddrs(t *testing.T) {
	srv := startDNS(t)
	srv.Add(discoverytest.Record{Service: "_calc._tcp", Target: "calc-6", Addr: netip.MustParseAddr("::1"), Port: 8082, TTL: 30})
	srv.Add(discoverytest.Record{Service: "_calc._tcp", Target: "calc-6", Addr: netip.MustParseAddr("127.0.0.2"), Port: 8082, TTL: 30})
	r := newResolver(srv)
	ctx := context.Background()
	got, err := r.LookupAddrs(ctx, "calc-6."+zone)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != netip.MustParseAddr("127.0.0.2") || got[1] != netip.MustParseAddr("::1") {
		t.Errorf("LookupAddrs(calc-6) = %v, want [127.0.0.2 ::1]", got)
	}
	if got, err := r.LookupAddrs(ctx, "nothing."+zone); err != nil || len(got) != 0 {
		t.Errorf("LookupAddrs(nothing) = %v, %v; want no address and no error", got, err)
	}
	if _, err := r.LookupAddrs(ctx, "bad..name"); err == nil || !strings.Contains(err.Error(), "bad..name") {
		t.Errorf("LookupAddrs(bad..name) = %v, want an error naming it", err)
	}
}

// TestLookupSurvivesOneTargetNotAnswering: without glue, one SRV target
// whose address query is never answered (a lost datagram, a resolver
// rate limit) leaves that instance out; it does not fail the lookup of
// the others.
func TestLookupSurvivesOneTargetNotAnswering(t *testing.T) {
	const svc = "_calc._tcp." + zone + "."
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		m := new(dns.Msg)
		m.SetReply(req)
		hdr := func(name string, t uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 30}
		}
		switch {
		case strings.EqualFold(q.Name, svc) && q.Qtype == dns.TypeSRV:
			for _, id := range []string{"a", "lost", "b"} {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(svc, dns.TypeSRV), Port: 80, Weight: 1, Target: id + ".calc." + zone + "."})
			}
		case strings.HasPrefix(q.Name, "lost."):
			return // never answered
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(q.Name, dns.TypeA), A: net.IPv4(127, 0, 0, 1)})
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = s.ActivateAndServe() }()
	t.Cleanup(func() { _ = s.Shutdown() })
	r := &Resolver{Server: pc.LocalAddr().String(), Zone: zone, Timeout: 300 * time.Millisecond}
	got, err := r.Lookup(context.Background(), "_calc._tcp")
	if err != nil {
		t.Fatalf("Lookup with one target not answering: %v, want the two others", err)
	}
	if len(got) != 2 {
		t.Fatalf("Lookup = %v, want a and b", got)
	}
}
