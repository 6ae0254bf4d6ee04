package dnsserver

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/miekg/dns"
)

// DNS response codes used here.
const (
	rcodeNoError  = dns.RcodeSuccess
	rcodeFormErr  = dns.RcodeFormatError
	rcodeServFail = dns.RcodeServerFailure
	rcodeNXDomain = dns.RcodeNameError
	rcodeNotImp   = dns.RcodeNotImplemented
	rcodeRefused  = dns.RcodeRefused
	rcodeBadVers  = dns.RcodeBadVers // 16: extended, carried in OPT
)

const (
	headerLen = 12
	optLen    = 11
)

// query is what the answer path needs of a request. It lives on the
// caller's stack: parsing allocates nothing.
type query struct {
	name    [256]byte // lower-case wire name
	nameLen int
	labels  [128]uint8 // offset of each label in name
	nlabels int
	qtype   uint16
	qclass  uint16
	qEnd    int // offset just past the question in the request
	edns    bool
	do      bool
	udpSize int
	badVers bool
	tsig    bool // signed: a TSIG record among the additional ones
}

// parse reads the header, question and EDNS0 OPT of req. It returns the
// rcode to answer with when the request is malformed or unsupported, and
// drop=true when it does not deserve an answer at all.
func parse(req []byte, q *query) (rcode int, drop bool) {
	if len(req) < headerLen {
		return 0, true
	}
	if req[2]&0x80 != 0 { // a response: never answer those
		return 0, true
	}
	if op := (req[2] >> 3) & 0x0f; op != dns.OpcodeQuery {
		return rcodeNotImp, false
	}
	qd := binary.BigEndian.Uint16(req[4:])
	an := binary.BigEndian.Uint16(req[6:])
	ns := binary.BigEndian.Uint16(req[8:])
	ar := int(binary.BigEndian.Uint16(req[10:]))
	// An IXFR carries the client's SOA in Authority (RFC 1995 s3).
	if qd != 1 || an != 0 || ns > 1 {
		return rcodeFormErr, false
	}
	off := headerLen
	n := 0
	for {
		if off >= len(req) {
			return rcodeFormErr, false
		}
		l := int(req[off])
		if l == 0 {
			off++
			break
		}
		if l&0xc0 != 0 || off+1+l > len(req) || n+1+l > 254 || q.nlabels == len(q.labels) {
			return rcodeFormErr, false
		}
		q.labels[q.nlabels] = uint8(n)
		q.nlabels++
		q.name[n] = byte(l)
		for i, c := range req[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			q.name[n+1+i] = c
		}
		n += 1 + l
		off += 1 + l
	}
	q.name[n] = 0
	q.nameLen = n + 1
	if off+4 > len(req) {
		return rcodeFormErr, false
	}
	q.qtype = binary.BigEndian.Uint16(req[off:])
	q.qclass = binary.BigEndian.Uint16(req[off+2:])
	off += 4
	q.qEnd = off
	q.udpSize = 512
	if ns > 0 && q.qtype != dns.TypeIXFR {
		return rcodeFormErr, false
	}
	for i := 0; i < int(ns)+ar; i++ {
		// Owner name: a root label for OPT; skip any other name.
		root := off < len(req) && req[off] == 0
		var ok bool
		if off, ok = skipName(req, off); !ok || off+10 > len(req) {
			return rcodeFormErr, false
		}
		t := binary.BigEndian.Uint16(req[off:])
		class := binary.BigEndian.Uint16(req[off+2:])
		ttl := binary.BigEndian.Uint32(req[off+4:])
		rdlen := int(binary.BigEndian.Uint16(req[off+8:]))
		off += 10 + rdlen
		if off > len(req) {
			return rcodeFormErr, false
		}
		if i < int(ns) {
			continue // the IXFR's SOA
		}
		if t == dns.TypeTSIG {
			q.tsig = true
		}
		if t == dns.TypeOPT {
			if q.edns || !root {
				return rcodeFormErr, false
			}
			q.edns = true
			q.udpSize = max(int(class), 512)
			q.do = ttl&0x8000 != 0
			if byte(ttl>>16) != 0 {
				q.badVers = true
			}
		}
	}
	return rcodeNoError, false
}

// label returns the i-th label of the question name, lower case.
func (q *query) label(i int) []byte {
	o := int(q.labels[i])
	return q.name[o+1 : o+1+int(q.name[o])]
}

