package dnsserver

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

const (
	protoTCP = 0
	protoUDP = 1
)

var protoLabels = [2]string{"_tcp", "_udp"}

// Lists of a service: the answers that carry one record per instance.
const (
	listSRV = iota
	listA
	listAAAA
	listProtoSRV // + proto
	listProtoPTR = listProtoSRV + 2
	nLists       = listProtoPTR + 2
)

// inlineMax is the largest service whose lists are packed by the first
// query that needs them (microseconds). Larger services are packed by a
// background builder, and queries meanwhile get the previous answers.
const inlineMax = 128

// view is a set of one service's instances answered at names of their
// own: the whole service (calc.Z, _calc._tcp.Z) or the instances that
// carry one tag (blue.tag.calc.Z, _blue._calc._tcp.Z and the DNS-SD
// subtype _blue._sub._calc._tcp.Z, see tags.go). Its lists are packed
// once and kept; those of a view of more than inlineMax instances by the
// background builder.
type view struct {
	name     string               // the service
	tag      string               // the tag's label; "" for the whole service
	all      []*registry.Instance // sorted by ID
	serving  []*registry.Instance // what SRV and A answers hand out
	hasProto [2]bool

	lists [nLists]atomic.Pointer[rrset]
	// The weighted order of serving, computed once (see order).
	orderOnce sync.Once
	perm      []int
	starts    []uint32
	// stale, the service's own view's only, holds the previous version's
	// lists while a large service's new ones are being built. A large
	// tag's lists are built before its tagIndex is published.
	stale *[nLists]atomic.Pointer[rrset]
}

// large reports whether the view's lists are packed by the background
// builder rather than by the first query that needs them.
func (v *view) large() bool { return len(v.all) > inlineMax }

// service is an immutable view of one service's instances, replaced whole
// when the service changes. Answers are packed once and kept.
type service struct {
	view
	byID  map[string]*instance
	stale [nLists]atomic.Pointer[rrset]

	// tags are the service's tag views: built with a small service, by
	// the background builder for a large one, whose previous version's
	// staleTags serve meanwhile (see tagIndex).
	tags, staleTags atomic.Pointer[tagIndex]
	// tagRoom is the longest tag label whose names fit in the zone
	// (registry.TagRoom): longer ones, stored before the door checked
	// them, get no names.
	tagRoom int

	// near, staleNear are the service's zone views (locality.go), built
	// and carried as its tags are; nil when locality is off.
	near, staleNear atomic.Pointer[nearIndex]
}

// instance holds the answers at an instance's own names.
type instance struct {
	in            *registry.Instance
	proto         int
	a, aaaa, txt  slot // at the target name, ID.service.Z
	srv, dnssdTXT slot // at the DNS-SD name, ID._service._proto.Z
}

type slot struct{ p atomic.Pointer[prepared] }

// zone is the registry as DNS sees it.
type zone struct {
	mu       sync.RWMutex
	services map[string]*service

	// browse is the PTR answer at _services._dns-sd._udp, built again
	// when the set of services changes.
	browse atomic.Pointer[rrset]
}

// newService returns the view of a service's instances, with its tags
// when it is small.
func newService(name string, list []registry.Instance, failOpen bool, tagRoom int) *service {
	s := &service{view: view{name: name}, byID: make(map[string]*instance, len(list)), tagRoom: tagRoom}
	s.view.stale = &s.stale
	for i := range list {
		in := &list[i]
		s.all = append(s.all, in)
		p := protoTCP
		if in.Protocol == registry.UDP {
			p = protoUDP
		}
		s.hasProto[p] = true
		s.byID[in.ID] = &instance{in: in, proto: p}
		if in.Serving() {
			s.serving = append(s.serving, in)
		}
	}
	if len(s.serving) == 0 && failOpen {
		// Every instance failing: hand them all out rather than nothing,
		// as Route 53 does; the clients' retries may still get through.
		for _, in := range s.all {
			if in.Health.Status == registry.HealthCritical {
				s.serving = append(s.serving, in)
			}
		}
	}
	if !s.large() {
		s.tags.Store(s.buildTags())
	}
	return s
}

