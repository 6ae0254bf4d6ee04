package dnsserver

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Locality says how a service's SRV, A and AAAA answers depend on where
// the asker is: its source address mapped to a zone (Config.LocalityZones)
// and the instances' zone metadata (registry.MetaZone).
type Locality int

const (
	// LocalityOff answers every asker alike (the default).
	LocalityOff Locality = iota
	// LocalityOrder puts the instances of the asker's zone first; the rest
	// follow, each part in the usual weighted rotation.
	LocalityOrder
	// LocalityPrefer answers only the instances of the asker's zone when
	// one of them is passing its check, and all of them otherwise.
	LocalityPrefer
)

// String returns the mode as the --locality flag spells it.
func (l Locality) String() string {
	switch l {
	case LocalityOrder:
		return "order"
	case LocalityPrefer:
		return "prefer"
	}
	return "off"
}

// ParseLocality reads a locality mode: off, order or prefer.
func ParseLocality(v string) (Locality, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "":
		return LocalityOff, nil
	case "order":
		return LocalityOrder, nil
	case "prefer":
		return LocalityPrefer, nil
	}
	return LocalityOff, fmt.Errorf("locality %q: want off, order or prefer", v)
}

// LocalityZone maps the askers whose source address is in Prefix to Zone.
type LocalityZone struct {
	Prefix netip.Prefix
	Zone   string
}

// ParseLocalityZone reads CIDR=label ("10.0.1.0/24=us-east-1a"); the label
// must be what an agent's --node-zone accepts (registry.CheckZone).
func ParseLocalityZone(v string) (LocalityZone, error) {
	cidr, label, ok := strings.Cut(v, "=")
	if !ok {
		return LocalityZone{}, fmt.Errorf("locality zone %q: want CIDR=label, e.g. 10.0.1.0/24=us-east-1a", v)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return LocalityZone{}, fmt.Errorf("locality zone %q: %w", v, err)
	}
	lz := LocalityZone{Prefix: p, Zone: strings.TrimSpace(label)}
	if err := lz.check(); err != nil {
		return LocalityZone{}, fmt.Errorf("locality zone %q: %w", v, err)
	}
	return lz, nil
}

func (lz LocalityZone) check() error {
	if !lz.Prefix.IsValid() {
		return fmt.Errorf("invalid prefix")
	}
	if lz.Prefix.Addr().Zone() != "" {
		return fmt.Errorf("prefix %s: an IPv6 scope is not allowed", lz.Prefix)
	}
	return registry.CheckZone(lz.Zone)
}

// maxLocalityZones bounds the prefixes of Config.LocalityZones: the zone
// table is scanned per query, and every declared zone costs each service
// a view.
const maxLocalityZones = 256

// zonePrefix is one entry of the asker→zone table.
type zonePrefix struct {
	p    netip.Prefix
	zone int // index into locality.names
}

// locality is the server's asker→zone table and its zones.
type locality struct {
	mode  Locality
	table []zonePrefix // longest prefix first
	names []string     // the distinct zones, by index
	index map[string]int
}

// newLocality checks the configured zones and builds the table.
func newLocality(mode Locality, zones []LocalityZone) (*locality, error) {
	if mode < LocalityOff || mode > LocalityPrefer {
		return nil, fmt.Errorf("locality mode %d: unknown", mode)
	}
	if len(zones) > maxLocalityZones {
		return nil, fmt.Errorf("%d locality zones: at most %d", len(zones), maxLocalityZones)
	}
	l := &locality{mode: mode, index: map[string]int{}}
	seen := map[netip.Prefix]string{}
	for _, lz := range zones {
		if err := lz.check(); err != nil {
			return nil, fmt.Errorf("locality zone %s=%s: %w", lz.Prefix, lz.Zone, err)
		}
		p := netip.PrefixFrom(lz.Prefix.Addr().Unmap(), lz.Prefix.Bits())
		if lz.Prefix.Addr().Is4In6() {
			p = netip.PrefixFrom(lz.Prefix.Addr().Unmap(), max(lz.Prefix.Bits()-96, 0))
		}
		p = p.Masked()
		if prev, ok := seen[p]; ok {
			if prev != lz.Zone {
				return nil, fmt.Errorf("locality zone %s=%s: %s is already mapped to %s", lz.Prefix, lz.Zone, p, prev)
			}
			continue
		}
		seen[p] = lz.Zone
		z, ok := l.index[lz.Zone]
		if !ok {
			z = len(l.names)
			l.index[lz.Zone] = z
			l.names = append(l.names, lz.Zone)
		}
		l.table = append(l.table, zonePrefix{p: p, zone: z})
	}
	sort.SliceStable(l.table, func(i, j int) bool { return l.table[i].p.Bits() > l.table[j].p.Bits() })
	return l, nil
}

