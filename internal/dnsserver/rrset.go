package dnsserver

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/miekg/dns"
)

// maxOrders is the fewest weighted start positions kept per list answer.
const maxOrders = 64

// rrset is a list answer (a service's SRV, A, AAAA or PTR records) packed
// so that a query can send any records in any order: every owner name is a
// pointer to the question, names in PTR data point into the question too,
// and SRV targets are written whole (RFC 2782 forbids compressing them).
// A query copies as many whole records as fit, in the next order.
type rrset struct {
	recs []byte
	off  []uint32 // record i is recs[off[i]:off[i+1]]
	// glue holds the A/AAAA records of the SRV targets, all of them, sent
	// only when every answer record fits and the glue fits as well.
	glue  []byte
	nglue int
	// starts are where queries begin, in turn; nil: every record in turn.
	starts []uint32
	next   atomic.Uint32
	// With locality on, a service's SRV, A and AAAA lists say which
	// address each record (addrs) and each glue record (glue[glueOff[i]:
	// glueOff[i+1]] at glueAddrs[i]) is of, so that an answer that sends
	// the asker's own host's instances first leaves them out after.
	addrs     []addrKey
	glueOff   []uint32
	glueAddrs []addrKey
}

func (rs *rrset) len() int { return len(rs.off) - 1 }

// nextStart returns the record the next answer begins with, in turn (see
// weightedOrder); rs must not be empty.
func (rs *rrset) nextStart() int {
	c := rs.next.Add(1) - 1
	if rs.starts != nil {
		return int(rs.starts[c%uint32(len(rs.starts))])
	}
	return int(c % uint32(rs.len()))
}

// rrBuilder packs records for one question name.
type rrBuilder struct {
	qname    []byte // wire form, lower case
	zoneOff  uint16 // offset of the zone's labels in the response
	zoneWire []byte
	ttl      uint32
	buf      []byte
	off      []uint32
}

// newRRBuilder returns a builder for n records at qname, about size bytes.
func newRRBuilder(s *Server, qname string, n, size int) *rrBuilder {
	wire := make([]byte, 256)
	l, _ := dns.PackDomainName(qname, wire, 0, nil, false)
	return &rrBuilder{
		qname:    wire[:l],
		zoneOff:  uint16(headerLen + l - len(s.zoneWire)),
		zoneWire: s.zoneWire,
		ttl:      s.ttl.Load(),
		buf:      make([]byte, 0, size),
		off:      make([]uint32, 1, n+1),
	}
}

// header appends an owner name pointing at the question and the fixed
// fields, and returns where RDLENGTH goes.
func (b *rrBuilder) header(t uint16) int {
	b.buf = append(b.buf, 0xc0, headerLen)
	return b.fixed(t)
}

// fixed appends type, class, TTL and a zero RDLENGTH, and returns where
// RDLENGTH is.
func (b *rrBuilder) fixed(t uint16) int {
	b.buf = binary.BigEndian.AppendUint16(b.buf, t)
	b.buf = binary.BigEndian.AppendUint16(b.buf, dns.ClassINET)
	b.buf = binary.BigEndian.AppendUint32(b.buf, b.ttl)
	b.buf = append(b.buf, 0, 0)
	return len(b.buf) - 2
}

func (b *rrBuilder) end(rdlenAt int) {
	binary.BigEndian.PutUint16(b.buf[rdlenAt:], uint16(len(b.buf)-rdlenAt-2))
	b.off = append(b.off, uint32(len(b.buf)))
}

// labels appends lower-case labels, then a pointer to the zone in the
// question (whole: false) or the zone's own labels (whole: true).
func (b *rrBuilder) labels(whole bool, ls ...string) {
	for _, l := range ls {
		b.buf = append(b.buf, byte(len(l)))
		b.buf = append(b.buf, l...)
	}
	if whole {
		b.buf = append(b.buf, b.zoneWire...)
	} else {
		b.buf = binary.BigEndian.AppendUint16(b.buf, 0xc000|b.zoneOff)
	}
}

func (b *rrBuilder) srv(prio, weight, port uint16, id, svc string) {
	at := b.header(dns.TypeSRV)
	b.buf = binary.BigEndian.AppendUint16(b.buf, prio)
	b.buf = binary.BigEndian.AppendUint16(b.buf, weight)
	b.buf = binary.BigEndian.AppendUint16(b.buf, port)
	b.labels(true, id, svc)
	b.end(at)
}

// addr appends an A or AAAA record; its owner is the question, or the
// labels ls under the zone (glue).
func (b *rrBuilder) addr(a netip.Addr, ls ...string) {
	if len(ls) == 0 {
		b.buf = append(b.buf, 0xc0, headerLen)
	} else {
		b.labels(false, ls...)
	}
	if a.Is4() {
		at := b.fixed(dns.TypeA)
		v := a.As4()
		b.buf = append(b.buf, v[:]...)
		b.end(at)
		return
	}
	at := b.fixed(dns.TypeAAAA)
	v := a.As16()
	b.buf = append(b.buf, v[:]...)
	b.end(at)
}

// ptr appends a PTR record to the name made of ls under the zone.
func (b *rrBuilder) ptr(ls ...string) {
	at := b.header(dns.TypePTR)
	b.labels(false, ls...)
	b.end(at)
}

// done returns the packed set; starts, when not nil, are where queries
// begin in turn (see weightedOrder).
func (b *rrBuilder) done(starts []uint32) *rrset {
	return &rrset{recs: b.buf, off: b.off, starts: starts}
}

// maxStarts bounds the weighted start positions kept per list answer.
const maxStarts = 1 << 16