func (z *zone) get(name []byte) *service {
	z.mu.RLock()
	s := z.services[string(name)]
	z.mu.RUnlock()
	return s
}

// names builds the owner names of the zone Z.
type names struct{ zone string }

// service is where v's SRV, A and AAAA answers are: calc.Z, or
// blue.tag.calc.Z for a tag.
func (n names) service(v *view) string {
	if v.tag != "" {
		return v.tag + ".tag." + v.name + "." + n.zone
	}
	return v.name + "." + n.zone
}

// proto is where v's SRV answer for protocol p is: _calc._tcp.Z, or
// _blue._calc._tcp.Z for a tag.
func (n names) proto(v *view, p int) string {
	if v.tag != "" {
		return "_" + v.tag + "._" + v.name + "." + protoLabels[p] + "." + n.zone
	}
	return "_" + v.name + "." + protoLabels[p] + "." + n.zone
}

// browse is where v's DNS-SD PTR answer for protocol p is: _calc._tcp.Z,
// or the subtype _blue._sub._calc._tcp.Z for a tag (RFC 6763 s7.1).
func (n names) browse(v *view, p int) string {
	if v.tag != "" {
		return "_" + v.tag + "._sub._" + v.name + "." + protoLabels[p] + "." + n.zone
	}
	return n.proto(v, p)
}
func (n names) target(in *registry.Instance) string { return in.ID + "." + in.Service + "." + n.zone }
func (n names) dnssd(in *registry.Instance, p int) string {
	return in.ID + "._" + in.Service + "." + protoLabels[p] + "." + n.zone
}

func (s *Server) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl.Load()}
}

func (s *Server) srvRR(owner string, in *registry.Instance) dns.RR {
	return &dns.SRV{Hdr: s.hdr(owner, dns.TypeSRV), Priority: in.Priority, Weight: in.Weight, Port: in.Port, Target: s.names.target(in)}
}

func (s *Server) addrRR(owner string, a netip.Addr) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: s.hdr(owner, dns.TypeA), A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: s.hdr(owner, dns.TypeAAAA), AAAA: a.AsSlice()}
}

func (s *Server) txtRR(owner string, in *registry.Instance) dns.RR {
	keys := make([]string, 0, len(in.Meta))
	for k := range in.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	txt := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		txt = append(txt, escapeTXT(k+"="+in.Meta[k]))
	}
	if len(in.Tags) > 0 {
		txt = append(txt, escapeTXT("tags="+strings.Join(in.Tags, ",")))
	}
	if len(txt) == 0 {
		// RFC 6763 6.1: an empty TXT record holds one empty string.
		txt = []string{""}
	}
	return &dns.TXT{Hdr: s.hdr(owner, dns.TypeTXT), Txt: txt}
}

