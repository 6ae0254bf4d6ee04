package dnsserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// localityZone is a registry and a DNS server serving it on loopback.
type localityZone struct {
	ix   *registry.Index
	s    *Server
	addr string
	rev  int64
}

// newLocalityZone serves calc with instances in zone a (10.0.1.x), zone b
// (10.0.2.x) and none (10.0.9.1), askers from 127.0.0.2 in a and from
// 127.0.0.3 in b, 127.0.0.4 in no zone.
func newLocalityZone(t *testing.T, mode Locality, n int) *localityZone {
	t.Helper()
	return newLocalityZoneTB(t, mode, n)
}

func newLocalityZoneTB(t testing.TB, mode Locality, n int) *localityZone {
	t.Helper()
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{
		FailOpen: true,
		Locality: mode,
		LocalityZones: []LocalityZone{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Zone: "far-away"},
			{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Zone: "zone-a"},
			{Prefix: netip.MustParsePrefix("127.0.0.3/32"), Zone: "zone-b"},
			{Prefix: netip.MustParsePrefix("127.0.0.4/32"), Zone: "zone-c"},
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, ix)
	if err != nil {
		t.Fatal(err)
	}
	z := &localityZone{ix: ix, s: s}
	var evs []registry.Event
	for i := 0; i < n; i++ {
		for _, zone := range []string{"zone-a", "zone-b"} {
			z.rev++
			third := byte(1)
			if zone == "zone-b" {
				third = 2
			}
			in := registry.Instance{
				ID: fmt.Sprintf("%s-%d", zone, i), Service: "calc", Protocol: "tcp",
				Address: netip.AddrFrom4([4]byte{10, 0, third, byte(i + 1)}), Port: 8000,
				Weight: uint16(1 + i%3), Health: registry.Health{Status: registry.HealthPassing},
				Meta: map[string]string{registry.MetaZone: zone},
			}
			evs = append(evs, registry.Event{Type: registry.EventPut, Rev: z.rev, Instance: in})
		}
	}
	z.rev++
	evs = append(evs, registry.Event{Type: registry.EventPut, Rev: z.rev, Instance: registry.Instance{
		ID: "nozone", Service: "calc", Protocol: "tcp", Address: netip.MustParseAddr("10.0.9.1"), Port: 8000,
		Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
	}})
	ix.Apply(evs)
	l, err := Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	z.addr = l.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); s.Close(); <-done })
	return z
}

// setHealth marks every instance of zone critical or passing.
func (z *localityZone) setHealth(t *testing.T, zone string, st string) {
	t.Helper()
	list, _ := z.ix.Instances("calc")
	var evs []registry.Event
	for _, in := range list {
		if in.Meta[registry.MetaZone] == zone {
			z.rev++
			in.Health.Status = st
			evs = append(evs, registry.Event{Type: registry.EventPut, Rev: z.rev, Instance: in})
		}
	}
	z.ix.Apply(evs)
}

// ask queries name over net ("udp", "tcp") from the loopback address src
// and returns the zone of each answer record, in order ("" for none).
func (z *localityZone) ask(t *testing.T, netw, src, name string, qtype uint16) []string {
	t.Helper()
	var local net.Addr
	if netw == "udp" {
		local = &net.UDPAddr{IP: net.ParseIP(src)}
	} else {
		local = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: local, Timeout: 2 * time.Second}}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, z.addr)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", netw, name, src, err)
	}
	if r.Rcode != dns.RcodeSuccess || r.Truncated {
		t.Fatalf("%s %s from %s: rcode %d, TC %v", netw, name, src, r.Rcode, r.Truncated)
	}
	var zones []string
	for _, rr := range r.Answer {
		var where string
		switch rr := rr.(type) {
		case *dns.SRV:
			where = rr.Target
		case *dns.A:
			where = rr.A.String()
		default:
			t.Fatalf("unexpected %v", rr)
		}
		switch {
		case strings.HasPrefix(where, "host-"), where == "127.0.0.2":
			zones = append(zones, "host")
		case strings.HasPrefix(where, "zone-a-"), strings.HasPrefix(where, "10.0.1."):
			zones = append(zones, "zone-a")
		case strings.HasPrefix(where, "zone-b-"), strings.HasPrefix(where, "10.0.2."):
			zones = append(zones, "zone-b")
		default:
			zones = append(zones, "")
		}
	}
	if qtype == dns.TypeSRV && len(r.Extra) != len(r.Answer)+1 { // + OPT
		t.Fatalf("%s: %d answers, %d additional", name, len(r.Answer), len(r.Extra))
	}
	seen := map[string]bool{}
	for _, rr := range append(r.Answer, r.Extra...) {
		if seen[rr.String()] {
			t.Fatalf("%s from %s: %v twice", name, src, rr)
		}
		seen[rr.String()] = true
	}
	return zones
}

