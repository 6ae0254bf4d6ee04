package zonexfr

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/registry"
)

const zone = "servicediscovery.internal."

// fixture is a DNS server on a loopback port with transfers on, over an
// index the test feeds directly.
type fixture struct {
	ix   *registry.Index
	dns  *dnsserver.Server
	x    *Transfers
	addr string
	rev  int64
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t testing.TB, cfg Config) *fixture {
	t.Helper()
	ix, s, l := newServer(t)
	if cfg.Allow == nil {
		cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	if cfg.Log == nil {
		cfg.Log = quiet()
	}
	x, err := New(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	s.SetTransfers(x)
	run(t, func(ctx context.Context) { _ = s.Serve(ctx, l) }, func(ctx context.Context) { _ = x.Run(ctx) })
	return &fixture{ix: ix, dns: s, x: x, addr: l.Addr()}
}

// newServer returns a DNS server over an empty index, and its listeners
// on a loopback port.
func newServer(t testing.TB) (*registry.Index, *dnsserver.Server, dnsserver.Listeners) {
	t.Helper()
	ix := registry.NewIndex(quiet())
	s, err := dnsserver.New(dnsserver.Config{NSAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Log: quiet()}, ix)
	if err != nil {
		t.Fatal(err)
	}
	l, err := dnsserver.Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	return ix, s, l
}

// run runs each fn until the test ends.
func run(t testing.TB, fns ...func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func instance(svc string, i int, proto string) registry.Instance {
	return registry.Instance{
		ID: fmt.Sprintf("%s-%03d", svc, i), Service: svc, Protocol: proto,
		Address: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: uint16(8000 + i),
		Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
		Meta: map[string]string{"version": "1." + fmt.Sprint(i)},
	}
}

func (f *fixture) put(ins ...registry.Instance) {
	evs := make([]registry.Event, len(ins))
	for i, in := range ins {
		f.rev++
		evs[i] = registry.Event{Type: registry.EventPut, Rev: f.rev, Instance: in}
	}
	f.ix.Apply(evs)
}

func (f *fixture) del(in registry.Instance) {
	f.rev++
	f.ix.Apply([]registry.Event{{Type: registry.EventDelete, Rev: f.rev, Instance: in}})
}

// populate registers a zone with every kind of name: tcp and udp
// services, an IPv6 instance, a failing instance, tags.
func (f *fixture) populate() {
	calc2 := instance("calc", 2, "tcp")
	calc2.Health.Status = registry.HealthCritical
	v6 := instance("time", 1, "tcp")
	v6.Address = netip.MustParseAddr("fd00::1")
	v6.Tags = []string{"a", "b"}
	f.put(instance("calc", 1, "tcp"), calc2, instance("calc", 3, "tcp"), v6, instance("time", 2, "tcp"), instance("syslog", 1, "udp"))
}

// transfer runs AXFR or IXFR (from serial) over TCP and returns the
// records, failing on any error.
func transfer(t testing.TB, addr string, qtype uint16, serial uint32, key *Key) []dns.RR {
	t.Helper()
	rrs, err := tryTransfer(addr, qtype, serial, key)
	if err != nil {
		t.Fatal(err)
	}
	return rrs
}

func tryTransfer(addr string, qtype uint16, serial uint32, key *Key) ([]dns.RR, error) {
	m := new(dns.Msg)
	if qtype == dns.TypeAXFR {
		m.SetAxfr(zone)
	} else {
		m.SetIxfr(zone, serial, "ns."+zone, "hostmaster."+zone)
	}
	tr := &dns.Transfer{}
	if key != nil {
		tr.TsigSecret = key.secrets()
		m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
	}
	ch, err := tr.In(m, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dns.TypeToString[qtype], err)
	}
	var out []dns.RR
	for env := range ch {
		if env.Error != nil {
			return nil, fmt.Errorf("%s: %w", dns.TypeToString[qtype], env.Error)
		}
		out = append(out, env.RR...)
	}
	return out, nil
}

func exchange(t testing.TB, addr, netw string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s over %s: %v", m.Question[0].String(), netw, err)
	}
	return r
}

func keys(rrs []dns.RR) map[string]bool {
	out := map[string]bool{}
	for _, rr := range rrs {
		out[rr.String()] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func soaSerial(t testing.TB, rr dns.RR) uint32 {
	t.Helper()
	soa, ok := rr.(*dns.SOA)
	if !ok {
		t.Fatalf("want an SOA, got %v", rr)
	}
	return soa.Serial
}

// checkAXFRShape checks SOA first and last, at serial, and returns the
// records between.
func checkAXFRShape(t testing.TB, rrs []dns.RR, serial uint32) []dns.RR {
	t.Helper()
	if len(rrs) < 2 {
		t.Fatalf("transfer of %d records", len(rrs))
	}
	if a, b := soaSerial(t, rrs[0]), soaSerial(t, rrs[len(rrs)-1]); a != serial || b != serial {
		t.Fatalf("SOA serials %d ... %d, want %d", a, b, serial)
	}
	return rrs[1 : len(rrs)-1]
}

func TestAXFRMatchesAnswers(t *testing.T) {
	f := start(t, Config{})
	f.populate()
	rrs := checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, nil), f.dns.Serial())
	if f.dns.Serial() != uint32(f.rev) {
		t.Fatalf("serial %d, want the registry revision %d", f.dns.Serial(), f.rev)
	}
	inZone := keys(rrs)
	type nt struct {
		name  string
		qtype uint16
	}
	sets := map[nt]map[string]bool{}
	for _, rr := range rrs {
		k := nt{rr.Header().Name, rr.Header().Rrtype}
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][rr.String()] = true
	}
	// Every RRset transferred is what the server answers, exactly.
	for k, want := range sets {
		m := new(dns.Msg)
		m.SetQuestion(k.name, k.qtype)
		got := keys(exchange(t, f.addr, "tcp", m).Answer)
		if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(sortedKeys(want)) {
			t.Errorf("%s %s: server answers\n%s\ntransfer has\n%s", k.name, dns.TypeToString[k.qtype],
				strings.Join(sortedKeys(got), "\n"), strings.Join(sortedKeys(want), "\n"))
		}
	}
	// And whatever the server answers at those names is transferred.
	names := map[string]bool{zone: true}
	for k := range sets {
		names[k.name] = true
	}
	for name := range names {
		for _, qt := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypePTR, dns.TypeNS} {
			m := new(dns.Msg)
			m.SetQuestion(name, qt)
			for _, rr := range exchange(t, f.addr, "tcp", m).Answer {
				if !inZone[rr.String()] {
					t.Errorf("%s %s: answered %v, not in the transfer", name, dns.TypeToString[qt], rr)
				}
			}
		}
	}
	for _, want := range []string{
		"calc." + zone + " SRV", "_calc._tcp." + zone + " SRV", "_calc._tcp." + zone + " PTR",
		"_services._dns-sd._udp." + zone + " PTR", "calc-002.calc." + zone + " A", "time-001.calc." + zone + "",
		"time-001.time." + zone + " AAAA", "calc-001._calc._tcp." + zone + " SRV", "calc-001._calc._tcp." + zone + " TXT",
		"_syslog._udp." + zone + " SRV", zone + " NS", "ns." + zone + " A",
		// time-001's tags: the tag names and the DNS-SD subtype.
		"a.tag.time." + zone + " SRV", "b.tag.time." + zone + " AAAA", "_a._time._tcp." + zone + " SRV",
		"_b._sub._time._tcp." + zone + " PTR",
	} {
		parts := strings.Fields(want)
		if len(parts) < 2 {
			continue // a name that must not be there: checked below
		}
		if len(sets[nt{parts[0], dns.StringToType[parts[1]]}]) == 0 {
			t.Errorf("transfer has no %s", want)
		}
	}
	// The failing instance's target is in the zone, not among calc's SRV.
	for rr := range sets[nt{"calc." + zone, dns.TypeSRV}] {
		if strings.Contains(rr, "calc-002") {
			t.Errorf("failing instance served: %s", rr)
		}
	}
}

