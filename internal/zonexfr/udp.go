package zonexfr

import (
	"net/netip"

	"github.com/miekg/dns"
)

// AnswerUDP implements dnsserver.Transfers. Over UDP an IXFR gets its
// answer when it fits in the client's size (512 bytes, or its EDNS0 size
// up to the server's --max-udp-size), else the current SOA alone, so
// that the client asks again over TCP (RFC 1995 s2). AXFR is TCP's only
// (RFC 5936 s4.2): FORMERR. Signed queries are answered as the server
// answers them, signed. Clients outside Config.Allow get the packet
// path's answer.
func (t *Transfers) AnswerUDP(req []byte, client netip.AddrPort) []byte {
	if !t.allowed(client.Addr()) {
		// Not a secondary: the packet path's answer, never the slow
		// one (no unpacking, no HMAC), whatever the query carries:
		// IXFR REFUSED, a signed query answered unsigned.
		return t.dns.Respond(req, false)
	}
	m := new(dns.Msg)
	if err := m.Unpack(req); err != nil || len(m.Question) != 1 {
		return nil
	}
	w := &udpWriter{client: client}
	if t.cfg.Key != nil {
		w.secret = t.cfg.Key.Secret
	}
	r := &reply{w: w, req: m, tsig: m.IsTsig()}
	if r.tsig != nil {
		r.tsigErr = dns.ErrSecret
		if t.cfg.Key != nil {
			r.tsigErr = dns.TsigVerify(req, t.cfg.Key.Secret, "", false)
			if dns.CanonicalName(r.tsig.Hdr.Name) != t.cfg.Key.Name {
				r.tsigErr = dns.ErrSecret
			}
		}
		w.requestMAC = r.tsig.MAC
		if r.tsigErr != nil {
			t.metrics.requests.WithLabelValues("badtsig").Inc()
			t.refusal("bad TSIG", "client", client, "key", r.tsig.Hdr.Name, "err", r.tsigErr)
			r.badTSIG()
			return w.out
		}
	}
	switch m.Question[0].Qtype {
	case dns.TypeAXFR:
		r.rcode(dns.RcodeFormatError)
	case dns.TypeIXFR:
		t.ixfrUDP(r, client.Addr(), m)
	default:
		t.plain(r, false)
	}
	return w.out
}

// ixfrUDP answers IXFR over UDP: the answer if it fits, else the SOA.
func (t *Transfers) ixfrUDP(r *reply, from netip.Addr, m *dns.Msg) {
	if !t.admit(r, from) {
		return
	}
	var soa *dns.SOA
	if len(m.Ns) == 1 {
		soa, _ = m.Ns[0].(*dns.SOA)
	}
	if soa == nil {
		r.rcode(dns.RcodeFormatError)
		return
	}
	now := t.dns.Serial()
	v, kind, deltas, ok := t.j.peek(soa.Serial, now)
	if !ok {
		// The journal is busy or behind: bringing it up to date is not
		// for the packet path. The SOA alone is right all the same: a
		// secondary behind it asks again over TCP.
		t.metrics.requests.WithLabelValues("ixfr_udp_soa").Inc()
		t.sendSOA(r, m, now)
		return
	}
	room := 512
	if o := m.IsEdns0(); o != nil {
		room = min(max(int(o.UDPSize()), 512), t.dns.MaxUDPSize())
	}
	room -= 12 + len(t.zone) + 2 + 4 // header, question
	if r.tsig != nil {
		room -= 100 + len(r.tsig.Hdr.Name) + len(r.tsig.Algorithm)
	}
	var rrs []dns.RR
	size := 0
	fits := true
	t.stream(v, kind, deltas, func(rr dns.RR) bool {
		size += dns.Len(rr)
		if size > room {
			fits = false
			return false
		}
		rrs = append(rrs, rr)
		return true
	})
	label := answerLabel(dns.TypeIXFR, kind)
	if !fits {
		rrs, label = []dns.RR{v.SOA(v.Serial())}, "ixfr_udp_soa"
	}
	t.metrics.requests.WithLabelValues(label).Inc()
	t.sendAnswer(r, m, rrs)
}

// sendSOA answers with the zone's SOA at serial alone.
func (t *Transfers) sendSOA(r *reply, m *dns.Msg, serial uint32) {
	t.sendAnswer(r, m, []dns.RR{t.dns.ZoneSOA(serial)})
}

func (t *Transfers) sendAnswer(r *reply, m *dns.Msg, rrs []dns.RR) {
	resp := new(dns.Msg)
	resp.SetReply(m)
	resp.Authoritative = true
	resp.Compress = true
	resp.Answer = rrs
	r.send(resp)
}