// on reports whether answers depend on the asker.
func (l *locality) on() bool { return l.mode != LocalityOff }

// zoneOf returns the zone of an asker, -1 for none: the longest prefix
// that holds its address wins. It allocates nothing.
func (l *locality) zoneOf(a netip.Addr) int {
	if !l.on() || !a.IsValid() {
		return -1
	}
	a = a.Unmap().WithZone("")
	for i := range l.table {
		if l.table[i].p.Contains(a) {
			return l.table[i].zone
		}
	}
	return -1
}

// nearIndex is one service version's instances split by where they are:
// for declared zone z, views[z].near holds its passing instances and
// views[z].far the rest of the service's answer (near is nil when the
// zone has no passing instance: its askers get the whole answer); hosts
// holds the passing instances at each address.
type nearIndex struct {
	views []nearView
	hosts map[addrKey]*view
}

type nearView struct{ near, far *view }

// buildNear splits svc's serving instances by zone and by address: O(n·z)
// for n instances and z declared zones. Instances handed out only by
// fail-open are near nowhere.
func (l *locality) buildNear(svc *service) *nearIndex {
	nz := len(l.names)
	ni := &nearIndex{views: make([]nearView, nz)}
	zi := make([]int, len(svc.serving))
	count := make([]int, nz)
	var chunk []view
	for j, in := range svc.serving {
		zi[j] = -1
		if !in.Serving() {
			continue
		}
		if z, ok := l.index[in.Meta[registry.MetaZone]]; ok {
			zi[j] = z
			count[z]++
		}
		if ni.hosts == nil {
			ni.hosts = map[addrKey]*view{}
		}
		a := keyOf(in.Address)
		v := ni.hosts[a]
		if v == nil {
			if len(chunk) == 0 {
				chunk = make([]view, min(viewChunk, len(svc.serving)-j))
			}
			v, chunk = &chunk[0], chunk[1:]
			v.name = svc.name
			ni.hosts[a] = v
		}
		v.all = append(v.all, in)
		v.serving = v.all
	}
	for z := range nz {
		if count[z] == 0 {
			continue
		}
		near := make([]*registry.Instance, 0, count[z])
		far := make([]*registry.Instance, 0, len(svc.serving)-count[z])
		for j, in := range svc.serving {
			if zi[j] == z {
				near = append(near, in)
			} else {
				far = append(far, in)
			}
		}
		vs := make([]view, 2)
		vs[0] = view{name: svc.name, all: near, serving: near}
		vs[1] = view{name: svc.name, all: far, serving: far}
		ni.views[z] = nearView{near: &vs[0], far: &vs[1]}
	}
	return ni
}

// nearIdx returns the service's zone views: its own, or while the
// builder makes them, its previous version's; nil when locality is off.
func (svc *service) nearIdx() *nearIndex { return current(&svc.near, &svc.staleNear) }

// addrKey is an address as the packet path compares it: the 16 bytes of
// its unmapped form, without an IPv6 scope (no pointer: the answer's
// locals stay plain data).
type addrKey [16]byte

func keyOf(a netip.Addr) addrKey { return a.Unmap().WithZone("").As16() }

// localResult is an asker's locality, and the parts a service's answer
// adds after its first (localAnswer).
type localResult struct {
	zone   int     // the asker's zone, -1 for none
	from   addrKey // the asker's address, when fromOK
	fromOK bool
	// more follow the first part of the answer; skip leaves the records
	// at from out of them.
	more [2]*rrset
	skip bool
}

// asker sets the asker's zone and address.
func (lr *localResult) asker(l *locality, from netip.Addr) {
	lr.zone = l.zoneOf(from)
	if from.IsValid() {
		lr.from, lr.fromOK = keyOf(from), true
	}
}