// escapeTXT escapes a string for miekg/dns's presentation-form TXT data.
func escapeTXT(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			b.WriteString("\\" + strconv.Itoa(int(c)/100) + strconv.Itoa(int(c)/10%10) + strconv.Itoa(int(c)%10))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// listSet builds list i of v.
func (s *Server) listSet(v *view, i int) *rrset {
	switch {
	case i == listSRV:
		return s.srvSet(v, s.names.service(v), v.serving, nil)
	case i == listA:
		return s.addrSet(s.names.service(v), true, v.serving)
	case i == listAAAA:
		return s.addrSet(s.names.service(v), false, v.serving)
	case i < listProtoPTR:
		p := i - listProtoSRV
		list := filterProto(v.serving, p)
		var same *rrset
		if len(list) == len(v.serving) {
			// One protocol: the records at calc.Z serve _calc._tcp.Z
			// as they are (owners point at the question); only the
			// glue's owners differ.
			same = v.lists[listSRV].Load()
		}
		return s.srvSet(v, s.names.proto(v, p), list, same)
	default:
		p := i - listProtoPTR
		list := filterProto(v.serving, p)
		if len(list) == 0 {
			return nil
		}
		perm, starts := v.order(list)
		b := newRRBuilder(s, s.names.browse(v, p), len(list), 2+len(v.name)+len(list)*24)
		for j := range list {
			in := list[pick(perm, j)]
			b.ptr(in.ID, "_"+v.name, protoLabels[p])
		}
		return b.done(starts)
	}
}

// order returns the weighted order of list: computed once per view
// version for its whole serving list, which most lists are.
func (v *view) order(list []*registry.Instance) ([]int, []uint32) {
	if len(list) == len(v.serving) {
		v.orderOnce.Do(func() { v.perm, v.starts = weightedOrder(weightsOf(v.serving)) })
		return v.perm, v.starts
	}
	return weightedOrder(weightsOf(list))
}

func weightsOf(list []*registry.Instance) []uint16 {
	ws := make([]uint16, len(list))
	for i, in := range list {
		ws[i] = in.Weight
	}
	return ws
}

// pick returns the j-th index of perm, or j when there is no permutation.
func pick(perm []int, j int) int {
	if perm == nil {
		return j
	}
	return perm[j]
}

// srvSet answers SRV at qname with list, glue for every target apart.
// same, when not nil, holds the same records packed for another name.
func (s *Server) srvSet(svc *view, qname string, list []*registry.Instance, same *rrset) *rrset {
	if len(list) == 0 {
		return nil
	}
	g := newRRBuilder(s, qname, len(list), len(list)*(36+len(svc.name)))
	for _, in := range list {
		g.addr(in.Address, in.ID, svc.name)
	}
	var rs *rrset
	if same != nil && same != emptySet {
		rs = &rrset{recs: same.recs, off: same.off, starts: same.starts, addrs: same.addrs}
	} else {
		perm, starts := svc.order(list)
		b := newRRBuilder(s, qname, len(list), len(list)*(24+len(svc.name)+len(s.zoneWire)))
		for i := range list {
			in := list[pick(perm, i)]
			b.srv(in.Priority, in.Weight, in.Port, in.ID, svc.name)
		}
		rs = b.done(starts)
		if s.loc.on() {
			rs.addrs = make([]addrKey, len(list))
			for i := range list {
				rs.addrs[i] = keyOf(list[pick(perm, i)].Address)
			}
		}
	}
	rs.glue, rs.nglue = g.buf, len(list)
	if s.loc.on() {
		// Where each target's glue is and its address, to leave out
		// the asker's own host's, already sent (see answerSet).
		rs.glueOff = g.off
		rs.glueAddrs = make([]addrKey, len(list))
		for i, in := range list {
			rs.glueAddrs[i] = keyOf(in.Address)
		}
	}
	return rs
}

// addrSet answers A (v4) or AAAA with the distinct addresses of list,
// each weighted by the sum of its instances' weights.
func (s *Server) addrSet(qname string, v4 bool, list []*registry.Instance) *rrset {
	weights := map[netip.Addr]int{}
	var addrs []netip.Addr
	for _, in := range list {
		if in.Address.Is4() != v4 {
			continue
		}
		if _, ok := weights[in.Address]; !ok {
			addrs = append(addrs, in.Address)
		}
		weights[in.Address] += int(in.Weight)
	}
	if len(addrs) == 0 {
		return nil
	}
	ws := make([]uint16, len(addrs))
	for i, a := range addrs {
		ws[i] = uint16(min(weights[a], 65535))
	}
	perm, starts := weightedOrder(ws)
	b := newRRBuilder(s, qname, len(addrs), len(addrs)*28)
	for i := range addrs {
		b.addr(addrs[pick(perm, i)])
	}
	rs := b.done(starts)
	if s.loc.on() {
		rs.addrs = make([]addrKey, len(addrs))
		for i := range addrs {
			rs.addrs[i] = keyOf(addrs[pick(perm, i)])
		}
	}
	return rs
}

func filterProto(list []*registry.Instance, p int) []*registry.Instance {
	want := registry.TCP
	if p == protoUDP {
		want = registry.UDP
	}
	var out []*registry.Instance
	for _, in := range list {
		if in.Protocol == want {
			out = append(out, in)
		}
	}
	return out
}

// emptySet marks a list that has no records (NODATA), so that it is not
// built again.
var emptySet = &rrset{off: []uint32{0}}

// list returns list i of v: built, or built now when the view is small,
// or the previous version's while a large service is being built.
func (s *Server) list(v *view, i int) *rrset {
	if rs := v.lists[i].Load(); rs != nil {
		return rs
	}
	if v.large() && v.stale != nil {
		if rs := v.stale[i].Load(); rs != nil {
			return rs
		}
		// The builder stores the new list before it drops the stale one.
		return v.lists[i].Load()
	}
	rs := s.listSet(v, i)
	if rs == nil {
		rs = emptySet
	}
	v.lists[i].Store(rs)
	return rs
}

// buildAll builds every list of a large service, and its tags with the
// lists of its large ones, and drops the stale ones. Small tags' lists
// are packed by the first query that needs them, as small services' are.
func (s *Server) buildAll(svc *service) {
	s.buildView(&svc.view)
	if svc.tags.Load() == nil {
		t := svc.buildTags()
		for _, v := range t.views {
			if v.large() {
				s.buildView(v)
			}
		}
		svc.tags.Store(t)
	}
	svc.staleTags.Store(nil)
	s.buildNearAll(svc)
}

// buildView builds every list of v and drops the stale ones.
func (s *Server) buildView(v *view) {
	for i := range v.lists {
		if v.lists[i].Load() == nil {
			rs := s.listSet(v, i)
			if rs == nil {
				rs = emptySet
			}
			v.lists[i].Store(rs)
		}
		if v.stale != nil {
			v.stale[i].Store(nil)
		}
	}
}

// builder packs large services' lists one at a time, off the packet path
// and off the index's change hook. A service that changes again before
// its turn is built once, in its latest version.
type builder struct {
	mu      sync.Mutex
	pending map[string]*service
	running bool
	// hold, when set (tests), is called before each build.
	hold func(name string)
}

func (s *Server) queueBuild(svc *service) {
	b := &s.builder
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]*service{}
	}
	b.pending[svc.name] = svc
	if !b.running {
		b.running = true
		go s.runBuilds()
	}
}

