package server_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
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

// testServer is a real signpost server on random loopback ports, with an
// API client.
type testServer struct {
	*signposttest.Server
	client *apiclient.Client
}

func startServer(t *testing.T, mutate func(*server.Config)) *testServer {
	t.Helper()
	cfg := server.Config{DNS: dnsserver.Config{FailOpen: true}}
	if mutate != nil {
		mutate(&cfg)
	}
	ts := &testServer{Server: signposttest.Start(t, cfg)}
	tok := ""
	if cfg.TokenFile != "" {
		tok, _ = server.ReadToken(cfg.TokenFile)
	}
	var err error
	if ts.client, err = apiclient.New(ts.URL(), tok); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "server healthy", func() bool {
		synced, _, err := ts.Index().Status()
		return synced && err == nil
	})
	return ts
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (ts *testServer) register(t *testing.T, in registry.Instance) {
	t.Helper()
	if _, err := ts.client.Register(context.Background(), in); err != nil {
		t.Fatalf("register %s: %v", in.ID, err)
	}
}

func inst(id, svc, addr string, port uint16) registry.Instance {
	return registry.Instance{ID: id, Service: svc, Address: netip.MustParseAddr(addr), Port: port}
}

// ask sends one query over net ("udp" or "tcp") and returns the answer.
func (ts *testServer) ask(t *testing.T, netw, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, ts.DNSAddr())
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], netw, err)
	}
	if r.Id != m.Id {
		t.Fatalf("answer ID %d for query ID %d", r.Id, m.Id)
	}
	if !r.Response {
		t.Fatalf("answer to %s has QR unset", name)
	}
	return r
}

func rcode(r *dns.Msg) string { return dns.RcodeToString[r.Rcode] }

