package dnsserver

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// newTestServer returns a server over an index holding a few services.
func newTestServer(tb testing.TB, n int) *Server {
	tb.Helper()
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{FailOpen: true, NSAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, ix)
	if err != nil {
		tb.Fatal(err)
	}
	var evs []registry.Event
	rev := int64(0)
	for i := 0; i < n; i++ {
		for j := 0; j < 3; j++ {
			rev++
			in := registry.Instance{
				ID: fmt.Sprintf("i%d-%d", i, j), Service: fmt.Sprintf("svc%d", i), Protocol: "tcp",
				Address: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}), Port: uint16(8000 + j),
				Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
				Meta: map[string]string{"k": "v"}, Tags: [][]string{{"blue"}, {"blue", "Green", "not a name"}, {"green"}}[j],
			}
			if j == 2 {
				in.Address = netip.MustParseAddr(fmt.Sprintf("fd00::%x:%x", i, j))
			}
			evs = append(evs, registry.Event{Type: registry.EventPut, Rev: rev, Instance: in})
		}
	}
	// Two services too large for UDP: equal weights (rotation) and mixed
	// weights (weighted orders).
	for _, svc := range []string{"big", "wbig"} {
		for j := 0; j < 40; j++ {
			rev++
			in := registry.Instance{
				ID: fmt.Sprintf("%s-instance-%02d", svc, j), Service: svc, Protocol: "tcp",
				Address: netip.AddrFrom4([4]byte{10, 200, byte(len(svc)), byte(j + 1)}), Port: uint16(9000 + j),
				Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
			}
			if svc == "wbig" {
				in.Weight = uint16(1 + j%5)
			}
			evs = append(evs, registry.Event{Type: registry.EventPut, Rev: rev, Instance: in})
		}
	}
	ix.Apply(evs)
	return s
}

func packQuery(tb testing.TB, name string, qtype uint16, edns uint16, tweak func(*dns.Msg)) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, true)
	}
	if tweak != nil {
		tweak(m)
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatalf("pack %s: %v", name, err)
	}
	return b
}

