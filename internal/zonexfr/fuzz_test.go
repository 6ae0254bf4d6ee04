package zonexfr

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzAnswerUDP feeds the UDP hand-off anything: it must never panic,
// signed or not, whatever the sections hold.
func FuzzAnswerUDP(f *testing.F) {
	key := &Key{Name: "xfr-key.", Algorithm: dns.HmacSHA256, Secret: "c2lnbnBvc3QgdGVzdCBrZXkgb2YgMzIgYnl0ZXMhIQ=="}
	fx := start(f, Config{Key: key})
	fx.populate()
	fx.x.j.sync()
	seed := func(m *dns.Msg, sign bool) {
		if sign {
			m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
			b, _, err := dns.TsigGenerate(m, key.Secret, "", false)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			return
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, sign := range []bool{false, true} {
		m := new(dns.Msg)
		m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
		seed(m, sign)
		m = new(dns.Msg)
		m.SetAxfr(zone)
		seed(m, sign)
		m = new(dns.Msg)
		m.SetQuestion("calc."+zone, dns.TypeSRV)
		seed(m, sign)
		m = new(dns.Msg)
		m.SetIxfr(zone, 1, "ns."+zone, "hostmaster."+zone)
		m.Ns[0] = &dns.A{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeA, Class: dns.ClassINET}}
		seed(m, sign)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1})
	client := netip.MustParseAddrPort("127.0.0.1:5353")
	f.Fuzz(func(t *testing.T, req []byte) {
		_ = fx.x.AnswerUDP(req, client)
	})
}