// respond writes the answer to req into out and returns it; nil means drop.
// Over UDP an answer is fitted to 512 bytes, or to the client's EDNS0 size
// up to MaxUDPSize; over TCP to 65535. It allocates nothing when the
// answer is already prepared.
func (s *Server) respond(req, out []byte, tcp bool) []byte {
	return s.respondAs(req, out, tcp, s.stepAside.Load())
}

// respondFrom is respond for a query from the asker at from, whose
// locality zone may order the answer (Config.Locality).
func (s *Server) respondFrom(req, out []byte, tcp bool, from netip.Addr) []byte {
	resp, _ := s.respondOrHandOff(req, out, tcp, s.stepAside.Load(), false, from)
	return resp
}

// respondAs is respond, answering SERVFAIL for every name in the zone
// when stepAside (see SetStepAside).
func (s *Server) respondAs(req, out []byte, tcp, stepAside bool) []byte {
	resp, _ := s.respondOrHandOff(req, out, tcp, stepAside, false, netip.Addr{})
	return resp
}

// respondOrHandOff is respondAs; when handOff is allowed and transfers
// are on (SetTransfers), it answers nothing and reports true for the
// queries that are theirs: AXFR, IXFR and queries signed with TSIG, for
// the zone. from is the asker's address (zero: unknown), which may order
// services' answers (Config.Locality).
func (s *Server) respondOrHandOff(req, out []byte, tcp, stepAside, handOff bool, from netip.Addr) (_ []byte, handed bool) {
	var q query
	rcode, drop := parse(req, &q)
	if drop {
		s.metrics.dropped.Inc()
		return nil, false
	}
	if rcode != rcodeNoError {
		s.metrics.count(0, rcode)
		return s.headerOnly(req, out, rcode), false
	}
	limit := 65535
	if !tcp {
		limit = 512
		if q.edns {
			limit = min(max(q.udpSize, 512), s.cfg.MaxUDPSize)
		}
	}
	if q.badVers {
		s.metrics.count(q.qtype, rcodeBadVers)
		return s.short(req, out, &q, rcodeBadVers), false
	}
	// The zone must be a whole-label suffix of the name.
	zl := len(s.zoneWire)
	start := q.nameLen - zl
	if q.qclass != dns.ClassINET || start < 0 || !bytes.Equal(q.name[start:q.nameLen], s.zoneWire) || !q.boundary(start) {
		s.metrics.count(q.qtype, rcodeRefused)
		return s.short(req, out, &q, rcodeRefused), false
	}
	xfr := q.qtype == dns.TypeAXFR || q.qtype == dns.TypeIXFR
	handOff = handOff && s.transfers.Load() != nil
	if xfr && !handOff {
		s.metrics.count(q.qtype, rcodeRefused)
		return s.short(req, out, &q, rcodeRefused), false
	}
	if stepAside {
		s.metrics.count(q.qtype, rcodeServFail)
		return s.short(req, out, &q, rcodeServFail), false
	}
	if handOff && (xfr || q.tsig) {
		s.metrics.count(q.qtype, rcodeNoError)
		return nil, true
	}
	rel := 0
	for rel < q.nlabels && int(q.labels[rel]) < start {
		rel++
	}
	if s.loc.on() {
		return s.answerLocal(req, out, &q, rel, start, limit, tcp, from), false
	}
	return s.answerFound(req, out, &q, rel, start, limit, tcp, nil), false
}

// answerFound answers a query for the zone (rel labels before it, which
// starts at start in the name) with what lookup finds for it; lr, when
// not nil, is the asker's locality.
func (s *Server) answerFound(req, out []byte, q *query, rel, start, limit int, tcp bool, lr *localResult) []byte {
	f, exists := s.lookup(q, rel, lr)
	if f.empty() {
		rcode := rcodeNoError
		if !exists {
			rcode = rcodeNXDomain
		}
		s.metrics.count(q.qtype, rcode)
		return s.negative(req, out, q, start, rcode, limit)
	}
	s.metrics.count(q.qtype, rcodeNoError)
	if f.rs != nil {
		if lr != nil && lr.more[0] != nil {
			return s.answerParts(req, out, q, f.rs, lr, limit, tcp)
		}
		return s.answerSet(req, out, q, f.rs, limit, tcp)
	}
	return s.answer(req, out, q, f.p, limit)
}

// boundary reports whether off starts a label of the question name.
func (q *query) boundary(off int) bool {
	if off == q.nameLen-1 {
		return true // the root
	}
	for i := 0; i < q.nlabels; i++ {
		if int(q.labels[i]) == off {
			return true
		}
	}
	return false
}