func (s *Server) runBuilds() {
	b := &s.builder
	for {
		b.mu.Lock()
		var svc *service
		for _, v := range b.pending {
			svc = v
			break
		}
		if svc == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		delete(b.pending, svc.name)
		hold := b.hold
		b.mu.Unlock()
		if hold != nil {
			hold(svc.name)
		}
		if s.zone.get([]byte(svc.name)) != svc {
			continue // replaced meanwhile: the newer version is queued
		}
		start := time.Now()
		s.buildAll(svc)
		s.metrics.buildSeconds.Observe(time.Since(start).Seconds())
	}
}

// rebuild replaces the named services from the index. It is the index's
// change hook: it copies the instances (O(n log n) for a service of n)
// and leaves the packing of large services to the builder, serving their
// previous answers meanwhile. Hooks never run concurrently, nor with
// LimitTTL.
func (s *Server) rebuild(changed []string) {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	s.rebuildLocked(changed)
}

func (s *Server) rebuildLocked(changed []string) {
	type change struct{ old, svc *service }
	chs := make(map[string]change, len(changed))
	var queue []*service
	for _, name := range changed {
		c := change{old: s.zone.get([]byte(name))}
		if list, _ := s.index.Instances(name); len(list) > 0 {
			if list = s.servable(list); len(list) > 0 {
				c.svc = newService(name, list, s.cfg.FailOpen, registry.TagRoom(len(s.zoneWire), name))
				if s.loc.on() && !c.svc.large() {
					c.svc.near.Store(s.loc.buildNear(c.svc))
				}
			}
		}
		if c.svc != nil && c.svc.large() {
			if s.carryStale(c.old, c.svc) {
				queue = append(queue, c.svc)
			} else {
				// Nothing to serve meanwhile (a new large service):
				// build now, on the hook, never on the packet path.
				s.buildAll(c.svc)
			}
		}
		chs[name] = c
	}
	setChanged := false
	s.zone.mu.Lock()
	for name, c := range chs {
		if c.svc == nil {
			delete(s.zone.services, name)
		} else {
			s.zone.services[name] = c.svc
		}
		if (c.old == nil) != (c.svc == nil) || c.old != nil && c.svc != nil && c.old.hasProto != c.svc.hasProto {
			setChanged = true
		}
	}
	s.zone.mu.Unlock()
	for _, svc := range queue {
		s.queueBuild(svc)
	}
	if setChanged || s.zone.browse.Load() == nil {
		s.zone.browse.Store(s.browseSet())
	}
	prev := s.serial.Load()
	s.setSerial(nextSerial(prev, s.index.Rev()))
	if serial := s.serial.Load(); serial != prev {
		for _, fn := range s.zoneHooks {
			fn(serial)
		}
	}
}