// apply applies an IXFR answer's differences to a zone (a set of records
// without the SOA) and returns the serial it ends at.
func apply(t testing.TB, z map[string]bool, rrs []dns.RR) uint32 {
	t.Helper()
	end := soaSerial(t, rrs[0])
	adding := true
	var at uint32
	for i, rr := range rrs[1:] {
		if soa, ok := rr.(*dns.SOA); ok {
			if i == len(rrs)-2 {
				if soa.Serial != end {
					t.Fatalf("last SOA %d, first %d", soa.Serial, end)
				}
				break
			}
			adding = !adding
			at = soa.Serial
			continue
		}
		if adding {
			z[rr.String()] = true
		} else {
			if !z[rr.String()] {
				t.Fatalf("delete at serial %d of a record not there: %v", at, rr)
			}
			delete(z, rr.String())
		}
	}
	return end
}

func TestIXFR(t *testing.T) {
	// The journal holds one difference: between the serials transfers
	// (or NOTIFY) saw, the differences coalesce.
	f := start(t, Config{JournalSerials: 1})
	f.populate()
	s0 := f.dns.Serial()
	z0 := keys(checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, nil), s0))

	// Three changes: an instance added, one deregistered, one failing.
	f.put(instance("calc", 4, "tcp"))
	f.del(instance("time", 2, "tcp"))
	sick := instance("calc", 1, "tcp")
	sick.Health.Status = registry.HealthCritical
	f.put(sick)
	s3 := f.dns.Serial()
	z3 := keys(checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, nil), s3))

	t.Run("journaled", func(t *testing.T) {
		rrs := transfer(t, f.addr, dns.TypeIXFR, s0, nil)
		if soaSerial(t, rrs[0]) != s3 || soaSerial(t, rrs[1]) != s0 {
			t.Fatalf("IXFR from %d begins %v, %v: want the SOAs of %d then %d", s0, rrs[0], rrs[1], s3, s0)
		}
		z := map[string]bool{}
		for k := range z0 {
			z[k] = true
		}
		if end := apply(t, z, rrs); end != s3 {
			t.Fatalf("IXFR ends at %d, want %d", end, s3)
		}
		if fmt.Sprint(sortedKeys(z)) != fmt.Sprint(sortedKeys(z3)) {
			t.Fatalf("zone at %d with the IXFR applied:\n%s\nAXFR at %d:\n%s", s0, strings.Join(sortedKeys(z), "\n"), s3, strings.Join(sortedKeys(z3), "\n"))
		}
		if len(rrs) >= len(z3) {
			t.Errorf("IXFR of %d records for 3 small changes, the zone has %d", len(rrs), len(z3))
		}
	})
	t.Run("current", func(t *testing.T) {
		for _, serial := range []uint32{s3, s3 + 5} {
			rrs := transfer(t, f.addr, dns.TypeIXFR, serial, nil)
			if len(rrs) != 1 || soaSerial(t, rrs[0]) != s3 {
				t.Fatalf("IXFR from %d (current %d): %v, want the SOA alone", serial, s3, rrs)
			}
		}
	})
	t.Run("forgotten", func(t *testing.T) {
		f.put(instance("calc", 5, "tcp")) // s0's difference is dropped for this one
		s4 := f.dns.Serial()
		z4 := keys(checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, nil), s4))
		rrs := checkAXFRShape(t, transfer(t, f.addr, dns.TypeIXFR, s0, nil), s4)
		if fmt.Sprint(sortedKeys(keys(rrs))) != fmt.Sprint(sortedKeys(z4)) {
			t.Fatalf("IXFR from a serial not journaled: want the whole zone")
		}
		// The serial after it is journaled.
		if rrs := transfer(t, f.addr, dns.TypeIXFR, s3, nil); soaSerial(t, rrs[1]) != s3 {
			t.Fatalf("IXFR from %d: %v", s3, rrs[:2])
		}
	})
	t.Run("udp", func(t *testing.T) {
		s := f.dns.Serial()
		f.put(instance("calc", 6, "tcp"))
		m := new(dns.Msg)
		m.SetIxfr(zone, s, "ns."+zone, "hostmaster."+zone)
		m.SetEdns0(1232, false)
		// Until a NOTIFY round or a TCP transfer brings the journal up to
		// date, UDP answers the SOA alone: the packet path does not wait.
		r := exchange(t, f.addr, "udp", m)
		if len(r.Answer) != 1 || soaSerial(t, r.Answer[0]) != f.dns.Serial() {
			t.Fatalf("IXFR over UDP, journal behind: %v, want the current SOA alone", r.Answer)
		}
		f.x.j.sync()
		r = exchange(t, f.addr, "udp", m)
		if len(r.Answer) < 4 || soaSerial(t, r.Answer[1]) != s {
			t.Fatalf("small IXFR over UDP: %v, want the differences", r.Answer)
		}
		m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
		r = exchange(t, f.addr, "udp", m)
		if len(r.Answer) != 1 || soaSerial(t, r.Answer[0]) != f.dns.Serial() || r.Truncated {
			t.Fatalf("IXFR over UDP that does not fit: %v, want the SOA alone", r.Answer)
		}
		m.SetAxfr(zone)
		if r = exchange(t, f.addr, "udp", m); r.Rcode != dns.RcodeFormatError {
			t.Fatalf("AXFR over UDP: %s, want FORMERR", dns.RcodeToString[r.Rcode])
		}
	})
}