// setFlags sets the response header flags: QR, AA when authoritative, RD and
// CD copied from the request, and the rcode (low four bits).
func setFlags(out, req []byte, aa bool, rcode int) {
	b2 := byte(0x80) | req[2]&0x01 // QR, RD
	if aa {
		b2 |= 0x04
	}
	out[2] = b2
	out[3] = req[3]&0x10 | byte(rcode&0x0f) // CD
}

func setCounts(out []byte, qd, an, ns, ar uint16) {
	binary.BigEndian.PutUint16(out[4:], qd)
	binary.BigEndian.PutUint16(out[6:], an)
	binary.BigEndian.PutUint16(out[8:], ns)
	binary.BigEndian.PutUint16(out[10:], ar)
}

// headerOnly answers with the request's header and an rcode (FORMERR,
// NOTIMP): nothing else of the request can be trusted.
func (s *Server) headerOnly(req, out []byte, rcode int) []byte {
	copy(out, req[:headerLen])
	setFlags(out, req, false, rcode)
	// Keep the opcode the client used.
	out[2] |= req[2] & 0x78
	setCounts(out, 0, 0, 0, 0)
	return out[:headerLen]
}

// appendOPT adds our OPT record at out[n:] and returns the new length.
func (s *Server) appendOPT(out []byte, n int, q *query, rcode int) int {
	o := out[n : n+optLen]
	o[0] = 0
	binary.BigEndian.PutUint16(o[1:], dns.TypeOPT)
	binary.BigEndian.PutUint16(o[3:], uint16(s.cfg.MaxUDPSize))
	o[5] = byte(rcode >> 4) // extended rcode, upper eight bits
	o[6] = 0                // version
	o[7] = 0
	if q.do {
		o[7] = 0x80
	}
	o[8] = 0
	binary.BigEndian.PutUint16(o[9:], 0)
	ar := binary.BigEndian.Uint16(out[10:])
	binary.BigEndian.PutUint16(out[10:], ar+1)
	return n + optLen
}

// short answers with the question and an rcode, and no records.
func (s *Server) short(req, out []byte, q *query, rcode int) []byte {
	n := copy(out, req[:q.qEnd])
	// Not authoritative when refusing, nor when failing (stepped aside):
	// the answer is not the zone's.
	setFlags(out, req, rcode != rcodeRefused && rcode != rcodeServFail, rcode)
	setCounts(out, 1, 0, 0, 0)
	if q.edns {
		n = s.appendOPT(out, n, q, rcode)
	}
	return out[:n]
}

// negative answers NXDOMAIN or NODATA with the zone's SOA in Authority
// (RFC 2308). The SOA's owner is a pointer to the zone's labels inside
// the question.
func (s *Server) negative(req, out []byte, q *query, zoneOff int, rcode int, limit int) []byte {
	n := copy(out, req[:q.qEnd])
	setFlags(out, req, true, rcode)
	tail := *s.soaTail.Load()
	if n+2+len(tail)+optLen > limit {
		setCounts(out, 1, 0, 0, 0)
	} else {
		setCounts(out, 1, 0, 1, 0)
		ptr := 0xc000 | uint16(headerLen+zoneOff)
		binary.BigEndian.PutUint16(out[n:], ptr)
		n += 2
		copy(out[n:], tail)
		m, r := s.soaPtrs()
		binary.BigEndian.PutUint16(out[n+m:], ptr)
		binary.BigEndian.PutUint16(out[n+r:], ptr)
		n += len(tail)
	}
	if q.edns {
		n = s.appendOPT(out, n, q, rcode)
	}
	return out[:n]
}

// answer writes p, fitted to limit: whole; or without Additional; or, if
// even the answer does not fit, truncated (TC) so that the client asks
// again over TCP.
func (s *Server) answer(req, out []byte, q *query, p *prepared, limit int) []byte {
	opt := 0
	if q.edns {
		opt = optLen
	}
	msg := p.msg
	dropAR, tc := false, false
	if len(msg)+opt > limit {
		if p.addOff+opt <= limit {
			msg, dropAR = msg[:p.addOff], true
		} else {
			msg, tc = msg[:q.qEnd], true
		}
	}
	n := copy(out, msg)
	// ID, and the question exactly as asked (same length: same name).
	copy(out[0:2], req[0:2])
	copy(out[headerLen:q.qEnd], req[headerLen:q.qEnd])
	setFlags(out, req, true, int(msg[3]&0x0f))
	if tc {
		out[2] |= 0x02
		setCounts(out, 1, 0, 0, 0)
	} else if dropAR {
		binary.BigEndian.PutUint16(out[10:], 0)
	}
	if q.edns {
		n = s.appendOPT(out, n, q, 0)
	}
	return out[:n]
}