// count returns how many of zones are zone, and whether they all come
// before any other.
func count(zones []string, zone string) (n int, first bool) {
	first = true
	for i, z := range zones {
		if z == zone {
			n++
			if i >= n {
				first = false
			}
		}
	}
	return n, first
}

var localityNames = []struct {
	name  string
	qtype uint16
}{
	{"calc.servicediscovery.internal.", dns.TypeSRV},
	{"_calc._tcp.servicediscovery.internal.", dns.TypeSRV},
	{"calc.servicediscovery.internal.", dns.TypeA},
}

func TestLocalityOrder(t *testing.T) {
	z := newLocalityZone(t, LocalityOrder, 4)
	for _, q := range localityNames {
		for _, netw := range []string{"udp", "tcp"} {
			for _, c := range []struct{ src, zone string }{{"127.0.0.2", "zone-a"}, {"127.0.0.3", "zone-b"}} {
				// Several queries: the rotation must keep the zone first.
				for i := 0; i < 6; i++ {
					got := z.ask(t, netw, c.src, q.name, q.qtype)
					n, first := count(got, c.zone)
					if len(got) != 9 || n != 4 || !first {
						t.Fatalf("%s %s %v from %s: %v, want 9 with the 4 of %s first", netw, q.name, dns.TypeToString[q.qtype], c.src, got, c.zone)
					}
				}
			}
			// An asker in a zone with no instances, or in no zone: all,
			// in the usual rotation (zone-a is not always first).
			for _, src := range []string{"127.0.0.4", "127.0.0.5"} {
				firsts := map[string]bool{}
				for i := 0; i < 20; i++ {
					got := z.ask(t, netw, src, q.name, q.qtype)
					if len(got) != 9 {
						t.Fatalf("%s from %s: %v", q.name, src, got)
					}
					firsts[got[0]] = true
				}
				if len(firsts) < 2 {
					t.Fatalf("%s from %s: always %v first", q.name, src, firsts)
				}
			}
		}
	}
	// Zone a's instances all failing: its askers get the rest.
	z.setHealth(t, "zone-a", registry.HealthCritical)
	got := z.ask(t, "udp", "127.0.0.2", "calc.servicediscovery.internal.", dns.TypeSRV)
	if n, _ := count(got, "zone-a"); len(got) != 5 || n != 0 {
		t.Fatalf("zone a failing: %v", got)
	}
	got = z.ask(t, "udp", "127.0.0.3", "calc.servicediscovery.internal.", dns.TypeSRV)
	if n, first := count(got, "zone-b"); len(got) != 5 || n != 4 || !first {
		t.Fatalf("zone a failing, from b: %v", got)
	}
	z.setHealth(t, "zone-a", registry.HealthPassing)
	got = z.ask(t, "udp", "127.0.0.2", "calc.servicediscovery.internal.", dns.TypeSRV)
	if n, first := count(got, "zone-a"); len(got) != 9 || n != 4 || !first {
		t.Fatalf("zone a back: %v", got)
	}
}

func TestLocalityPrefer(t *testing.T) {
	z := newLocalityZone(t, LocalityPrefer, 4)
	for _, q := range localityNames {
		for _, netw := range []string{"udp", "tcp"} {
			for _, c := range []struct{ src, zone string }{{"127.0.0.2", "zone-a"}, {"127.0.0.3", "zone-b"}} {
				got := z.ask(t, netw, c.src, q.name, q.qtype)
				if n, _ := count(got, c.zone); len(got) != 4 || n != 4 {
					t.Fatalf("%s %s from %s: %v, want only the 4 of %s", netw, q.name, c.src, got, c.zone)
				}
			}
			if got := z.ask(t, netw, "127.0.0.4", q.name, q.qtype); len(got) != 9 {
				t.Fatalf("%s from a zone with no instances: %v", q.name, got)
			}
		}
	}
	// No passing instance in zone b: all of them (fail-open ones are near
	// nowhere).
	z.setHealth(t, "zone-b", registry.HealthCritical)
	if got := z.ask(t, "udp", "127.0.0.3", "calc.servicediscovery.internal.", dns.TypeSRV); len(got) != 5 {
		t.Fatalf("zone b failing: %v", got)
	}
	z.setHealth(t, "zone-a", registry.HealthCritical)
	if got := z.ask(t, "udp", "127.0.0.2", "calc.servicediscovery.internal.", dns.TypeSRV); len(got) != 1 || got[0] != "" {
		t.Fatalf("zones a and b failing: %v", got)
	}
}