func records[T dns.RR](rrs []dns.RR) []T {
	var out []T
	for _, rr := range rrs {
		if v, ok := rr.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestDNSAnswers(t *testing.T) {
	ts := startServer(t, nil)
	calc1 := inst("calc-1", "calc", "10.1.0.1", 32768)
	calc1.Meta = map[string]string{"version": "1.2", "team": "maths"}
	calc1.Tags = []string{"blue"}
	calc2 := inst("calc-2", "calc", "10.1.0.2", 32769)
	calc3 := inst("calc-3", "calc", "10.1.0.2", 32770) // same host as calc-2
	calc6 := inst("calc-6", "calc", "fd00::6", 8081)
	ts.register(t, calc1)
	ts.register(t, calc2)
	ts.register(t, calc3)
	ts.register(t, calc6)
	dnsUDP := inst("resolver-1", "_resolver._udp", "10.1.0.9", 53)
	ts.register(t, dnsUDP)

	for _, netw := range []string{"udp", "tcp"} {
		t.Run(netw, func(t *testing.T) {
			for _, name := range []string{"calc." + zone, "_calc._tcp." + zone} {
				r := ts.ask(t, netw, name, dns.TypeSRV, 0)
				if rcode(r) != "NOERROR" || !r.Authoritative {
					t.Fatalf("%s SRV: rcode %s aa=%v", name, rcode(r), r.Authoritative)
				}
				srvs := records[*dns.SRV](r.Answer)
				if len(srvs) != 4 {
					t.Fatalf("%s SRV: %d records, want 4:\n%v", name, len(srvs), r)
				}
				glue := map[string]bool{}
				for _, rr := range r.Extra {
					glue[rr.Header().Name] = true
				}
				ports := map[uint16]bool{}
				for _, s := range srvs {
					ports[s.Port] = true
					if !glue[s.Target] {
						t.Errorf("%s SRV: no glue for target %s", name, s.Target)
					}
					// Every SRV target resolves on its own.
					want := dns.TypeA
					if s.Port == 8081 {
						want = dns.TypeAAAA
					}
					tr := ts.ask(t, netw, s.Target, want, 0)
					if len(tr.Answer) != 1 {
						t.Errorf("target %s %s: %v", s.Target, dns.TypeToString[want], tr)
					}
				}
				for _, p := range []uint16{32768, 32769, 32770, 8081} {
					if !ports[p] {
						t.Errorf("%s SRV: port %d missing", name, p)
					}
				}
			}
			r := ts.ask(t, netw, "calc."+zone, dns.TypeA, 0)
			as := records[*dns.A](r.Answer)
			if len(as) != 2 {
				t.Fatalf("calc A: want 2 distinct addresses, got %v", r.Answer)
			}
			r = ts.ask(t, netw, "calc."+zone, dns.TypeAAAA, 0)
			if aaaa := records[*dns.AAAA](r.Answer); len(aaaa) != 1 || aaaa[0].AAAA.String() != "fd00::6" {
				t.Fatalf("calc AAAA: %v", r.Answer)
			}
			r = ts.ask(t, netw, "calc-1.calc."+zone, dns.TypeTXT, 0)
			txt := records[*dns.TXT](r.Answer)
			if len(txt) != 1 || strings.Join(txt[0].Txt, " ") != "team=maths version=1.2 tags=blue" {
				t.Fatalf("calc-1 TXT: %v", r.Answer)
			}
			r = ts.ask(t, netw, "calc-1._calc._tcp."+zone, dns.TypeTXT, 0)
			if len(records[*dns.TXT](r.Answer)) != 1 {
				t.Fatalf("DNS-SD TXT: %v", r)
			}
			r = ts.ask(t, netw, "calc-1._calc._tcp."+zone, dns.TypeSRV, 0)
			if s := records[*dns.SRV](r.Answer); len(s) != 1 || s[0].Port != 32768 || len(r.Extra) != 1 {
				t.Fatalf("DNS-SD SRV: %v", r)
			}
			r = ts.ask(t, netw, "_services._dns-sd._udp."+zone, dns.TypePTR, 0)
			var browse []string
			for _, p := range records[*dns.PTR](r.Answer) {
				browse = append(browse, p.Ptr)
			}
			sort.Strings(browse) // the list rotates like any other
			if strings.Join(browse, " ") != "_calc._tcp."+zone+" _resolver._udp."+zone {
				t.Fatalf("browse PTR: %v", browse)
			}
			r = ts.ask(t, netw, "_calc._tcp."+zone, dns.TypePTR, 0)
			if len(records[*dns.PTR](r.Answer)) != 4 {
				t.Fatalf("service PTR: %v", r)
			}
			r = ts.ask(t, netw, "_resolver._udp."+zone, dns.TypeSRV, 0)
			if s := records[*dns.SRV](r.Answer); len(s) != 1 || s[0].Port != 53 {
				t.Fatalf("udp SRV: %v", r)
			}
			if r := ts.ask(t, netw, "_resolver._tcp."+zone, dns.TypeSRV, 0); rcode(r) != "NXDOMAIN" {
				t.Fatalf("tcp name of a udp-only service: %s", rcode(r))
			}
			r = ts.ask(t, netw, zone, dns.TypeSOA, 0)
			if soa := records[*dns.SOA](r.Answer); len(soa) != 1 || soa[0].Ns != "ns."+zone {
				t.Fatalf("apex SOA: %v", r)
			}
			r = ts.ask(t, netw, zone, dns.TypeNS, 0)
			if ns := records[*dns.NS](r.Answer); len(ns) != 1 || len(r.Extra) != 1 {
				t.Fatalf("apex NS with glue: %v", r)
			}
			if r := ts.ask(t, netw, "ns."+zone, dns.TypeA, 0); len(r.Answer) != 1 {
				t.Fatalf("ns A: %v", r)
			}
		})
	}
}

func TestDNSNegativeAnswers(t *testing.T) {
	ts := startServer(t, func(c *server.Config) { c.DNS.NegTTL = 7 })
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 32768))
	cases := []struct {
		name  string
		qtype uint16
		want  string
		soa   bool
	}{
		{"nope." + zone, dns.TypeA, "NXDOMAIN", true},
		{"x.nope." + zone, dns.TypeSRV, "NXDOMAIN", true},
		{"calc-9.calc." + zone, dns.TypeA, "NXDOMAIN", true},
		{"_calc._udp." + zone, dns.TypeSRV, "NXDOMAIN", true},
		{"calc." + zone, dns.TypeTXT, "NOERROR", true},         // NODATA
		{"calc." + zone, dns.TypeAAAA, "NOERROR", true},        // NODATA: v4 only
		{"calc-1.calc." + zone, dns.TypeAAAA, "NOERROR", true}, // NODATA
		{"_tcp." + zone, dns.TypeA, "NOERROR", true},           // empty non-terminal
		{"_dns-sd._udp." + zone, dns.TypePTR, "NOERROR", true}, // empty non-terminal (RFC 8020)
		{zone, dns.TypeA, "NOERROR", true},                     // apex NODATA
		{"example.com.", dns.TypeA, "REFUSED", false},          // never an open resolver
		{"internal.", dns.TypeSOA, "REFUSED", false},           // parent of the zone
		{"xservicediscovery.internal.", dns.TypeA, "REFUSED", false},
		{"1.0.1.10.in-addr.arpa.", dns.TypePTR, "REFUSED", false},
		{zone, dns.TypeAXFR, "REFUSED", false},
	}
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range cases {
			if c.qtype == dns.TypeAXFR && netw == "udp" {
				continue
			}
			r := ts.ask(t, netw, c.name, c.qtype, 0)
			if rcode(r) != c.want {
				t.Errorf("%s %s %s: rcode %s, want %s", netw, c.name, dns.TypeToString[c.qtype], rcode(r), c.want)
				continue
			}
			if len(r.Answer) != 0 {
				t.Errorf("%s %s: answers %v", netw, c.name, r.Answer)
			}
			soa := records[*dns.SOA](r.Ns)
			if c.soa != (len(soa) == 1) {
				t.Errorf("%s %s %s: SOA in authority %v, want %v", netw, c.name, dns.TypeToString[c.qtype], r.Ns, c.soa)
			}
			if c.soa && len(soa) == 1 && (soa[0].Hdr.Name != zone || soa[0].Minttl != 7 || soa[0].Hdr.Ttl != 7) {
				t.Errorf("%s: SOA %v", c.name, soa[0])
			}
			if !c.soa && r.Authoritative {
				t.Errorf("%s: REFUSED answer claims authority", c.name)
			}
		}
	}
}

