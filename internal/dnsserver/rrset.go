package dnsserver

import (
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/miekg/dns"
)

// maxOrders caps how many weighted orders are prepared per list answer.
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
	glue   []byte
	nglue  int
	orders [][]uint32 // weighted orders; nil: plain rotation
	next   atomic.Uint32
}

func (rs *rrset) len() int { return len(rs.off) - 1 }

// rrBuilder packs records for one question name.
type rrBuilder struct {
	qname    []byte // wire form, lower case
	zoneOff  uint16 // offset of the zone's labels in the response
	zoneWire []byte
	ttl      uint32
	buf      []byte
	off      []uint32
	minLen   int
}

func newRRBuilder(s *Server, qname string, n int) *rrBuilder {
	wire := make([]byte, 256)
	l, _ := dns.PackDomainName(qname, wire, 0, nil, false)
	return &rrBuilder{
		qname:    wire[:l],
		zoneOff:  uint16(headerLen + l - len(s.zoneWire)),
		zoneWire: s.zoneWire,
		ttl:      s.cfg.TTL,
		off:      make([]uint32, 1, n+1),
		minLen:   1 << 30,
	}
}

// header appends an owner name pointing at the question and the fixed
// fields, and returns where RDLENGTH goes.
func (b *rrBuilder) header(owner []byte, t uint16) int {
	if owner == nil {
		b.buf = append(b.buf, 0xc0, headerLen)
	} else {
		b.buf = append(b.buf, owner...)
	}
	b.buf = binary.BigEndian.AppendUint16(b.buf, t)
	b.buf = binary.BigEndian.AppendUint16(b.buf, dns.ClassINET)
	b.buf = binary.BigEndian.AppendUint32(b.buf, b.ttl)
	b.buf = append(b.buf, 0, 0)
	return len(b.buf) - 2
}

func (b *rrBuilder) end(rdlenAt int) {
	binary.BigEndian.PutUint16(b.buf[rdlenAt:], uint16(len(b.buf)-rdlenAt-2))
	start := b.off[len(b.off)-1]
	b.off = append(b.off, uint32(len(b.buf)))
	b.minLen = min(b.minLen, len(b.buf)-int(start))
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
	at := b.header(nil, dns.TypeSRV)
	b.buf = binary.BigEndian.AppendUint16(b.buf, prio)
	b.buf = binary.BigEndian.AppendUint16(b.buf, weight)
	b.buf = binary.BigEndian.AppendUint16(b.buf, port)
	b.labels(true, id, svc)
	b.end(at)
}

func (b *rrBuilder) addr(owner []byte, a netip.Addr) {
	t := dns.TypeA
	if !a.Is4() {
		t = dns.TypeAAAA
	}
	at := b.header(owner, t)
	b.buf = append(b.buf, a.AsSlice()...)
	b.end(at)
}

// ptr appends a PTR record to the name made of ls under the zone.
func (b *rrBuilder) ptr(ls ...string) {
	at := b.header(nil, dns.TypePTR)
	b.labels(false, ls...)
	b.end(at)
}

// ownerName returns ls under the zone, the zone as a pointer into the
// question, for glue owners.
func (b *rrBuilder) ownerName(ls ...string) []byte {
	save := b.buf
	b.buf = nil
	b.labels(false, ls...)
	name := b.buf
	b.buf = save
	return name
}

// done returns the packed set, with orders weighted by weights (nil, or
// all equal: rotation). rng seeds the weighted orders.
func (b *rrBuilder) done(weights []uint16) *rrset {
	rs := &rrset{recs: b.buf, off: b.off}
	n := rs.len()
	if n <= 1 || allEqual(weights) {
		return rs
	}
	// Only as many records as the largest (TCP) answer can hold are ever
	// sent per order: keep that many of each.
	keep := min(n, (dns.MaxMsgSize-headerLen-len(b.qname)-4)/max(b.minLen, 1)+1)
	rs.orders = weightedOrders(weights, keep, maxOrders)
	return rs
}

func allEqual(ws []uint16) bool {
	for _, w := range ws {
		if w != ws[0] {
			return false
		}
	}
	return true
}

// weightedOrders returns count orders of the first keep indices of a
// weighted random permutation (Efraimidis-Spirakis: sort by E/w with E
// exponential), seeded so that a rebuild of the same data gives the same
// orders. O(n) per order to select, O(keep log keep) to sort.
func weightedOrders(weights []uint16, keep, count int) [][]uint32 {
	n := len(weights)
	rng := rand.New(rand.NewPCG(uint64(n), 0x5167))
	type kv struct {
		k float64
		i uint32
	}
	keys := make([]kv, n)
	res := make([][]uint32, count)
	for v := range res {
		for i, w := range weights {
			keys[i] = kv{rng.ExpFloat64() / float64(max(w, 1)), uint32(i)}
		}
		sel := keys
		if keep < n {
			selectSmallest(keys, keep, func(a, b kv) bool { return a.k < b.k })
			sel = keys[:keep]
		}
		slices.SortFunc(sel, func(a, b kv) int { return cmp.Compare(a.k, b.k) })
		o := make([]uint32, len(sel))
		for i, e := range sel {
			o[i] = e.i
		}
		res[v] = o
	}
	return res
}

// selectSmallest reorders a so that its k smallest elements come first
// (quickselect, expected O(len(a))).
func selectSmallest[T any](a []T, k int, less func(a, b T) bool) {
	lo, hi := 0, len(a)-1
	for lo < hi {
		// Median of three as the pivot, moved to hi.
		mid := lo + (hi-lo)/2
		if less(a[mid], a[lo]) {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if less(a[hi], a[lo]) {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if less(a[mid], a[hi]) {
			a[mid], a[hi] = a[hi], a[mid]
		}
		p := a[hi]
		i := lo
		for j := lo; j < hi; j++ {
			if less(a[j], p) {
				a[i], a[j] = a[j], a[i]
				i++
			}
		}
		a[i], a[hi] = a[hi], a[i]
		switch {
		case i == k-1 || i == k:
			return
		case i < k:
			lo = i + 1
		default:
			hi = i - 1
		}
	}
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
	c := rs.next.Add(1) - 1
	var order []uint32
	count, start := total, 0
	if rs.orders != nil {
		order = rs.orders[c%uint32(len(rs.orders))]
		count = len(order)
	} else {
		start = int(c % uint32(total))
	}
	an := 0
	for ; an < count; an++ {
		k := start + an
		if order != nil {
			k = int(order[an])
		} else if k >= total {
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
