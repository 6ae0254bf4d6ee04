package dnsserver

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/miekg/dns"
)

// prepared is a packed answer for one name and type, in several orders.
// Queries take the next order in turn, so answers rotate like Route 53's.
type prepared struct {
	variants []variant
	next     atomic.Uint32
}

// variant is one packed response: header (ID zero), the question in lower
// case, and the records. Everything before addOff is a complete response
// without the Additional section (pointers only ever point backwards).
type variant struct {
	msg    []byte
	addOff int
}

func (p *prepared) pick() *variant {
	if len(p.variants) == 1 {
		return &p.variants[0]
	}
	n := p.next.Add(1)
	return &p.variants[n%uint32(len(p.variants))]
}

// build packs a NOERROR answer for qname/qtype in every order of answer,
// with the given authority and additional records.
func build(qname string, qtype uint16, answers [][]dns.RR, ns, extra []dns.RR) *prepared {
	if len(answers) == 0 || len(answers[0]) == 0 {
		return nil // NODATA: answered per query with the SOA
	}
	p := &prepared{variants: make([]variant, 0, len(answers))}
	for _, ans := range answers {
		v, ok := packVariant(qname, qtype, ans, ns, extra)
		for !ok && len(ans) > 1 {
			// Too large even for TCP: serve fewer records per answer; the
			// rotation still hands every one out in turn.
			ans = ans[:len(ans)/2]
			v, ok = packVariant(qname, qtype, ans, ns, extra)
		}
		if ok {
			p.variants = append(p.variants, v)
		}
	}
	return p
}

func packVariant(qname string, qtype uint16, ans, ns, extra []dns.RR) (variant, bool) {
	m := new(dns.Msg)
	m.Response = true
	m.Authoritative = true
	m.Compress = true
	m.Question = []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}
	m.Answer = ans
	m.Ns = ns
	m.Extra = extra
	msg, err := m.Pack()
	if err != nil || len(msg) > dns.MaxMsgSize {
		if len(extra) == 0 {
			return variant{}, false
		}
		// Too large with the glue: serve it without.
		return packVariant(qname, qtype, ans, ns, nil)
	}
	// Everything before the Additional section is a whole answer without
	// it (pointers only point backwards): find where it starts.
	off, ok := skipRRs(msg, len(ans)+len(ns))
	if !ok {
		return variant{}, false
	}
	return variant{msg: msg, addOff: off}, true
}

// skipRRs returns the offset just past the question and the next n
// records of a packed message.
func skipRRs(msg []byte, n int) (int, bool) {
	off, ok := skipName(msg, headerLen)
	if !ok || off+4 > len(msg) {
		return 0, false
	}
	off += 4
	for i := 0; i < n; i++ {
		if off, ok = skipName(msg, off); !ok || off+10 > len(msg) {
			return 0, false
		}
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
		if off > len(msg) {
			return 0, false
		}
	}
	return off, true
}

// skipName returns the offset just past the (possibly compressed) name at
// off.
func skipName(msg []byte, off int) (int, bool) {
	for off < len(msg) {
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xc0 == 0xc0:
			return off + 2, off+2 <= len(msg)
		case l&0xc0 != 0:
			return 0, false
		}
		off += 1 + l
	}
	return 0, false
}