func TestDNSCaseEchoed(t *testing.T) {
	ts := startServer(t, nil)
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 32768))
	for _, name := range []string{"CaLc.ServiceDiscovery.INTERNAL.", "_CALC._TCP.servicediscovery.internal.", "NoPe.servicediscovery.internal."} {
		for _, netw := range []string{"udp", "tcp"} {
			r := ts.ask(t, netw, name, dns.TypeSRV, 0)
			if r.Question[0].Name != name {
				t.Errorf("question echoed as %q, asked %q", r.Question[0].Name, name)
			}
			if strings.HasPrefix(name, "NoPe") {
				if rcode(r) != "NXDOMAIN" {
					t.Errorf("%s: %s", name, rcode(r))
				}
			} else if len(r.Answer) != 1 {
				t.Errorf("%s: %v", name, r)
			}
		}
	}
}

func TestDNSTruncationAndEDNS(t *testing.T) {
	ts := startServer(t, nil)
	// 40 instances: the SRV answer with glue is about 3 KB.
	for i := 0; i < 40; i++ {
		ts.register(t, inst(fmt.Sprintf("big-%02d", i), "big", fmt.Sprintf("10.2.0.%d", i+1), uint16(20000+i)))
	}
	// What does not fit in UDP comes back truncated (TC) with as many whole
	// records as fit, rotating like any answer (RFC 2181 s9), and no glue:
	// 512 bytes without EDNS, the client's EDNS size capped at 1232.
	seen := map[string]bool{}
	for _, c := range []struct {
		edns     uint16
		size     int
		min, max int
	}{{0, 512, 5, 10}, {1232, 1232, 12, 25}, {4096, 1232, 12, 25}} {
		for q := 0; q < 8; q++ {
			r := ts.ask(t, "udp", "big."+zone, dns.TypeSRV, c.edns)
			srvs := records[*dns.SRV](r.Answer)
			if !r.Truncated || len(srvs) < c.min || len(srvs) > c.max || len(r.Extra) > 1 {
				t.Fatalf("UDP, EDNS %d: tc=%v answers=%d extra=%d", c.edns, r.Truncated, len(srvs), len(r.Extra))
			}
			if c.edns > 0 && (r.IsEdns0() == nil || r.IsEdns0().UDPSize() != 1232) {
				t.Fatalf("EDNS %d: OPT %v", c.edns, r.IsEdns0())
			}
			r.Compress = true
			if n := r.Len(); n > c.size {
				t.Fatalf("EDNS %d: %d bytes over %d", c.edns, n, c.size)
			}
			for _, s := range srvs {
				seen[s.Target] = true
			}
		}
	}
	if len(seen) < 30 {
		t.Errorf("truncated answers rotate: %d of 40 targets seen in 24 answers", len(seen))
	}
	r := ts.ask(t, "tcp", "big."+zone, dns.TypeSRV, 0)
	if r.Truncated || len(records[*dns.SRV](r.Answer)) != 40 || len(r.Extra) != 40 {
		t.Fatalf("TCP: tc=%v answers=%d extra=%d", r.Truncated, len(r.Answer), len(r.Extra))
	}
	// A answers: 40 addresses of 16 bytes: no fit in 512, fits 1232.
	r = ts.ask(t, "udp", "big."+zone, dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) < 20 {
		t.Fatalf("A over plain UDP: tc=%v answers=%d", r.Truncated, len(r.Answer))
	}
	r = ts.ask(t, "udp", "big."+zone, dns.TypeA, 1232)
	if r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("A over EDNS: tc=%v answers=%d", r.Truncated, len(r.Answer))
	}
	// An answer that fits without its glue drops the glue, not the answer
	// (SRV targets are never compressed, RFC 2782).
	for i := 0; i < 7; i++ {
		ts.register(t, inst(fmt.Sprintf("mid-%02d", i), "mid", fmt.Sprintf("10.3.0.%d", i+1), uint16(30000+i)))
	}
	r = ts.ask(t, "udp", "mid."+zone, dns.TypeSRV, 0)
	if r.Truncated || len(r.Answer) != 7 || len(r.Extra) != 0 {
		t.Fatalf("mid over 512: tc=%v answers=%d extra=%d", r.Truncated, len(r.Answer), len(r.Extra))
	}
	r = ts.ask(t, "udp", "mid."+zone, dns.TypeSRV, 1232)
	if r.Truncated || len(r.Answer) != 7 || len(r.Extra) != 8 { // 7 glue + OPT
		t.Fatalf("mid over EDNS: tc=%v answers=%d extra=%d", r.Truncated, len(r.Answer), len(r.Extra))
	}
}

