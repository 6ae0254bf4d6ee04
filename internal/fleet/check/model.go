package check

import (
	"hash/fnv"
	"math"
	"sort"
	"strings"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

const (
	never  = int64(math.MaxInt64) // a time after every other
	always = int64(math.MinInt64) // a time before every other
)

// version is one state of a service (or a node) in the store: from rev
// until the next version's rev.
type version struct {
	rev int64
	// ids are the live instances, sorted; addrs the serving ones' address:port, sorted.
	ids    []string
	idSig  uint64
	srvSig uint64
}

// series is every state a service or node went through, in revision order;
// the first is the empty state at revision 0.
type series struct {
	vs     []version
	bySrv  map[uint64][]int // serving signature -> version indexes, rising
	byIDs  map[uint64][]int
	exists bool // it ever had an instance
}

// at is the index of the version current at revision rev.
func (s *series) at(rev int64) int {
	return sort.Search(len(s.vs), func(i int) bool { return s.vs[i].rev > rev }) - 1
}

// end is the revision that replaced version i (0: none did).
func (s *series) end(i int) int64 {
	if i+1 < len(s.vs) {
		return s.vs[i+1].rev
	}
	return 0
}

// instance is what the store's history says of one instance ID.
type instance struct {
	service, node, addr string
	put, del            int64 // first put, first delete (0: none)
	// life is every change to it, in revision order.
	life []life
	// putAfterDel is a put after a delete that was not a lease expiry
	// (after an expiry, its node puts it again when it syncs).
	putAfterDel int64
}

type life struct {
	rev              int64
	deleted, expired bool
}

// goneAt reports whether the instance was deleted (and not put again) at
// revision rev, and by which delete.
func (in *instance) goneAt(rev int64) (int64, bool) {
	var last *life
	for i := range in.life {
		if in.life[i].rev > rev {
			break
		}
		last = &in.life[i]
	}
	if last != nil && last.deleted {
		return last.rev, true
	}
	return 0, false
}

// model is the store's history made searchable, with the bounds on when
// each revision was committed.
type model struct {
	h        *history.History
	slack    int64
	services map[string]*series
	nodes    map[string]*series
	insts    map[string]*instance
	// expiries are each node's lease expiries: revisions at which the
	// store deleted its instances because its lease ran out.
	expiries map[string][]int64
	// changeRev: revision -> instance IDs changed at it.
	changes map[int64][]history.Change
	// knownBy and after bound commit times (see below).
	obsRev, obsMin []int64
	wRev, wMax     []int64
	faults         map[string][][2]int64
	lastRev        int64
}

func sig(ss []string) uint64 {
	f := fnv.New64a()
	for _, s := range ss {
		f.Write([]byte(s))
		f.Write([]byte{0})
	}
	return f.Sum64()
}

func newModel(h *history.History, slack int64) *model {
	m := &model{
		h: h, slack: slack,
		services: map[string]*series{}, nodes: map[string]*series{},
		insts: map[string]*instance{}, expiries: map[string][]int64{},
		changes: map[int64][]history.Change{}, faults: map[string][][2]int64{},
	}
	m.replay()
	m.bounds()
	for _, f := range h.Faults {
		for _, t := range strings.Split(f.Target, ",") {
			m.faults[t] = append(m.faults[t], [2]int64{f.Start, f.End})
		}
	}
	return m
}

// replay applies the store's changes in revision order, keeping every
// state of every service and node.
func (m *model) replay() {
	truth := append([]history.Change(nil), m.h.Truth...)
	sort.SliceStable(truth, func(i, j int) bool { return truth[i].Rev < truth[j].Rev })
	live := map[string]history.Change{}
	bySvc := map[string]map[string]bool{}
	byNode := map[string]map[string]bool{}
	get := func(ss map[string]*series, k string) *series {
		s := ss[k]
		if s == nil {
			s = &series{bySrv: map[uint64][]int{}, byIDs: map[uint64][]int{}}
			s.push(version{ids: nil, idSig: sig(nil), srvSig: sig(nil)})
			ss[k] = s
		}
		return s
	}
	for i := 0; i < len(truth); {
		rev := truth[i].Rev
		svcs, nodes := map[string]bool{}, map[string]bool{}
		expiredNodes := map[string]bool{}
		for ; i < len(truth) && truth[i].Rev == rev; i++ {
			c := truth[i]
			m.changes[rev] = append(m.changes[rev], c)
			in := m.insts[c.ID]
			if in == nil {
				in = &instance{service: c.Service, node: c.Node, addr: c.Addr}
				m.insts[c.ID] = in
			}
			if prev, ok := live[c.ID]; ok {
				// A put may move an instance between services or nodes.
				delete(bySvc[prev.Service], c.ID)
				delete(byNode[prev.Node], c.ID)
				svcs[prev.Service], nodes[prev.Node] = true, true
			}
			svcs[c.Service] = true
			if c.Node != "" {
				nodes[c.Node] = true
			}
			if c.Deleted {
				delete(live, c.ID)
				if in.del == 0 {
					in.del = rev
				}
				if c.Expired {
					expiredNodes[c.Node] = true
				}
				in.life = append(in.life, life{rev: rev, deleted: true, expired: c.Expired})
				continue
			}
			if in.put == 0 {
				in.put = rev
			}
			if n := len(in.life); n > 0 && in.life[n-1].deleted && !in.life[n-1].expired && in.putAfterDel == 0 {
				in.putAfterDel = rev
			}
			in.life = append(in.life, life{rev: rev})
			in.addr = c.Addr
			live[c.ID] = c
			if bySvc[c.Service] == nil {
				bySvc[c.Service] = map[string]bool{}
			}
			bySvc[c.Service][c.ID] = true
			if c.Node != "" {
				if byNode[c.Node] == nil {
					byNode[c.Node] = map[string]bool{}
				}
				byNode[c.Node][c.ID] = true
			}
		}
		for n := range expiredNodes {
			m.expiries[n] = append(m.expiries[n], rev)
		}
		for svc := range svcs {
			if svc == "" {
				continue
			}
			get(m.services, svc).push(state(rev, bySvc[svc], live))
		}
		for n := range nodes {
			if n == "" {
				continue
			}
			get(m.nodes, n).push(state(rev, byNode[n], live))
		}
		m.lastRev = rev
	}
}

func state(rev int64, ids map[string]bool, live map[string]history.Change) version {
	v := version{rev: rev}
	var addrs []string
	for id := range ids {
		v.ids = append(v.ids, id)
		if c := live[id]; c.Serving {
			addrs = append(addrs, c.Addr)
		}
	}
	sort.Strings(v.ids)
	sort.Strings(addrs)
	v.idSig, v.srvSig = sig(v.ids), sig(addrs)
	return v
}

func (s *series) push(v version) {
	i := len(s.vs)
	s.vs = append(s.vs, v)
	s.bySrv[v.srvSig] = append(s.bySrv[v.srvSig], i)
	s.byIDs[v.idSig] = append(s.byIDs[v.idSig], i)
	if len(v.ids) > 0 {
		s.exists = true
	}
}

// bounds gathers what bounds the commit time of each revision:
//
//   - knownBy(r): the earliest moment a client was told of revision r
//     or a later one (a read's or write's answer, a watch event, the
//     harness's own watch of etcd). r was committed before then.
//   - after(r): the latest invoke of an acknowledged write whose revision
//     is below r. That write was committed after its invoke and before r,
//     so r was committed after then.
func (m *model) bounds() {
	type obs struct{ rev, t int64 }
	var o []obs
	var w []obs
	for _, op := range m.h.Ops {
		if op.Outcome != history.OK || op.Rev <= 0 {
			continue
		}
		o = append(o, obs{op.Rev, op.Return})
		if op.Kind == history.Register || op.Kind == history.Deregister {
			w = append(w, obs{op.Rev, op.Invoke})
		}
	}
	for _, e := range m.h.Watches {
		if e.Index > 0 {
			o = append(o, obs{e.Index, e.Got})
		}
	}
	for _, c := range m.h.Truth {
		if c.At > 0 {
			o = append(o, obs{c.Rev, c.At})
		}
	}
	sort.Slice(o, func(i, j int) bool { return o[i].rev < o[j].rev })
	m.obsRev = make([]int64, len(o))
	m.obsMin = make([]int64, len(o))
	low := never
	for i := len(o) - 1; i >= 0; i-- {
		low = min(low, o[i].t)
		m.obsRev[i], m.obsMin[i] = o[i].rev, low
	}
	sort.Slice(w, func(i, j int) bool { return w[i].rev < w[j].rev })
	m.wRev = make([]int64, len(w))
	m.wMax = make([]int64, len(w))
	high := always
	for i, x := range w {
		high = max(high, x.t)
		m.wRev[i], m.wMax[i] = x.rev, high
	}
}

// knownBy is a time by which revision r was certainly committed (never:
// no client heard of it).
func (m *model) knownBy(r int64) int64 {
	if r <= 0 {
		return always
	}
	i := sort.Search(len(m.obsRev), func(i int) bool { return m.obsRev[i] >= r })
	if i == len(m.obsRev) {
		return never
	}
	return m.obsMin[i]
}

// after is a time after which revision r was certainly committed.
func (m *model) after(r int64) int64 {
	i := sort.Search(len(m.wRev), func(i int) bool { return m.wRev[i] >= r }) - 1
	if i < 0 {
		return always
	}
	return m.wMax[i]
}

// inFault reports whether a fault touching name (a server, node or host)
// was on at t, or had healed less than Bounds.Converge before.
func (m *model) inFault(name string, t int64) bool {
	return m.inFaultFor(name, t, int64(m.h.Bounds.Converge))
}

// inFaultFor is inFault with extra after each heal.
func (m *model) inFaultFor(name string, t, extra int64) bool {
	for _, w := range m.faults[name] {
		if t >= w[0] && t <= w[1]+extra {
			return true
		}
	}
	return false
}

// saidTooLong checks that a server that says it is stale does so only
// during a fault touching it, or within Bounds.ConvergeSaid of its heal.
func (m *model) saidTooLong(r *Report, check int, server string, t int64, what string) {
	said := int64(m.h.Bounds.ConvergeSaid)
	if said > 0 && !m.inFaultFor(server, t, said) {
		r.add(check, "stale too long", t, "%s said it was stale (%s) with no fault touching it in the %s before", server, what, secs(said))
	}
}

// replacedBefore reports whether version i of s had certainly been
// replaced before t.
func (m *model) replacedBefore(s *series, i int, t int64) bool {
	e := s.end(i)
	return e != 0 && m.knownBy(e) < t
}

// age is how long before t version i of s had certainly been replaced
// (0: it may still have been current at t).
func (m *model) age(s *series, i int, t int64) int64 {
	e := s.end(i)
	if e == 0 {
		return 0
	}
	if k := m.knownBy(e); k < t {
		return t - k
	}
	return 0
}
