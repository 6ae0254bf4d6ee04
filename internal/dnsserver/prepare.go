package dnsserver

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// prepared is a packed answer of a few records for one name and type
// (SOA, NS, an instance's A, AAAA, TXT or SRV). Lists of records (a
// service's SRV, A, PTR) are rrsets instead.
type prepared struct {
	// msg is the packed response: header (ID zero), the question in
	// lower case, and the records. Everything before addOff is a complete
	// response without the Additional section (pointers only ever point
	// backwards).
	msg    []byte
	addOff int
}

// build packs a NOERROR answer for qname/qtype with the given additional
// records; nil when there are no answers (NODATA) or they cannot be packed.
func build(qname string, qtype uint16, ans, extra []dns.RR) *prepared {
	if len(ans) == 0 {
		return nil // NODATA: answered per query with the SOA
	}
	v, ok := packVariant(qname, qtype, ans, nil, extra)
	if !ok {
		return nil
	}
	return &v
}

func packVariant(qname string, qtype uint16, ans, ns, extra []dns.RR) (prepared, bool) {
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
			return prepared{}, false
		}
		// Too large with the glue: serve it without.
		return packVariant(qname, qtype, ans, ns, nil)
	}
	// Everything before the Additional section is a whole answer without
	// it (pointers only point backwards): find where it starts.
	off, ok := skipRRs(msg, len(ans)+len(ns))
	if !ok {
		return prepared{}, false
	}
	return prepared{msg: msg, addOff: off}, true
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
