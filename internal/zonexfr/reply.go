package zonexfr

import (
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// reply answers one request, signed with TSIG when the request was (and
// its signature held).
type reply struct {
	w       dns.ResponseWriter
	req     *dns.Msg
	tsig    *dns.TSIG
	tsigErr error
}

func (r *reply) send(m *dns.Msg) {
	if r.tsig != nil && r.tsigErr == nil {
		m.SetTsig(r.tsig.Hdr.Name, r.tsig.Algorithm, r.tsig.Fudge, time.Now().Unix())
	}
	_ = r.w.WriteMsg(m)
}

// rcode answers with rcode and no records; authoritative unless refusing.
func (r *reply) rcode(rcode int) {
	m := new(dns.Msg)
	m.SetRcode(r.req, rcode)
	m.Authoritative = rcode != dns.RcodeRefused
	r.send(m)
}

// badTSIG answers a request whose signature failed: NOTAUTH with the
// TSIG error (RFC 8945 s5.2), unsigned.
func (r *reply) badTSIG() {
	code := uint16(dns.RcodeBadSig)
	switch r.tsigErr {
	case dns.ErrSecret, dns.ErrKeyAlg:
		code = dns.RcodeBadKey
	case dns.ErrTime:
		code = dns.RcodeBadTime
	}
	m := new(dns.Msg)
	m.SetRcode(r.req, dns.RcodeNotAuth)
	m.Extra = []dns.RR{&dns.TSIG{
		Hdr:        dns.RR_Header{Name: r.tsig.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm:  r.tsig.Algorithm,
		TimeSigned: uint64(time.Now().Unix()),
		Fudge:      r.tsig.Fudge,
		OrigId:     r.req.Id,
		Error:      code,
	}}
	if b, err := m.Pack(); err == nil {
		_, _ = r.w.Write(b)
	}
}

// udpWriter is a dns.ResponseWriter that keeps the one UDP answer,
// signed as miekg/dns's server signs.
type udpWriter struct {
	client     netip.AddrPort
	local      net.Addr
	secret     string // the key's (base64), to sign with
	requestMAC string
	out        []byte
}

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	var b []byte
	var err error
	if m.IsTsig() != nil {
		b, _, err = dns.TsigGenerate(m, w.secret, w.requestMAC, false)
	} else {
		b, err = m.Pack()
	}
	if err != nil {
		return err
	}
	w.out = b
	return nil
}

func (w *udpWriter) Write(b []byte) (int, error) {
	w.out = append([]byte(nil), b...)
	return len(b), nil
}
func (w *udpWriter) LocalAddr() net.Addr  { return w.local }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.client) }
func (w *udpWriter) TsigStatus() error    { return nil }
func (w *udpWriter) TsigTimersOnly(bool)  {}
func (w *udpWriter) Hijack()              {}
func (w *udpWriter) Close() error         { return nil }