// raw sends raw bytes over UDP and returns the raw answer, or nil when the
// server stays silent for a while.
func raw(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestDNSProtocolEdges(t *testing.T) {
	ts := startServer(t, nil)
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 32768))

	// ANY: one RRset, minimal (RFC 8482).
	r := ts.ask(t, "udp", "calc."+zone, dns.TypeANY, 0)
	if rcode(r) != "NOERROR" || len(r.Answer) != 1 {
		t.Fatalf("ANY: %v", r)
	}
	// Other opcodes: NOTIMP.
	m := new(dns.Msg)
	m.SetNotify(zone)
	out, _ := m.Pack()
	resp := new(dns.Msg)
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeNotImplemented || resp.Opcode != dns.OpcodeNotify {
		t.Fatalf("NOTIFY: %v", resp)
	}
	m = new(dns.Msg)
	m.SetUpdate(zone)
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("UPDATE: %v", resp)
	}
	// Two questions: FORMERR.
	m = new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	m.Question = append(m.Question, dns.Question{Name: "calc." + zone, Qtype: dns.TypeSRV, Qclass: dns.ClassINET})
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: %v", resp)
	}
	// EDNS version 1: BADVERS.
	m = new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	m.SetEdns0(1232, true)
	m.IsEdns0().SetVersion(1)
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %v", resp)
	}
	// The DO bit is echoed.
	m = new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	m.SetEdns0(1232, true)
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.IsEdns0() == nil || !resp.IsEdns0().Do() || len(resp.Answer) != 1 {
		t.Fatalf("DO bit: %v", resp)
	}
	// Responses and runts: dropped; the server keeps answering.
	m = new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	m.Response = true
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b != nil {
		t.Fatalf("answered a response")
	}
	if b := raw(t, ts.DNSAddr(), []byte{1, 2, 3}); b != nil {
		t.Fatalf("answered a 3-byte packet")
	}
	// A truncated question: FORMERR.
	m = new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out[:len(out)-3]); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeFormatError {
		t.Fatalf("cut question: %v", b)
	}
	// Class CH: REFUSED.
	m = new(dns.Msg)
	m.SetQuestion("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	out, _ = m.Pack()
	if b := raw(t, ts.DNSAddr(), out); b == nil || resp.Unpack(b) != nil || resp.Rcode != dns.RcodeRefused {
		t.Fatalf("CH class: %v", resp)
	}
	if r := ts.ask(t, "udp", "calc."+zone, dns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("server stopped answering after bad packets: %v", r)
	}
}

