package check

import (
	"sort"
	"strings"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

func isWrite(o history.Op) bool { return o.Kind == history.Register || o.Kind == history.Deregister }

// checkWrites is check 1's write half: acknowledged writes are
// linearizable. Their revisions give one total order; it is a
// linearization exactly when no write that returned before another was
// invoked has the higher revision.
func checkWrites(m *model, r *Report) {
	var ws []history.Op
	for _, o := range m.h.Ops {
		if isWrite(o) && o.Outcome == history.OK && o.Rev > 0 {
			ws = append(ws, o)
		}
	}
	r.Checked["writes"] = len(ws)
	byReturn := append([]history.Op(nil), ws...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	sort.Slice(ws, func(i, j int) bool { return ws[i].Invoke < ws[j].Invoke })
	var top history.Op // of the writes returned so far, the one with the highest revision
	k := 0
	for _, b := range ws {
		for ; k < len(byReturn) && byReturn[k].Return < b.Invoke; k++ {
			if byReturn[k].Rev > top.Rev {
				top = byReturn[k]
			}
		}
		if top.Rev >= b.Rev {
			r.add(1, "linearizable", b.Invoke, "%s %s (%s, via %s) got revision %d, but %s %s had returned revision %d at %s, before it was invoked",
				b.Kind, b.ID, b.Client, b.Server, b.Rev, top.Kind, top.ID, top.Rev, secs(top.Return))
		}
	}
}

// checkReads is check 1's read half.
func checkReads(m *model, r *Report) {
	stale, staleTTL := int64(m.h.Bounds.Stale), int64(m.h.Bounds.StaleTTL)
	// A read reports its service's revision (the last change to it), so
	// order and read your writes are per server and service. Acknowledged
	// writes by server and service, by return time:
	acked := map[string][]history.Op{}
	for _, o := range m.h.Ops {
		if isWrite(o) && o.Outcome == history.OK && o.Rev > 0 {
			// A deregister retried after an attempt etcd applied is
			// answered at a later revision than its delete (see
			// checkLost): the service changed at the delete.
			if in := m.insts[o.ID]; o.Kind == history.Deregister && in != nil && !m.changedAt(o.Rev, o.ID, true) {
				if d, ok := in.goneAt(o.Rev); ok {
					o.Rev = d
				}
			}
			acked[o.Server+" "+o.Service] = append(acked[o.Server+" "+o.Service], o)
		}
	}
	for _, ws := range acked {
		sort.Slice(ws, func(i, j int) bool { return ws[i].Return < ws[j].Return })
	}
	type last struct {
		rev int64
		ret int64
	}
	byServer := map[string][]history.Op{}
	n := 0
	for _, o := range m.h.Ops {
		if o.Kind != history.Read || o.Outcome != history.OK || o.Rev <= 0 {
			continue
		}
		n++
		byServer[o.Server+" "+o.Service] = append(byServer[o.Server+" "+o.Service], o)
		s := m.services[o.Service]
		if s == nil {
			if len(o.IDs) > 0 {
				r.add(1, "read", o.Invoke, "read of %s from %s at revision %d holds %s, but the store never had the service", o.Service, o.Server, o.Rev, strings.Join(o.IDs, ","))
			}
			continue
		}
		i := s.at(o.Rev)
		if v := s.vs[i]; v.idSig != sig(o.IDs) {
			r.add(1, "read", o.Invoke, "read of %s from %s at revision %d holds [%s]; the store's %s at that revision is [%s]",
				o.Service, o.Server, o.Rev, strings.Join(o.IDs, " "), o.Service, strings.Join(v.ids, " "))
			continue
		}
		// Fresh within Stale outside faults, unless the server says it
		// may be stale; saying so only for a while after a fault; never
		// silently older than StaleTTL.
		a := m.age(s, i, o.Invoke)
		switch {
		case o.Stale:
			m.saidTooLong(r, 1, o.Server, o.Invoke, "X-Signpost-Stale")
		case !m.inFault(o.Server, o.Invoke) && a > stale+m.slack:
			r.add(1, "stale read", o.Invoke, "read of %s from %s at revision %d answered a state replaced (revision %d) %s before it was sent; the bound is %s",
				o.Service, o.Server, o.Rev, s.end(i), secs(a), secs(stale))
		case staleTTL > 0 && a > staleTTL+m.slack:
			r.add(1, "silently stale read", o.Invoke, "read of %s from %s at revision %d answered a state replaced %s before it was sent, without X-Signpost-Stale",
				o.Service, o.Server, o.Rev, secs(a))
		}
	}
	r.Checked["reads"] = n
	for key, rs := range byServer {
		srv, _, _ := strings.Cut(key, " ")
		sort.Slice(rs, func(i, j int) bool { return rs[i].Invoke < rs[j].Invoke })
		// A server's revisions never go back: a read sent after another
		// of the service returned reports at least its revision.
		byRet := append([]history.Op(nil), rs...)
		sort.Slice(byRet, func(i, j int) bool { return byRet[i].Return < byRet[j].Return })
		var top last
		k := 0
		ws := acked[key]
		wk := 0
		var wtop history.Op
		for _, o := range rs {
			for ; k < len(byRet) && byRet[k].Return < o.Invoke; k++ {
				if byRet[k].Rev > top.rev {
					top = last{byRet[k].Rev, byRet[k].Return}
				}
			}
			if top.rev > o.Rev {
				r.add(1, "monotonic", o.Invoke, "read of %s from %s reports revision %d, but a read from it had returned revision %d at %s",
					o.Service, srv, o.Rev, top.rev, secs(top.ret))
			}
			for ; wk < len(ws) && ws[wk].Return < o.Invoke; wk++ {
				if ws[wk].Rev > wtop.Rev {
					wtop = ws[wk]
				}
			}
			if wtop.Rev > o.Rev {
				r.add(1, "read your writes", o.Invoke, "read of %s from %s reports revision %d, but %s had acknowledged %s %s at revision %d at %s",
					o.Service, srv, o.Rev, srv, wtop.Kind, wtop.ID, wtop.Rev, secs(wtop.Return))
			}
		}
	}
}

// checkLost is check 2: no acknowledged write is lost, and no refused
// register happened.
func checkLost(m *model, r *Report) {
	n := 0
	for _, o := range m.h.Ops {
		switch {
		case o.Kind == history.Register && o.Outcome == history.OK:
			n++
			in := m.insts[o.ID]
			switch {
			case in == nil || in.put == 0:
				r.add(2, "lost write", o.Return, "register %s (%s, via %s, acknowledged at revision %d) is not in the store's history", o.ID, o.Client, o.Server, o.Rev)
			case o.Rev > 0 && !m.changedAt(o.Rev, o.ID, false):
				r.add(2, "lost write", o.Return, "register %s (via %s) was acknowledged at revision %d, but the store put it at revision %d", o.ID, o.Server, o.Rev, in.put)
			case o.Addr != "" && in.addr != o.Addr:
				r.add(2, "lost write", o.Return, "register %s (via %s) sent %s, the store holds %s", o.ID, o.Server, o.Addr, in.addr)
			}
		case o.Kind == history.Register && o.Outcome == history.Failed:
			n++
			if in := m.insts[o.ID]; in != nil && in.put != 0 {
				r.add(2, "refused write applied", o.Return, "register %s (via %s) was refused (%s), but the store put it at revision %d", o.ID, o.Server, o.Err, in.put)
			}
		case o.Kind == history.Deregister && o.Outcome == history.OK:
			n++
			in := m.insts[o.ID]
			switch {
			case in == nil || in.del == 0:
				r.add(2, "lost write", o.Return, "deregister %s (via %s, acknowledged at revision %d) is not in the store's history: it is still there", o.ID, o.Server, o.Rev)
			case o.Rev > 0 && !m.changedAt(o.Rev, o.ID, true):
				// A delete retried after an attempt etcd may have applied
				// finds the instance gone and succeeds at the revision it
				// read (internal/store/etcd, Delete): it is kept if the
				// instance is gone there, and went no earlier than the
				// request.
				d, gone := in.goneAt(o.Rev)
				if !gone || m.knownBy(d) < o.Invoke-m.slack {
					r.add(2, "lost write", o.Return, "deregister %s (via %s) was acknowledged at revision %d, but the store deleted it at revision %d, before the request", o.ID, o.Server, o.Rev, in.del)
				}
			}
		case o.Kind == history.NodeSet && o.Outcome == history.OK:
			n++
			m.checkNodeSet(o, r)
		}
	}
	r.Checked["acknowledged or refused writes"] = n
}

func (m *model) changedAt(rev int64, id string, deleted bool) bool {
	for _, c := range m.changes[rev] {
		if c.ID == id && c.Deleted == deleted {
			return true
		}
	}
	return false
}

// checkNodeSet: the node held exactly the set at some revision that may
// have been current between the set's invoke and return.
func (m *model) checkNodeSet(o history.Op, r *Report) {
	ids := append([]string(nil), o.IDs...)
	sort.Strings(ids)
	s := m.nodes[o.Node]
	if s == nil {
		if len(ids) > 0 {
			r.add(2, "lost write", o.Return, "node set of %s [%s] (via %s) acknowledged, but the store never held the node", o.Node, strings.Join(ids, " "), o.Server)
		}
		return
	}
	for _, i := range s.byIDs[sig(ids)] {
		if m.after(s.vs[i].rev) <= o.Return+m.slack && !m.replacedBefore(s, i, o.Invoke-m.slack) {
			return
		}
	}
	r.add(2, "lost write", o.Return, "node set of %s [%s] (via %s, %s to %s) acknowledged, but the store never held that set then",
		o.Node, strings.Join(ids, " "), o.Server, secs(o.Invoke), secs(o.Return))
}