// weightedOrder returns the order to pack records in and where queries
// start, for records weighted by ws; nil, nil when all weights are equal
// (plain rotation: every record comes first in turn).
//
// The order is one weighted random permutation (Efraimidis-Spirakis: sort
// by E/w, E exponential; O(n log n)). Queries rotate through it from a
// start drawn by weight: the starts are stratified samples of the
// cumulative weight, so a record comes first in proportion to its weight,
// exactly, and the records after it follow the weighted permutation. All
// of it is seeded by the data, so a rebuild of the same data gives the
// same answers.
func weightedOrder(ws []uint16) (perm []int, starts []uint32) {
	n := len(ws)
	if n <= 1 || allEqual(ws) {
		return nil, nil
	}
	rng := rand.New(rand.NewPCG(uint64(n), 0x5167))
	keys := make([]uint64, n)
	for i, w := range ws {
		// The float32 bits of a positive key sort as integers; the index
		// rides in the low half.
		k := float32(rng.ExpFloat64() / float64(max(w, 1)))
		keys[i] = uint64(math.Float32bits(k))<<32 | uint64(i)
	}
	slices.Sort(keys)
	perm = make([]int, n)
	total := 0.0
	for i, k := range keys {
		perm[i] = int(uint32(k))
		total += float64(max(ws[perm[i]], 1))
	}
	m := min(max(n, maxOrders), maxStarts)
	starts = make([]uint32, m)
	cum := 0.0
	pos := 0
	for j := range starts {
		target := (float64(j) + 0.5) / float64(m) * total
		for pos < n-1 && cum+float64(max(ws[perm[pos]], 1)) <= target {
			cum += float64(max(ws[perm[pos]], 1))
			pos++
		}
		starts[j] = uint32(pos)
	}
	rng.Shuffle(m, func(i, j int) { starts[i], starts[j] = starts[j], starts[i] })
	return perm, starts
}

func allEqual(ws []uint16) bool {
	for _, w := range ws {
		if w != ws[0] {
			return false
		}
	}
	return true
}

// answerSet writes the question and as many whole records of rs as fit in
// limit, in the next order. Over UDP an answer that lost records has TC
// set (RFC 2181 s9: the client may use what it got, or ask over TCP); the
// glue comes only with a complete answer, and only when it all fits.
func (s *Server) answerSet(req, out []byte, q *query, rs *rrset, limit int, tcp bool) []byte {
	room := limit
	if q.edns {
		room -= optLen
	}
	n := copy(out, req[:q.qEnd])
	setFlags(out, req, true, rcodeNoError)
	total := rs.len()
	start := rs.nextStart()
	an := 0
	if n+len(rs.recs) <= room {
		// The whole rotation fits: two copies.
		cut := rs.off[start]
		n += copy(out[n:], rs.recs[cut:])
		n += copy(out[n:], rs.recs[:cut])
		an = total
	}
	for ; an < total; an++ {
		k := start + an
		if k >= total {
			k -= total
		}
		rec := rs.recs[rs.off[k]:rs.off[k+1]]
		if n+len(rec) > room {
			break
		}
		n += copy(out[n:], rec)
	}
	ar := 0
	if an == total && rs.nglue > 0 && n+len(rs.glue) <= room {
		n += copy(out[n:], rs.glue)
		ar = rs.nglue
	}
	setCounts(out, 1, uint16(an), 0, uint16(ar))
	if an < total && !tcp {
		out[2] |= 0x02 // TC
	}
	if q.edns {
		n = s.appendOPT(out, n, q, rcodeNoError)
	}
	return out[:n]
}

// putRotated writes at out[n:] as many whole records of rs as fit before
// room, in the next order, leaving out those at skip (when not nil), and
// returns the new length, how many it wrote and whether that was all of
// them.
func putRotated(out []byte, n, room int, rs *rrset, skip *addrKey) (int, int, bool) {
	total := rs.len()
	if total <= 0 {
		return n, 0, true
	}
	start := rs.nextStart()
	skipping := skip != nil && len(rs.addrs) == total
	i := 0
	if !skipping && n+len(rs.recs) <= room {
		// The whole rotation fits: two copies.
		cut := rs.off[start]
		n += copy(out[n:], rs.recs[cut:])
		n += copy(out[n:], rs.recs[:cut])
		i = total
	}
	an := i
	for ; i < total; i++ {
		k := start + i
		if k >= total {
			k -= total
		}
		if skipping && rs.addrs[k] == *skip {
			continue
		}
		rec := rs.recs[rs.off[k]:rs.off[k+1]]
		if n+len(rec) > room {
			return n, an, false
		}
		n += copy(out[n:], rec)
		an++
	}
	return n, an, true
}

// skipsGlue reports whether rs's glue is to be sent without the records
// at skip.
func (rs *rrset) skipsGlue(skip *addrKey) bool {
	return skip != nil && len(rs.glueAddrs) == rs.nglue && len(rs.glueOff) == rs.nglue+1
}

// glueSize returns the bytes and the count of rs's glue without the
// records at skip.
func (rs *rrset) glueSize(skip *addrKey) (int, int) {
	if !rs.skipsGlue(skip) {
		return len(rs.glue), rs.nglue
	}
	size, n := 0, 0
	for i, a := range rs.glueAddrs {
		if a != *skip {
			size += int(rs.glueOff[i+1] - rs.glueOff[i])
			n++
		}
	}
	return size, n
}

// putGlue writes rs's glue at out[n:], without the records at skip, and
// returns the new length. The caller has checked that it fits.
func (rs *rrset) putGlue(out []byte, n int, skip *addrKey) int {
	if !rs.skipsGlue(skip) {
		return n + copy(out[n:], rs.glue)
	}
	for i, a := range rs.glueAddrs {
		if a != *skip {
			n += copy(out[n:], rs.glue[rs.glueOff[i]:rs.glueOff[i+1]])
		}
	}
	return n
}