func TestRefused(t *testing.T) {
	f := start(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.2/32")}})
	f.populate()
	for _, qt := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
		m := new(dns.Msg)
		if qt == dns.TypeAXFR {
			m.SetAxfr(zone)
		} else {
			m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
		}
		if r := exchange(t, f.addr, "tcp", m); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s from 127.0.0.1, not allowed: %s with %d records, want REFUSED", dns.TypeToString[qt], dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	m := new(dns.Msg)
	m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
	if r := exchange(t, f.addr, "udp", m); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("IXFR over UDP from 127.0.0.1, not allowed: %s with %d records, want REFUSED", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	// From an allowed source address, it goes through.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	nc, err := d.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &dns.Transfer{Conn: &dns.Conn{Conn: nc}}
	m = new(dns.Msg)
	m.SetAxfr(zone)
	if err := tr.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	r, err := tr.ReadMsg()
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("AXFR from 127.0.0.2, allowed: %v, %v", r, err)
	}
	_ = nc.Close()
	// A name below the zone is not a zone.
	m.SetAxfr("calc." + zone)
	if r := exchange(t, f.addr, "tcp", m); r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR of calc.%s: %s, want REFUSED", zone, dns.RcodeToString[r.Rcode])
	}
}

func TestTransfersOffByDefault(t *testing.T) {
	_, s, l := newServer(t)
	run(t, func(ctx context.Context) { _ = s.Serve(ctx, l) })
	m := new(dns.Msg)
	m.SetAxfr(zone)
	if r := exchange(t, l.Addr(), "tcp", m); r.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR without transfers: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestTSIG(t *testing.T) {
	key, err := ParseKey("xfr-key:hmac-sha256:"+"c2lnbnBvc3QgdGVzdCBrZXkgb2YgMzIgYnl0ZXMhIQ==", "test")
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, Config{Key: key})
	f.populate()
	t.Run("good", func(t *testing.T) {
		checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, key), f.dns.Serial())
		rrs := transfer(t, f.addr, dns.TypeIXFR, f.dns.Serial(), key)
		if len(rrs) != 1 {
			t.Fatalf("signed IXFR from the current serial: %v", rrs)
		}
		// A signed SOA query (a secondary's refresh) gets a signed answer.
		m := new(dns.Msg)
		m.SetQuestion(zone, dns.TypeSOA)
		m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
		for _, netw := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: netw, TsigSecret: key.secrets(), Timeout: 3 * time.Second}
			r, _, err := c.Exchange(m.Copy(), f.addr)
			if err != nil || len(r.Answer) != 1 || r.IsTsig() == nil {
				t.Fatalf("signed SOA query over %s: %v, %v", netw, r, err)
			}
		}
	})
	t.Run("many messages", func(t *testing.T) {
		f.many(2000) // some 50 messages, each signed
		rrs := checkAXFRShape(t, transfer(t, f.addr, dns.TypeAXFR, 0, key), f.dns.Serial())
		if len(rrs) < 16000 {
			t.Fatalf("signed AXFR of 2,000 instances: %d records", len(rrs))
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetAxfr(zone)
		if r := exchange(t, f.addr, "tcp", m); r.Rcode != dns.RcodeRefused {
			t.Fatalf("unsigned AXFR with a key required: %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("bad", func(t *testing.T) {
		for _, bad := range []*Key{
			{Name: key.Name, Algorithm: key.Algorithm, Secret: "d3Jvbmcgc2VjcmV0"},
			{Name: "other-key.", Algorithm: key.Algorithm, Secret: key.Secret},
		} {
			for _, netw := range []string{"tcp", "udp"} {
				m := new(dns.Msg)
				if netw == "tcp" {
					m.SetAxfr(zone)
				} else {
					m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
				}
				m.SetTsig(bad.Name, bad.Algorithm, 300, time.Now().Unix())
				c := &dns.Client{Net: netw, TsigSecret: bad.secrets(), Timeout: 3 * time.Second}
				r, _, _ := c.Exchange(m, f.addr) // the unsigned answer fails the client's check
				if r == nil || r.Rcode != dns.RcodeNotAuth || len(r.Answer) != 0 {
					t.Fatalf("%s signed with a wrong key %s over %s: %v, want NOTAUTH", dns.TypeToString[m.Question[0].Qtype], bad.Name, netw, r)
				}
				if ts := r.IsTsig(); ts == nil || (ts.Error != dns.RcodeBadSig && ts.Error != dns.RcodeBadKey) {
					t.Fatalf("NOTAUTH without the TSIG error: %v", r)
				}
			}
		}
	})
}

func TestSignedWithoutKeys(t *testing.T) {
	f := start(t, Config{})
	f.populate()
	k := &Key{Name: "xfr-key.", Algorithm: dns.HmacSHA256, Secret: "c2VjcmV0c2VjcmV0"}
	for _, netw := range []string{"tcp", "udp"} {
		m := new(dns.Msg)
		m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
		m.SetTsig(k.Name, k.Algorithm, 300, time.Now().Unix())
		c := &dns.Client{Net: netw, TsigSecret: k.secrets(), Timeout: 3 * time.Second}
		if r, _, _ := c.Exchange(m, f.addr); r == nil || r.Rcode != dns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != dns.RcodeBadKey {
			t.Errorf("IXFR over %s signed with a key the server does not have: %v, want NOTAUTH, BADKEY", netw, r)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, bad := range []string{"", "name:hmac-sha256", "name:hmac-md5:c2VjcmV0", "name:hmac-sha256:not base64!", "bad..name:hmac-sha256:c2VjcmV0"} {
		if _, err := ParseKey(bad, "test"); err == nil {
			t.Errorf("ParseKey(%q): no error", bad)
		} else if strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("ParseKey(%q): the error shows the secret: %v", bad, err)
		}
	}
	k, err := ParseKey("XFR-Key:HMAC-SHA512:c2VjcmV0", "test")
	if err != nil || k.Name != "xfr-key." || k.Algorithm != dns.HmacSHA512 {
		t.Fatalf("ParseKey: %+v, %v", k, err)
	}
}

// secondary is a fake secondary that counts the NOTIFY messages it gets
// and answers them after ignoring the first `ignore`.
type secondary struct {
	addr   netip.AddrPort
	mu     sync.Mutex
	got    []uint32
	ignore int
}

func startSecondary(t *testing.T, ignore int) *secondary {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sec := &secondary{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), ignore: ignore}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Opcode != dns.OpcodeNotify {
			return
		}
		sec.mu.Lock()
		sec.got = append(sec.got, soaSerial(t, r.Answer[0]))
		n := len(sec.got)
		sec.mu.Unlock()
		if n <= sec.ignore {
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return sec
}

func (s *secondary) notifies() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.got...)
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNotifyOnceForABurst(t *testing.T) {
	sec := startSecondary(t, 0)
	f := start(t, Config{Notify: []netip.AddrPort{sec.addr}, NotifyDelay: 300 * time.Millisecond})
	for i := range 50 {
		f.put(instance("calc", i, "tcp"))
	}
	want := f.dns.Serial()
	waitFor(t, "a NOTIFY", 5*time.Second, func() bool { return len(sec.notifies()) > 0 })
	time.Sleep(time.Second) // nothing more should come
	if got := sec.notifies(); len(got) != 1 || got[0] != want {
		t.Fatalf("NOTIFY serials %v for a burst of 50 changes, want one, of %d", got, want)
	}
	// A later change is notified again.
	f.put(instance("calc", 99, "tcp"))
	waitFor(t, "a second NOTIFY", 5*time.Second, func() bool { return len(sec.notifies()) == 2 })
}

func TestNotifyRetried(t *testing.T) {
	for _, c := range []struct {
		what   string
		ignore int // NOTIFY messages the secondary leaves unanswered
		want   int
	}{
		{"answered at the third try", 2, 3},
		{"never answered: NotifyTries, no more", 1000, 4},
	} {
		t.Run(c.what, func(t *testing.T) {
			sec := startSecondary(t, c.ignore)
			f := start(t, Config{Notify: []netip.AddrPort{sec.addr}, NotifyDelay: 50 * time.Millisecond, NotifyTimeout: 150 * time.Millisecond, NotifyTries: 4})
			f.put(instance("calc", 1, "tcp"))
			waitFor(t, "the NOTIFY tries", 5*time.Second, func() bool { return len(sec.notifies()) >= c.want })
			time.Sleep(600 * time.Millisecond)
			if got := sec.notifies(); len(got) != c.want {
				t.Fatalf("%d NOTIFY sent, want %d", len(got), c.want)
			}
		})
	}
}

// many registers n instances in services of 100.
func (f *fixture) many(n int) {
	ins := make([]registry.Instance, n)
	for i := range ins {
		ins[i] = instance(fmt.Sprintf("svc%03d", i/100), i, "tcp")
		ins[i].ID = fmt.Sprintf("%s-5f2c1d9e8a7b6c5d4e3f2a", ins[i].ID)[:28]
	}
	f.put(ins...)
}

// TestSlowReaderCut holds a transfer without reading it: a second one is
// refused while it runs (MaxTransfers 1), and the server cuts it at the
// write timeout, freeing its slot.
func TestSlowReaderCut(t *testing.T) {
	f := start(t, Config{Timeout: 10 * time.Second, WriteTimeout: time.Second, MaxTransfers: 1})
	f.many(8000) // 6 MiB: more than the socket buffers take
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m := new(dns.Msg)
	m.SetAxfr(zone)
	if err := (&dns.Conn{Conn: nc}).WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the transfer to start", 5*time.Second, func() bool { return value(f.x.metrics.active) == 1 })
	if r := exchange(t, f.addr, "tcp", m); r.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR while another runs, with --xfr-max-transfers 1: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	waitFor(t, "the slow transfer to be cut", 5*time.Second, func() bool {
		return value(f.x.metrics.requests.WithLabelValues("failed")) == 1 && value(f.x.metrics.active) == 0
	})
	_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("cut transfer connection still open after %d bytes", n)
	}
	full := 0
	for _, rr := range transfer(t, f.addr, dns.TypeAXFR, 0, nil) {
		full += dns.Len(rr)
	}
	if int(n) >= full {
		t.Fatalf("the slow reader got %d bytes, the whole zone is %d", n, full)
	}
}

// TestTransferFigures measures a zone of 10,000 instances: AXFR, and an
// IXFR of one change.
func TestTransferFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("figures")
	}
	f := start(t, Config{})
	f.many(10000)
	start := time.Now()
	rrs := transfer(t, f.addr, dns.TypeAXFR, 0, nil)
	took := time.Since(start)
	bytes := 0
	for _, rr := range rrs {
		bytes += dns.Len(rr)
	}
	s0 := f.dns.Serial()
	in := instance("svc007", 700, "tcp")
	in.ID = "svc007-700-5f2c1d9e8a7b6c5d4"[:28]
	in.Health.Status = registry.HealthCritical
	f.put(in)
	start = time.Now()
	ixfr := transfer(t, f.addr, dns.TypeIXFR, s0, nil)
	t.Logf("AXFR of 10,000 instances in 100 services: %d records, %d KiB uncompressed, %s; IXFR of one instance failing: %d records, %s",
		len(rrs), bytes>>10, took.Round(time.Millisecond), len(ixfr), time.Since(start).Round(time.Microsecond))
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return -1
	}
	if pb.Counter != nil {
		return pb.Counter.GetValue()
	}
	return pb.Gauge.GetValue()
}