// TestLocalityLarge: a service packed by the background builder gets its
// zone views built with it.
func TestLocalityLarge(t *testing.T) {
	z := newLocalityZone(t, LocalityPrefer, inlineMax)
	if !z.s.zone.get([]byte("calc")).large() {
		t.Fatal("not large")
	}
	got := z.ask(t, "tcp", "127.0.0.3", "calc.servicediscovery.internal.", dns.TypeSRV)
	if n, _ := count(got, "zone-b"); n != inlineMax || len(got) != inlineMax {
		t.Fatalf("%d answers, %d of zone b", len(got), n)
	}
	// A change: the previous version's zone views serve until the builder
	// is done, then the new ones.
	z.setHealth(t, "zone-b", registry.HealthCritical)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = z.ask(t, "tcp", "127.0.0.3", "calc.servicediscovery.internal.", dns.TypeSRV)
		if len(got) == inlineMax+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zone b failing: %d answers", len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLocalityOffByDefault(t *testing.T) {
	z := newLocalityZone(t, LocalityOff, 4)
	firsts := map[string]bool{}
	for i := 0; i < 20; i++ {
		got := z.ask(t, "udp", "127.0.0.2", "calc.servicediscovery.internal.", dns.TypeSRV)
		if len(got) != 9 {
			t.Fatalf("%v", got)
		}
		firsts[got[0]] = true
	}
	if len(firsts) < 2 {
		t.Fatalf("always %v first: locality is on", firsts)
	}
	if z.s.zone.get([]byte("calc")).nearIdx() != nil {
		t.Fatal("zone views built with locality off")
	}
}

func TestZoneOfLongestPrefix(t *testing.T) {
	l, err := newLocality(LocalityOrder, []LocalityZone{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Zone: "wide"},
		{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Zone: "us-east-1a"},
		{Prefix: netip.MustParsePrefix("10.0.1.128/25"), Zone: "us-east-1b"},
		{Prefix: netip.MustParsePrefix("fd00::/64"), Zone: "us-east-1a"},
		{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Zone: "us-east-1a"}, // twice: fine
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ addr, zone string }{
		{"10.0.1.5", "us-east-1a"}, {"10.0.1.200", "us-east-1b"}, {"10.9.9.9", "wide"},
		{"::ffff:10.0.1.5", "us-east-1a"}, {"fd00::1", "us-east-1a"}, {"fd00:1::1", ""}, {"192.168.0.1", ""},
	} {
		z := l.zoneOf(netip.MustParseAddr(c.addr))
		got := ""
		if z >= 0 {
			got = l.names[z]
		}
		if got != c.zone {
			t.Errorf("%s: zone %q, want %q", c.addr, got, c.zone)
		}
	}
	if l.zoneOf(netip.Addr{}) != -1 {
		t.Error("no address: a zone")
	}
	if n := testing.AllocsPerRun(100, func() { l.zoneOf(netip.MustParseAddr("10.0.1.200")) }); n != 0 {
		t.Errorf("zoneOf: %v allocations", n)
	}
}

func TestParseLocalityZone(t *testing.T) {
	lz, err := ParseLocalityZone("10.0.1.0/24=us-east-1a")
	if err != nil || lz.Prefix != netip.MustParsePrefix("10.0.1.0/24") || lz.Zone != "us-east-1a" {
		t.Fatalf("%v %v", lz, err)
	}
	for _, v := range []string{"10.0.1.0/24", "10.0.1.0=a", "10.0.1.0/33=a", "10.0.1.0/24=", "10.0.1.0/24=US East", "10.0.1.0/24=-a", "10.0.1.0/24=" + strings.Repeat("a", 64)} {
		_, err := ParseLocalityZone(v)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", v)) {
			t.Errorf("%q: error %v, want one naming the value", v, err)
		}
	}
	if _, err := newLocality(LocalityOrder, []LocalityZone{
		{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Zone: "a"},
		{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Zone: "b"},
	}); err == nil || !strings.Contains(err.Error(), "10.0.1.0/24=b") {
		t.Errorf("one prefix in two zones: %v", err)
	}
	for _, v := range []string{"off", "order", "prefer"} {
		if m, err := ParseLocality(v); err != nil || m.String() != v {
			t.Errorf("%s: %v %v", v, m, err)
		}
	}
	if _, err := ParseLocality("near"); err == nil || !strings.Contains(err.Error(), `"near"`) {
		t.Errorf("near: %v", err)
	}
}

