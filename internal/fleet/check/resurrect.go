package check

import (
	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// checkResurrected is check 3: nothing deleted comes back. Every
// instance ID in a run is used once, so an ID put again after it was
// deleted (other than by its lease running out: its node then puts it
// again when it syncs) came back; so did one that a read or watch event
// shows at a revision at which it was deleted, or a DNS answer sent more
// than Bounds.Stale after its deletion was certainly committed, before
// it could have been put again (outside faults touching the server).
func checkResurrected(m *model, r *Report) {
	stale := int64(m.h.Bounds.Stale)
	byAddr := map[string]string{}
	n := 0
	for id, in := range m.insts {
		if in.del == 0 {
			continue
		}
		n++
		if in.addr != "" {
			byAddr[in.addr] = id
		}
		if in.putAfterDel != 0 {
			r.add(3, "resurrected", m.knownBy(in.putAfterDel), "%s was deleted and put again at revision %d", id, in.putAfterDel)
		}
	}
	r.Checked["deleted instances"] = n
	gone := func(id string, rev int64) (int64, bool) {
		if in := m.insts[id]; in != nil {
			return in.goneAt(rev)
		}
		return 0, false
	}
	for _, o := range m.h.Ops {
		if o.Kind != history.Read || o.Outcome != history.OK {
			continue
		}
		for _, id := range o.IDs {
			if d, ok := gone(id, o.Rev); ok {
				r.add(3, "resurrected", o.Invoke, "read of %s from %s at revision %d holds %s, deleted at revision %d", o.Service, o.Server, o.Rev, id, d)
			}
		}
	}
	for _, e := range m.h.Watches {
		for _, id := range e.IDs {
			if d, ok := gone(id, e.Index); ok {
				r.add(3, "resurrected", e.Got, "watch %s (%s) event of %s at revision %d holds %s, deleted at revision %d", e.Stream, e.Server, e.Service, e.Index, id, d)
			}
		}
	}
	for _, a := range m.h.DNS {
		if a.Got == 0 || a.Rcode != 0 || m.inFault(a.Server, a.Sent) || a.MinTTL <= 1 {
			continue // a TTL of 1 s says it may be stale (check 5 bounds how long)
		}
		for _, t := range a.Targets {
			id, ok := byAddr[t]
			if !ok {
				continue
			}
			if d, k, dead := m.deadBy(m.insts[id], a.Sent-stale-m.slack, a.Got); dead {
				r.add(3, "resurrected", a.Sent, "DNS answer of %s from %s holds %s (%s), deleted at revision %d by %s, %s before the question",
					a.Service, a.Server, t, id, d, secs(k), secs(a.Sent-k))
			}
		}
	}
}

// deadBy reports whether in had certainly been deleted by t and could not
// have been put again by until: the delete's revision and when it was known.
func (m *model) deadBy(in *instance, t, until int64) (int64, int64, bool) {
	for i, l := range in.life {
		if !l.deleted {
			continue
		}
		k := m.knownBy(l.rev)
		if k >= t {
			return 0, 0, false
		}
		if i+1 == len(in.life) || m.after(in.life[i+1].rev) > until {
			return l.rev, k, true
		}
	}
	return 0, 0, false
}
