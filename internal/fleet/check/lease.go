package check

import (
	"sort"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// checkLeases is check 4, for each node whose heartbeats the history
// holds:
//
//   - never early: an expiry was committed no earlier than the invoke of
//     the last heartbeat acknowledged before it, plus the TTL (the
//     heartbeat renewed the lease no earlier than its invoke);
//   - never late: an expiry was committed no later than the return of the
//     last renewal that may have landed (an acknowledged or unknown
//     heartbeat or node set) plus the TTL plus Bounds.ExpiryLate;
//   - never missed: a node whose renewals stopped for longer than that
//     lost its instances (if it had any) before its next attempt.
func checkLeases(m *model, r *Report) {
	ttl, late := int64(m.h.Bounds.TTL), int64(m.h.Bounds.ExpiryLate)
	beats := map[string][]history.Op{}    // acknowledged heartbeats
	attempts := map[string][]history.Op{} // renewals that may have landed
	for _, o := range m.h.Ops {
		if o.Node == "" || o.Outcome == history.Failed {
			continue
		}
		if o.Kind == history.Heartbeat && o.Outcome == history.OK {
			beats[o.Node] = append(beats[o.Node], o)
		}
		if o.Kind == history.Heartbeat || o.Kind == history.NodeSet {
			attempts[o.Node] = append(attempts[o.Node], o)
		}
	}
	n := 0
	for node, exp := range m.expiries {
		for _, rev := range exp {
			n++
			lo, hi := m.after(rev), m.knownBy(rev)
			// The last acknowledged heartbeat that renewed the lease that
			// expired: one answered before the expiry, or sent before it
			// and overlapping no node set that may have made a new lease.
			var last *history.Op
			for i, o := range beats[node] {
				renewedIt := o.Return < lo || o.Invoke < hi && !newLease(attempts[node], o, lo)
				if renewedIt && (last == nil || o.Invoke > last.Invoke) {
					last = &beats[node][i]
				}
			}
			if last != nil && hi < last.Invoke+ttl-m.slack {
				r.add(4, "lease early", hi, "%s's instances expired (revision %d) by %s, %s after its heartbeat acknowledged at %s was sent; the lease is %s",
					node, rev, secs(hi), secs(hi-last.Invoke), secs(last.Return), secs(ttl))
			}
			// The last renewal that may have landed before the expiry.
			var maybe *history.Op
			for i, o := range attempts[node] {
				if o.Invoke < hi && (maybe == nil || o.Return > maybe.Return) {
					maybe = &attempts[node][i]
				}
			}
			if maybe != nil && lo > maybe.Return+ttl+late+m.slack {
				r.add(4, "lease late", lo, "%s's instances expired (revision %d) after %s, %s after its last renewal that may have landed (%s %s, answered at %s); the bound is %s",
					node, rev, secs(lo), secs(lo-maybe.Return), maybe.Kind, maybe.Outcome, secs(maybe.Return), secs(ttl+late))
			}
		}
	}
	r.Checked["lease expiries"] = n
	for node, as := range attempts {
		sort.Slice(as, func(i, j int) bool { return as[i].Invoke < as[j].Invoke })
		s := m.nodes[node]
		for k := 0; k+1 < len(as); k++ {
			p, q := as[k], as[k+1]
			due := p.Return + ttl + late
			if q.Invoke <= due+m.slack || p.Return >= q.Invoke {
				continue
			}
			// Did the node hold instances when its renewals stopped?
			if s == nil || len(s.vs[s.at(m.revKnownBy(p.Return))].ids) == 0 {
				continue
			}
			expired := false
			for _, rev := range m.expiries[node] {
				if m.knownBy(rev) >= p.Invoke && m.after(rev) <= due+m.slack {
					expired = true
					break
				}
			}
			if !expired {
				r.add(4, "lease outlived", due, "%s sent no renewal from %s to %s, but its instances did not expire by %s",
					node, secs(p.Return), secs(q.Invoke), secs(due))
			}
		}
	}
}

// newLease reports whether a node set among ops may have given the node
// a new lease after lo and before heartbeat hb was answered.
func newLease(ops []history.Op, hb history.Op, lo int64) bool {
	for _, o := range ops {
		if o.Kind == history.NodeSet && o.Invoke < hb.Return && o.Return > lo {
			return true
		}
	}
	return false
}

// revKnownBy is the highest revision certainly committed by t. obsMin
// rises with obsRev, so the last index whose obsMin is at most t has it.
func (m *model) revKnownBy(t int64) int64 {
	i := sort.Search(len(m.obsMin), func(i int) bool { return m.obsMin[i] > t }) - 1
	if i < 0 {
		return 0
	}
	return m.obsRev[i]
}
