package dnsserver

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

const (
	protoTCP = 0
	protoUDP = 1
)

var protoLabels = [2]string{"_tcp", "_udp"}

// service is an immutable view of one service's instances, replaced whole
// when the service changes. Answers are packed on first use and kept.
type service struct {
	name     string
	all      []*registry.Instance // sorted by ID
	serving  []*registry.Instance // what SRV and A answers hand out
	hasProto [2]bool
	byID     map[string]*instance

	srv, a, aaaa       slot
	protoSRV, protoPTR [2]slot
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

	// browse is the PTR answer at _services._dns-sd._udp; cleared when the
	// set of services changes.
	browse slot
}

func newService(name string, list []registry.Instance, failOpen bool) *service {
	s := &service{name: name, byID: make(map[string]*instance, len(list))}
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

func (n names) service(svc string) string { return svc + "." + n.zone }
func (n names) proto(svc string, p int) string {
	return "_" + svc + "." + protoLabels[p] + "." + n.zone
}
func (n names) target(in *registry.Instance) string { return in.ID + "." + in.Service + "." + n.zone }
func (n names) dnssd(in *registry.Instance, p int) string {
	return in.ID + "._" + in.Service + "." + protoLabels[p] + "." + n.zone
}

func (s *Server) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: s.cfg.TTL}
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

// glue returns the A/AAAA records of the targets of list.
func (s *Server) glue(list []*registry.Instance) []dns.RR {
	out := make([]dns.RR, 0, len(list))
	for _, in := range list {
		out = append(out, s.addrRR(s.names.target(in), in.Address))
	}
	return out
}

func (s *Server) srvAnswer(qname string, list []*registry.Instance) *prepared {
	ws := make([]weighted, 0, len(list))
	for _, in := range list {
		ws = append(ws, weighted{rr: s.srvRR(qname, in), weight: in.Weight})
	}
	return build(qname, dns.TypeSRV, orders(ws), nil, s.glue(list))
}

// addrAnswer answers A (v4) or AAAA with the distinct addresses of list,
// each weighted by the sum of its instances' weights.
func (s *Server) addrAnswer(qname string, qtype uint16, list []*registry.Instance) *prepared {
	weights := map[netip.Addr]int{}
	var addrs []netip.Addr
	for _, in := range list {
		if in.Address.Is4() != (qtype == dns.TypeA) {
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
	ws := make([]weighted, 0, len(addrs))
	for _, a := range addrs {
		ws = append(ws, weighted{rr: s.addrRR(qname, a), weight: uint16(min(weights[a], 65535))})
	}
	return build(qname, qtype, orders(ws), nil, nil)
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

// rebuild replaces the named services from the index. It is the index's
// change hook.
func (s *Server) rebuild(changed []string) {
	built := make(map[string]*service, len(changed))
	for _, name := range changed {
		list, _ := s.index.Instances(name)
		if len(list) == 0 {
			built[name] = nil
			continue
		}
		built[name] = newService(name, list, s.cfg.FailOpen)
	}
	s.zone.mu.Lock()
	for name, svc := range built {
		if svc == nil {
			delete(s.zone.services, name)
		} else {
			s.zone.services[name] = svc
		}
	}
	s.zone.mu.Unlock()
	// The browse list is packed again on its next query.
	s.zone.browse.p.Store(nil)
	s.setSerial(uint32(s.index.Rev()))
}

// ReservedServices returns the service names that cannot be registered in
// this zone, each with the reason: their names would collide with the
// zone's own.
func (s *Server) ReservedServices() map[string]string {
	return map[string]string{
		s.cfg.NSName: "the zone's name server is " + s.nsFQDN(),
		"dns-sd":     "_dns-sd._udp." + s.cfg.Zone + " holds DNS-SD browsing (RFC 6763)",
		"services":   "_services is DNS-SD's browsing label (RFC 6763)",
		"tcp":        "_tcp is a protocol label",
		"udp":        "_udp is a protocol label",
	}
}