func TestDNSRoundRobinAndWeights(t *testing.T) {
	ts := startServer(t, nil)
	for i := 1; i <= 3; i++ {
		ts.register(t, inst(fmt.Sprintf("rr-%d", i), "rr", fmt.Sprintf("10.4.0.%d", i), 80))
	}
	first := map[string]int{}
	for i := 0; i < 30; i++ {
		r := ts.ask(t, "udp", "rr."+zone, dns.TypeA, 0)
		first[records[*dns.A](r.Answer)[0].A.String()]++
	}
	for ip, n := range first {
		if n != 10 {
			t.Errorf("equal weights: %s came first %d times of 30, want 10 (%v)", ip, n, first)
		}
	}
	heavy := inst("w-heavy", "w", "10.5.0.1", 80)
	heavy.Weight = 9
	ts.register(t, heavy)
	ts.register(t, inst("w-light", "w", "10.5.0.2", 80))
	heavyFirst := 0
	const n = 640
	for i := 0; i < n; i++ {
		r := ts.ask(t, "udp", "w."+zone, dns.TypeA, 0)
		if records[*dns.A](r.Answer)[0].A.String() == "10.5.0.1" {
			heavyFirst++
		}
	}
	// Weight 9 against 1: first about 90% of the time.
	if heavyFirst < n*75/100 || heavyFirst > n*98/100 {
		t.Errorf("weight 9 vs 1: heavy first %d of %d", heavyFirst, n)
	}
	r := ts.ask(t, "udp", "w."+zone, dns.TypeSRV, 0)
	for _, s := range records[*dns.SRV](r.Answer) {
		if strings.HasPrefix(s.Target, "w-heavy.") && s.Weight != 9 {
			t.Errorf("SRV weight %d, want 9", s.Weight)
		}
	}
}