// TestLocalityAllocs: answers for an asker in a zone allocate nothing.
func TestLocalityAllocs(t *testing.T) {
	for _, mode := range []Locality{LocalityOrder, LocalityPrefer} {
		z := newLocalityZone(t, mode, 4)
		z.addHost(t, "zone-a")
		out := make([]byte, 65536+optLen)
		from := netip.MustParseAddr("127.0.0.2")
		for _, q := range localityNames {
			for _, from := range []netip.Addr{from, netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("::ffff:127.0.0.2")} {
				req := packQuery(t, q.name, q.qtype, 1232, nil)
				z.s.respondFrom(req, out, false, from) // pack once
				if n := testing.AllocsPerRun(100, func() { z.s.respondFrom(req, out, false, from) }); n != 0 {
					t.Errorf("%v %s from %s: %v allocations", mode, q.name, from, n)
				}
			}
		}
	}
}

// addHost registers two instances of calc at 127.0.0.2, the address of
// the askers of zone a: containers on their own host.
func (z *localityZone) addHost(t testing.TB, zone string) {
	t.Helper()
	var evs []registry.Event
	for i := 0; i < 2; i++ {
		z.rev++
		in := registry.Instance{
			ID: fmt.Sprintf("host-%d", i), Service: "calc", Protocol: "tcp",
			Address: netip.MustParseAddr("127.0.0.2"), Port: uint16(9000 + i),
			Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
		}
		if zone != "" {
			in.Meta = map[string]string{registry.MetaZone: zone}
		}
		evs = append(evs, registry.Event{Type: registry.EventPut, Rev: z.rev, Instance: in})
	}
	z.ix.Apply(evs)
}