// localAnswer answers list i of the service (-1: none) for the asker of
// lr, adding the parts after the first to lr: the whole list; or, with
// locality on, first the instances on the asker's own host (an instance
// address that is the asker's), then those of its zone, then
// (LocalityOrder) the rest; each part in its own weighted rotation, and
// the asker's host's left out of the later ones. An asker with no
// passing instance on its host nor in its zone gets the whole list.
func (s *Server) localAnswer(svc *service, lr *localResult, i int) *rrset {
	if i < 0 {
		return nil
	}
	all := s.list(&svc.view, i)
	if lr == nil || !s.loc.on() {
		return all
	}
	ni := svc.nearIdx()
	if ni == nil {
		return all
	}
	var host, near, far *rrset
	if v := ni.hosts[lr.from]; v != nil && lr.fromOK {
		if host = s.list(v, i); host.len() == 0 {
			host = nil
		}
	}
	if lr.zone >= 0 && lr.zone < len(ni.views) && ni.views[lr.zone].near != nil {
		nv := ni.views[lr.zone]
		if near = s.list(nv.near, i); near.len() == 0 {
			near = nil
		} else {
			far = s.list(nv.far, i)
		}
	}
	prefer := s.loc.mode == LocalityPrefer
	switch {
	case host == nil && near == nil:
		return all
	case host == nil:
		if !prefer {
			lr.more[0] = far
		}
		return near
	case prefer:
		lr.more[0] = near
	case near == nil:
		lr.more[0] = all
	default:
		lr.more[0], lr.more[1] = near, far
	}
	lr.skip = true
	return host
}

// buildNearAll builds svc's zone and host views, the lists of the large
// ones, and drops the stale ones (the builder's part, see buildAll).
func (s *Server) buildNearAll(svc *service) {
	if s.loc.on() && svc.near.Load() == nil {
		ni := s.loc.buildNear(svc)
		for _, nv := range ni.views {
			for _, v := range []*view{nv.near, nv.far} {
				if v != nil && v.large() {
					s.buildView(v)
				}
			}
		}
		for _, v := range ni.hosts {
			if v.large() {
				s.buildView(v)
			}
		}
		svc.near.Store(ni)
	}
	svc.staleNear.Store(nil)
}

// answerLocal is answerFound for an asker at from, with locality on.
func (s *Server) answerLocal(req, out []byte, q *query, rel, start, limit int, tcp bool, from netip.Addr) []byte {
	var lr localResult
	lr.asker(s.loc, from)
	return s.answerFound(req, out, q, rel, start, limit, tcp, &lr)
}

// answerParts is answerSet for an answer in parts (localAnswer): it
// writes the question and as many whole records of rs as fit in limit,
// in the next order, then, while all of those fit, those of
// lr.more, each in its own next order and, when lr.skip, without the
// records at the asker's address (its own host's, which rs holds). Over UDP an answer that
// lost records has TC set (RFC 2181 s9: the client may use what it got,
// or ask over TCP); the glue comes only with a complete answer, and only
// when it all fits.
func (s *Server) answerParts(req, out []byte, q *query, rs *rrset, lr *localResult, limit int, tcp bool) []byte {
	room := limit
	if q.edns {
		room -= optLen
	}
	n := copy(out, req[:q.qEnd])
	setFlags(out, req, true, rcodeNoError)
	n, an, whole := putRotated(out, n, room, rs, nil)
	glue, nglue := len(rs.glue), rs.nglue
	var skip *addrKey
	if lr.skip {
		skip = &lr.from
	}
	for _, next := range lr.more {
		if !whole || next == nil || next.len() == 0 {
			continue
		}
		var more int
		n, more, whole = putRotated(out, n, room, next, skip)
		an += more
		g, ng := next.glueSize(skip)
		glue += g
		nglue += ng
	}
	ar := 0
	if whole && nglue > 0 && n+glue <= room {
		n += copy(out[n:], rs.glue)
		for _, next := range lr.more {
			if next != nil {
				n = next.putGlue(out, n, skip)
			}
		}
		ar = nglue
	}
	setCounts(out, 1, uint16(an), 0, uint16(ar))
	if !whole && !tcp {
		out[2] |= 0x02 // TC
	}
	if q.edns {
		n = s.appendOPT(out, n, q, rcodeNoError)
	}
	return out[:n]
}