func TestDNSHealthAndFailOpen(t *testing.T) {
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail-open=%v", failOpen), func(t *testing.T) {
			ts := startServer(t, func(c *server.Config) { c.DNS.FailOpen = failOpen })
			ok := inst("h-ok", "h", "10.6.0.1", 80)
			bad := inst("h-bad", "h", "10.6.0.2", 80)
			bad.Health.Status = registry.HealthCritical
			pending := inst("h-new", "h", "10.6.0.3", 80)
			pending.Health.Status = registry.HealthPending
			ts.register(t, ok)
			ts.register(t, bad)
			ts.register(t, pending)
			r := ts.ask(t, "udp", "h."+zone, dns.TypeSRV, 0)
			if s := records[*dns.SRV](r.Answer); len(s) != 1 || !strings.HasPrefix(s[0].Target, "h-ok.") {
				t.Fatalf("only the passing instance should be served: %v", r.Answer)
			}
			ok.Health.Status = registry.HealthCritical
			ts.register(t, ok)
			r = ts.ask(t, "udp", "h."+zone, dns.TypeSRV, 0)
			got := len(records[*dns.SRV](r.Answer))
			if failOpen && got != 2 {
				t.Fatalf("fail open: want both critical instances, got %v", r.Answer)
			}
			if !failOpen && (got != 0 || rcode(r) != "NOERROR" || len(records[*dns.SOA](r.Ns)) != 1) {
				t.Fatalf("fail closed: want NODATA, got %v", r)
			}
		})
	}
}

func TestDNSFollowsChanges(t *testing.T) {
	ts := startServer(t, nil)
	ts.register(t, inst("c-1", "c", "10.7.0.1", 80))
	if r := ts.ask(t, "udp", "c."+zone, dns.TypeSRV, 0); len(r.Answer) != 1 {
		t.Fatalf("after register: %v", r)
	}
	// The registration is answered as soon as the API acknowledged it.
	moved := inst("c-1", "c", "10.7.0.1", 81)
	ts.register(t, moved)
	if r := ts.ask(t, "udp", "c."+zone, dns.TypeSRV, 0); records[*dns.SRV](r.Answer)[0].Port != 81 {
		t.Fatalf("after update: %v", r)
	}
	before := records[*dns.SOA](ts.ask(t, "udp", zone, dns.TypeSOA, 0).Answer)[0].Serial
	if _, err := ts.client.Deregister(context.Background(), "c-1"); err != nil {
		t.Fatal(err)
	}
	if r := ts.ask(t, "udp", "c."+zone, dns.TypeSRV, 0); rcode(r) != "NXDOMAIN" {
		t.Fatalf("after deregister: %v", r)
	}
	after := records[*dns.SOA](ts.ask(t, "udp", zone, dns.TypeSOA, 0).Answer)[0].Serial
	if after <= before {
		t.Fatalf("SOA serial did not move: %d -> %d", before, after)
	}
}