// parts checks that got is made of runs of the given zones, in order,
// of the given lengths.
func parts(t *testing.T, what string, got []string, want ...any) {
	t.Helper()
	i := 0
	for k := 0; k < len(want); k += 2 {
		zone, n := want[k].(string), want[k+1].(int)
		for j := 0; j < n; j++ {
			if i >= len(got) || zone != "*" && got[i] != zone || zone == "*" && got[i] == "host" {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
			i++
		}
	}
	if i != len(got) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
}

func TestLocalityHost(t *testing.T) {
	const srv, a = "calc.servicediscovery.internal.", "calc.servicediscovery.internal."
	for _, netw := range []string{"udp", "tcp"} {
		z := newLocalityZone(t, LocalityOrder, 3)
		z.addHost(t, "zone-a")
		for i := 0; i < 4; i++ {
			parts(t, "order SRV", z.ask(t, netw, "127.0.0.2", srv, dns.TypeSRV), "host", 2, "zone-a", 3, "*", 4)
			parts(t, "order _tcp SRV", z.ask(t, netw, "127.0.0.2", "_calc._tcp.servicediscovery.internal.", dns.TypeSRV), "host", 2, "zone-a", 3, "*", 4)
			parts(t, "order A", z.ask(t, netw, "127.0.0.2", a, dns.TypeA), "host", 1, "zone-a", 3, "*", 4)
			// Another zone's asker: its zone first, the host's among the
			// rest.
			got := z.ask(t, netw, "127.0.0.3", srv, dns.TypeSRV)
			parts(t, "order SRV from zone b", got[:3], "zone-b", 3)
			if n, _ := count(got, "host"); n != 2 || len(got) != 9 {
				t.Fatalf("from zone b: %v", got)
			}
		}
		// The host's instances failing: the zone's first again.
		z.rev++
		for _, id := range []string{"host-0", "host-1"} {
			list, _ := z.ix.Instances("calc")
			for _, in := range list {
				if in.ID == id {
					z.rev++
					in.Health.Status = registry.HealthCritical
					z.ix.Apply([]registry.Event{{Type: registry.EventPut, Rev: z.rev, Instance: in}})
				}
			}
		}
		parts(t, "host failing", z.ask(t, netw, "127.0.0.2", srv, dns.TypeSRV), "zone-a", 3, "*", 4)

		p := newLocalityZone(t, LocalityPrefer, 3)
		p.addHost(t, "")
		parts(t, "prefer SRV", p.ask(t, netw, "127.0.0.2", srv, dns.TypeSRV), "host", 2, "zone-a", 3)
		parts(t, "prefer A", p.ask(t, netw, "127.0.0.2", a, dns.TypeA), "host", 1, "zone-a", 3)
		p.setHealth(t, "zone-a", registry.HealthCritical)
		parts(t, "prefer SRV, zone failing", p.ask(t, netw, "127.0.0.2", srv, dns.TypeSRV), "host", 2)
	}
}

// TestLocalityHostOnly: with no zones declared, the same-host tier alone.
func TestLocalityHostOnly(t *testing.T) {
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{Locality: LocalityOrder, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, ix)
	if err != nil {
		t.Fatal(err)
	}
	z := &localityZone{ix: ix, s: s}
	z.addHost(t, "")
	z.rev++
	ix.Apply([]registry.Event{{Type: registry.EventPut, Rev: z.rev, Instance: registry.Instance{
		ID: "elsewhere", Service: "calc", Protocol: "tcp", Address: netip.MustParseAddr("10.0.9.1"), Port: 8000,
		Weight: 50, Health: registry.Health{Status: registry.HealthPassing},
	}}})
	out := make([]byte, 65536+optLen)
	req := packQuery(t, "calc.servicediscovery.internal.", dns.TypeSRV, 0, nil)
	for i := 0; i < 10; i++ {
		m := new(dns.Msg)
		if err := m.Unpack(s.respondFrom(req, out, false, netip.MustParseAddr("127.0.0.2"))); err != nil {
			t.Fatal(err)
		}
		if len(m.Answer) != 3 || !strings.HasPrefix(m.Answer[0].(*dns.SRV).Target, "host-") || !strings.HasPrefix(m.Answer[1].(*dns.SRV).Target, "host-") {
			t.Fatalf("%v", m.Answer)
		}
	}
}

func BenchmarkRespondLocality(b *testing.B) {
	for _, mode := range []Locality{LocalityOrder, LocalityPrefer} {
		z := newLocalityZoneTB(b, mode, 32)
		z.addHost(b, "zone-a")
		for _, c := range []struct{ name, from string }{{"zone", "127.0.0.3"}, {"host", "127.0.0.2"}, {"none", "192.0.2.1"}} {
			from := netip.MustParseAddr(c.from)
			req := packQuery(b, "calc.servicediscovery.internal.", dns.TypeSRV, 1232, nil)
			b.Run(mode.String()+"/"+c.name, func(b *testing.B) {
				out := make([]byte, 65536+optLen)
				z.s.respondFrom(req, out, false, from) // pack once
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if z.s.respondFrom(req, out, false, from) == nil {
						b.Fatal("no answer")
					}
				}
			})
		}
	}
}

// TestLocalityAnswersParse: every locality answer, cut to any size,
// parses, has no record twice, and is marked TC over UDP when it lost
// records.
func TestLocalityAnswersParse(t *testing.T) {
	for _, mode := range []Locality{LocalityOrder, LocalityPrefer} {
		z := newLocalityZone(t, mode, 20)
		z.addHost(t, "zone-a")
		out := make([]byte, 65536+optLen)
		for _, name := range []string{"calc.servicediscovery.internal.", "_calc._tcp.servicediscovery.internal.", "_calc._udp.servicediscovery.internal."} {
			for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypePTR} {
				for _, size := range []uint16{0, 512, 700, 1232, 4096} {
					for _, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.9", "::1", ""} {
						var a netip.Addr
						if from != "" {
							a = netip.MustParseAddr(from)
						}
						for _, tcp := range []bool{false, true} {
							resp := z.s.respondFrom(packQuery(t, name, qtype, size, nil), out, tcp, a)
							m := new(dns.Msg)
							if err := m.Unpack(resp); err != nil {
								t.Fatalf("%s %d size %d from %q: %v", name, qtype, size, from, err)
							}
							seen := map[string]bool{}
							for _, rr := range append(m.Answer, m.Extra...) {
								if seen[rr.String()] {
									t.Fatalf("%s %d size %d from %q: %v twice", name, qtype, size, from, rr)
								}
								seen[rr.String()] = true
							}
							if tcp && m.Truncated {
								t.Fatalf("TC over TCP")
							}
						}
					}
				}
			}
		}
	}
}