// carryStale gives svc, a large service, the lists and tags of its
// previous version old, to serve while the builder packs the new ones.
// It reports false when old has not all of them (there is no old, or it
// was small and some were never packed): the caller builds svc now.
func (s *Server) carryStale(old, svc *service) bool {
	if old == nil {
		return false
	}
	all := true
	for i := range svc.stale {
		rs := old.lists[i].Load()
		if rs == nil {
			rs = old.stale[i].Load()
		}
		svc.stale[i].Store(rs)
		all = all && rs != nil
	}
	t := old.tagIndex()
	svc.staleTags.Store(t)
	svc.staleNear.Store(old.nearIdx())
	return all && t != nil
}

// servable drops the instances whose names DNS cannot carry in this zone
// (labels over 63 bytes, names over 255): registrations are refused at
// the door, but a store may hold older ones, and one unpackable name
// must not break a whole answer.
func (s *Server) servable(list []registry.Instance) []registry.Instance {
	room := 255 - len(s.zoneWire) - 8 // <id>._<service>._tcp.Z
	out := list[:0]
	for _, in := range list {
		if len(in.ID) > 63 || len(in.Service) > 62 || len(in.ID)+len(in.Service) > room {
			s.log.Warn("instance not served: its DNS names would break DNS limits in this zone; deregister it", "id", in.ID, "service", in.Service, "zone", s.cfg.Zone)
			continue
		}
		out = append(out, in)
	}
	return out
}

// browseSet answers PTR at _services._dns-sd._udp.Z: every service and
// protocol, _name._proto.Z (RFC 6763 s9).
func (s *Server) browseSet() *rrset {
	s.zone.mu.RLock()
	type sp struct {
		name string
		p    int
	}
	var all []sp
	for _, svc := range s.zone.services {
		for p := range protoLabels {
			if svc.hasProto[p] {
				all = append(all, sp{svc.name, p})
			}
		}
	}
	s.zone.mu.RUnlock()
	if len(all) == 0 {
		return emptySet
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].name != all[j].name {
			return all[i].name < all[j].name
		}
		return all[i].p < all[j].p
	})
	b := newRRBuilder(s, "_services._dns-sd._udp."+s.cfg.Zone, len(all), len(all)*24)
	for _, e := range all {
		b.ptr("_"+e.name, protoLabels[e.p])
	}
	return b.done(nil)
}