// TestDig asks the real dig, where installed (CI installs it).
func TestDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		if ciRequired() {
			t.Fatal("dig not installed, and CI requires it")
		}
		t.Skip("SKIPPED LOUDLY: dig is not installed (apt-get install dnsutils)")
	}
	ts := startServer(t, nil)
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 32768))
	host, port, _ := net.SplitHostPort(ts.DNSAddr())
	run := func(args ...string) string {
		out, err := exec.Command(dig, append([]string{"@" + host, "-p", port, "+time=3", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("+short", "calc.servicediscovery.internal", "SRV"); strings.TrimSpace(out) != "0 1 32768 calc-1.calc.servicediscovery.internal." {
		t.Errorf("dig SRV: %q", out)
	}
	if out := run("+short", "+tcp", "_calc._tcp.servicediscovery.internal", "SRV"); strings.TrimSpace(out) != "0 1 32768 calc-1.calc.servicediscovery.internal." {
		t.Errorf("dig +tcp SRV: %q", out)
	}
	if out := run("+short", "calc-1.calc.servicediscovery.internal", "A"); strings.TrimSpace(out) != "10.1.0.1" {
		t.Errorf("dig A: %q", out)
	}
	// Tags: the DNS-SD subtype, the RFC 2782 form and the plain name.
	blue := inst("calc-2", "calc", "10.1.0.2", 32769)
	blue.Tags = []string{"Blue", "not a name"}
	ts.register(t, blue)
	for _, c := range []struct{ args, want string }{
		{"_blue._sub._calc._tcp.servicediscovery.internal PTR", "calc-2._calc._tcp.servicediscovery.internal."},
		{"+tcp _blue._calc._tcp.servicediscovery.internal SRV", "0 1 32769 calc-2.calc.servicediscovery.internal."},
		{"blue.tag.calc.servicediscovery.internal SRV", "0 1 32769 calc-2.calc.servicediscovery.internal."},
		{"BLUE.tag.calc.servicediscovery.internal A", "10.1.0.2"},
	} {
		if out := run(append([]string{"+short"}, strings.Fields(c.args)...)...); strings.TrimSpace(out) != c.want {
			t.Errorf("dig %s: %q, want %q", c.args, out, c.want)
		}
	}
	if out := run("blue.tag.calc.servicediscovery.internal", "SRV"); !regexp.MustCompile(`ADDITIONAL SECTION:\ncalc-2\.calc\.servicediscovery\.internal\.\s+5\s+IN\s+A\s+10\.1\.0\.2\n`).MatchString(out) {
		t.Errorf("dig tag SRV: want the target's A in Additional:\n%s", out)
	}
	if out := run("_red._sub._calc._tcp.servicediscovery.internal", "PTR"); !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "SOA") {
		t.Errorf("dig unknown tag: %s", out)
	}
	if out := run("blue.tag.calc.servicediscovery.internal", "TXT"); !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0,") || !strings.Contains(out, "SOA") {
		t.Errorf("dig tag name, other type: %s", out)
	}
	if out := run("nope.servicediscovery.internal", "A"); !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "SOA") {
		t.Errorf("dig NXDOMAIN: %s", out)
	}
	if out := run("example.com", "A"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("dig outside the zone: %s", out)
	}
	if out := run("+bufsize=512", "+ignore", "calc.servicediscovery.internal", "SRV"); !strings.Contains(out, "flags: qr aa") {
		t.Errorf("dig flags: %s", out)
	}
	// 40 instances: UDP answers are truncated (TC) and carry whole
	// records; dig +tcp gets all 40.
	for i := 0; i < 40; i++ {
		ts.register(t, inst(fmt.Sprintf("big-%02d", i), "big", fmt.Sprintf("10.2.0.%d", i+1), uint16(20000+i)))
	}
	answers := regexp.MustCompile(`ANSWER: (\d+),`)
	for _, size := range []string{"+bufsize=512", "+bufsize=1232", "+noedns"} {
		out := run(size, "+ignore", "big.servicediscovery.internal", "SRV")
		m := answers.FindStringSubmatch(out)
		if !strings.Contains(out, "flags: qr aa tc") || m == nil || m[1] == "0" || m[1] == "40" {
			t.Errorf("dig %s: want TC with some whole records:\n%s", size, out)
		}
		if strings.Contains(out, "Warning") || strings.Contains(out, "malformed") {
			t.Errorf("dig %s complains:\n%s", size, out)
		}
	}
	out := run("+tcp", "big.servicediscovery.internal", "SRV")
	if m := answers.FindStringSubmatch(out); m == nil || m[1] != "40" || strings.Contains(out, " tc") {
		t.Errorf("dig +tcp: want all 40:\n%s", out)
	}
	// Without +ignore, dig retries over TCP by itself.
	if out := run("+short", "big.servicediscovery.internal", "SRV"); len(strings.Split(strings.TrimSpace(out), "\n")) != 40 {
		t.Errorf("dig retrying over TCP: %s", out)
	}
}

func ciRequired() bool { return strings.EqualFold(os.Getenv("CI"), "true") }