// FuzzRespond feeds arbitrary packets to the answer path. Whatever comes
// in, it must not crash, and any answer must be a well-formed DNS message
// with the query's ID that fits the transport.
func FuzzRespond(f *testing.F) {
	z := "servicediscovery.internal."
	seeds := [][]byte{
		packQuery(f, "svc1."+z, dns.TypeSRV, 0, nil),
		packQuery(f, "_svc1._tcp."+z, dns.TypeSRV, 1232, nil),
		packQuery(f, "SVC2."+z, dns.TypeA, 4096, nil),
		packQuery(f, "i1-0.svc1."+z, dns.TypeTXT, 0, nil),
		packQuery(f, "i1-0._svc1._tcp."+z, dns.TypeSRV, 0, nil),
		packQuery(f, "_services._dns-sd._udp."+z, dns.TypePTR, 0, nil),
		packQuery(f, z, dns.TypeSOA, 0, nil),
		packQuery(f, z, dns.TypeNS, 0, nil),
		packQuery(f, "nope."+z, dns.TypeA, 0, nil),
		packQuery(f, "big."+z, dns.TypeSRV, 0, nil),
		packQuery(f, "_big._tcp."+z, dns.TypeSRV, 1232, nil),
		packQuery(f, "wbig."+z, dns.TypeA, 0, nil),
		packQuery(f, "_wbig._tcp."+z, dns.TypePTR, 700, nil),
		packQuery(f, "_dns-sd._udp."+z, dns.TypePTR, 0, nil),
		packQuery(f, "_blue._sub._svc1._tcp."+z, dns.TypePTR, 0, nil),
		packQuery(f, "_GREEN._sub._svc1._tcp."+z, dns.TypeANY, 1232, nil),
		packQuery(f, "_blue._svc1._tcp."+z, dns.TypeSRV, 0, nil),
		packQuery(f, "blue.tag.svc1."+z, dns.TypeSRV, 1232, nil),
		packQuery(f, "green.tag.svc2."+z, dns.TypeAAAA, 0, nil),
		packQuery(f, "nope.tag.svc1."+z, dns.TypeA, 0, nil),
		packQuery(f, "tag.svc1."+z, dns.TypeA, 0, nil),
		packQuery(f, "_sub._svc1._tcp."+z, dns.TypePTR, 0, nil),
		packQuery(f, "_blue._sub._big._tcp."+z, dns.TypePTR, 0, nil),
		packQuery(f, "_x._sub._svc1._udp."+z, dns.TypePTR, 0, nil),
		packQuery(f, "example.com.", dns.TypeA, 0, nil),
		packQuery(f, "svc1."+z, dns.TypeANY, 0, nil),
		packQuery(f, "svc1."+z, dns.TypeA, 1232, func(m *dns.Msg) { m.IsEdns0().SetVersion(1) }),
		packQuery(f, "svc1."+z, dns.TypeA, 0, func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }),
		packQuery(f, "svc1."+z, dns.TypeA, 0, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }),
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},    // pointer loop in the question
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 41}, // cut OPT
		{1, 2, 3},
		{},
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	s := newTestServer(f, 20)
	out := make([]byte, 65536+optLen)
	f.Fuzz(func(t *testing.T, req []byte, tcp bool) {
		resp := s.respond(req, out, tcp)
		if resp == nil {
			return
		}
		limit := 65535
		if !tcp {
			limit = s.cfg.MaxUDPSize
		}
		if len(resp) > limit+optLen {
			t.Fatalf("answer of %d bytes over the %d limit", len(resp), limit)
		}
		if resp[0] != req[0] || resp[1] != req[1] {
			t.Fatalf("answer ID %x, query ID %x", resp[:2], req[:2])
		}
		m := new(dns.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("answer does not parse: %v\nquery %x\nanswer %x", err, req, resp)
		}
		if !m.Response {
			t.Fatalf("answer without QR")
		}
	})
}

func TestRespondMatchesWhatWasAsked(t *testing.T) {
	s := newTestServer(t, 3)
	out := make([]byte, 65536+optLen)
	req := packQuery(t, "SvC1.servicediscovery.internal.", dns.TypeSRV, 0, nil)
	m := new(dns.Msg)
	if err := m.Unpack(s.respond(req, out, false)); err != nil {
		t.Fatal(err)
	}
	if m.Question[0].Name != "SvC1.servicediscovery.internal." || len(m.Answer) != 3 || len(m.Extra) != 3 {
		t.Fatalf("%v", m)
	}
}

func BenchmarkRespond(b *testing.B) {
	s := newTestServer(b, 1000)
	z := "servicediscovery.internal."
	reqs := map[string][]byte{
		"SRV":      packQuery(b, "svc500."+z, dns.TypeSRV, 0, nil),
		"A":        packQuery(b, "svc500."+z, dns.TypeA, 0, nil),
		"_tcp SRV": packQuery(b, "_svc500._tcp."+z, dns.TypeSRV, 1232, nil),
		"NXDOMAIN": packQuery(b, "nope."+z, dns.TypeA, 0, nil),
		"tag SRV":  packQuery(b, "blue.tag.svc500."+z, dns.TypeSRV, 0, nil),
		"subtype":  packQuery(b, "_blue._sub._svc500._tcp."+z, dns.TypePTR, 0, nil),
		"REFUSED":  packQuery(b, "example.com.", dns.TypeA, 0, nil),
	}
	for name, req := range reqs {
		b.Run(name, func(b *testing.B) {
			out := make([]byte, 65536+optLen)
			s.respond(req, out, false) // pack once
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.respond(req, out, false) == nil {
					b.Fatal("no answer")
				}
			}
		})
	}
}
