package dnsserver

import (
	"testing"

	"github.com/miekg/dns"
)

func TestSerial(t *testing.T) {
	for _, c := range []struct {
		cur  uint32
		rev  int64
		want uint32
	}{
		{0, 0, 0},
		{0, 7, 7},
		{7, 7, 7},
		{7, 5, 8},                // the revision went back: the serial still grows
		{0xffffffff, 1 << 32, 0}, // past 2^32: 0 follows 2^32-1 (RFC 1982)
		{5, 1<<32 + 9, 9},        // the low 32 bits
		{10, 10 + 1<<31, 11},     // 2^31 ahead is not ahead: grow by one
		{10, 10 + 1<<31 - 1, 1<<31 + 9},
	} {
		if got := nextSerial(c.cur, c.rev); got != c.want {
			t.Errorf("nextSerial(%d, %d) = %d, want %d", c.cur, c.rev, got, c.want)
		}
	}
	for _, c := range []struct {
		a, b uint32
		want bool
	}{{1, 2, true}, {2, 1, false}, {1, 1, false}, {0xffffffff, 0, true}, {0, 0xffffffff, false}, {0, 1 << 31, false}, {1 << 31, 0, false}} {
		if got := SerialLess(c.a, c.b); got != c.want {
			t.Errorf("SerialLess(%d, %d) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// An Authority record is an IXFR's SOA; in any other query it is FORMERR.
func TestAuthorityOnlyInIXFR(t *testing.T) {
	s := newTestServer(t, 2)
	out := make([]byte, 65536+optLen)
	m := new(dns.Msg)
	m.SetIxfr(s.cfg.Zone, 1, "ns."+s.cfg.Zone, "hostmaster."+s.cfg.Zone)
	req, _ := m.Pack()
	r := new(dns.Msg)
	if err := r.Unpack(s.respond(req, out, true)); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("IXFR without transfers: %v %v, want REFUSED", r, err)
	}
	m.Question[0].Qtype = dns.TypeSRV
	req, _ = m.Pack()
	if err := r.Unpack(s.respond(req, out, true)); err != nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("SRV query with an Authority record: %v %v, want FORMERR", r, err)
	}
}
