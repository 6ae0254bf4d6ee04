package dnsserver

import (
	"maps"
	"net"
	"net/netip"
	"sort"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Transfers answers the queries the packet path hands over once it is
// set (SetTransfers): AXFR and IXFR for the zone, and any query for the
// zone signed with TSIG. internal/zonexfr implements it.
type Transfers interface {
	// ServeTCP takes over a TCP connection whose first query, already
	// read, is req, and returns when it is done with the connection.
	ServeTCP(c net.Conn, req []byte)
	// AnswerUDP returns the answer to req, a UDP query from client;
	// nil drops it.
	AnswerUDP(req []byte, client netip.AddrPort) []byte
}

// SetTransfers hands AXFR, IXFR and TSIG-signed queries to t. Without it
// AXFR and IXFR are REFUSED and signed queries answered unsigned. Call
// it before Serve.
func (s *Server) SetTransfers(t Transfers) { s.transfers.Store(&t) }

// OnZoneChange registers fn to be called with the new serial after each
// change of the zone, on the registry index's change hook: fn must not
// block, nor call View. Register before the index runs.
func (s *Server) OnZoneChange(fn func(serial uint32)) {
	s.rebuildMu.Lock()
	s.zoneHooks = append(s.zoneHooks, fn)
	s.rebuildMu.Unlock()
}

// Serial returns the SOA serial the server answers with now.
func (s *Server) Serial() uint32 { return s.serial.Load() }

// MaxUDPSize returns the largest UDP answer the server sends.
func (s *Server) MaxUDPSize() int { return s.cfg.MaxUDPSize }

// nextSerial is the serial after a change at registry revision rev: the
// revision's low 32 bits, which grow with it in RFC 1982 serial
// arithmetic; or, should the revision seem to go back (a store listed
// again from behind), one more than cur, so that the serial only grows.
func nextSerial(cur uint32, rev int64) uint32 {
	r := uint32(rev)
	if r == cur || SerialLess(cur, r) {
		return r
	}
	return cur + 1
}

// SerialLess reports whether serial a comes before b in RFC 1982 serial
// arithmetic (32 bits). Serials 2^31 apart are not comparable: false.
func SerialLess(a, b uint32) bool {
	return a != b && (b-a) < 1<<31
}

// ZoneView is the zone's content at one serial, as the server answers it:
// immutable, so that a zone transfer reads it while the zone moves on.
type ZoneView struct {
	s        *Server
	serial   uint32
	services map[string]*service
}

// View returns the zone as it is now. It copies the map of services
// (O(services)), not their instances.
func (s *Server) View() *ZoneView {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	s.zone.mu.RLock()
	m := maps.Clone(s.zone.services)
	s.zone.mu.RUnlock()
	return &ZoneView{s: s, serial: s.serial.Load(), services: m}
}

// Serial is the view's SOA serial.
func (v *ZoneView) Serial() uint32 { return v.serial }

// Zone is the zone's name, fully qualified.
func (v *ZoneView) Zone() string { return v.s.cfg.Zone }

// SOA returns the zone's SOA record at serial, with the configured
// negative TTL (not the one LimitTTL may cap answers at).
func (v *ZoneView) SOA(serial uint32) *dns.SOA { return v.s.ZoneSOA(serial) }

// ZoneSOA returns the zone's SOA record at serial, as transfers carry it:
// with the configured negative TTL.
func (s *Server) ZoneSOA(serial uint32) *dns.SOA { return s.soaAt(serial, s.cfg.NegTTL) }

// Apex returns the records at the apex and the name server's name,
// but the SOA: NS, and ns.Z's addresses.
func (v *ZoneView) Apex() []dns.RR {
	s := v.s
	out := []dns.RR{&dns.NS{Hdr: s.hdr(s.cfg.Zone, dns.TypeNS), Ns: s.nsFQDN()}}
	for _, a := range s.cfg.NSAddrs {
		out = append(out, s.addrRR(s.nsFQDN(), a))
	}
	return v.withTTL(out)
}

// Services returns the names of the zone's services, sorted.
func (v *ZoneView) Services() []string {
	out := make([]string, 0, len(v.services))
	for n := range v.services {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Changed returns, sorted, the services whose records may differ between
// old and v: those added, removed or replaced since.
func (v *ZoneView) Changed(old *ZoneView) []string {
	var out []string
	for n, svc := range v.services {
		if old.services[n] != svc {
			out = append(out, n)
		}
	}
	for n := range old.services {
		if _, ok := v.services[n]; !ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Records returns every record the server answers at the names of
// service name, nil when there is no such service: SRV and A/AAAA at
// name.Z; SRV and PTR at _name._proto.Z and its PTR in DNS-SD browsing
// (_services._dns-sd._udp.Z); the same for each tag that has names
// (tag.tag.name.Z, _tag._name._proto.Z, the subtype
// _tag._sub._name._proto.Z); for each instance, A or AAAA and TXT at its
// target ID.name.Z, and SRV and TXT at its DNS-SD name
// ID._name._proto.Z. Lists follow the instances' IDs, not the rotation.
func (v *ZoneView) Records(name string) []dns.RR {
	svc := v.services[name]
	if svc == nil {
		return nil
	}
	s := v.s
	out := make([]dns.RR, 0, 7*len(svc.all)+4)
	out = s.viewRecords(&svc.view, out)
	if len(s.zoneWire)+browseLabels <= registry.MaxName {
		for p := range protoLabels {
			if svc.hasProto[p] {
				out = append(out, &dns.PTR{Hdr: s.hdr("_services._dns-sd._udp."+s.cfg.Zone, dns.TypePTR), Ptr: s.names.proto(&svc.view, p)})
			}
		}
	}
	if t := svc.tagIndex(); t != nil {
		labels := make([]string, 0, len(t.views))
		for l := range t.views {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			out = s.viewRecords(t.views[l], out)
		}
	}
	for _, in := range svc.all {
		target, dnssd := s.names.target(in), s.names.dnssd(in, svc.byID[in.ID].proto)
		out = append(out, s.addrRR(target, in.Address), s.txtRR(target, in), s.srvRR(dnssd, in), s.txtRR(dnssd, in))
	}
	return v.withTTL(out)
}

// viewRecords appends what a view (a service, or one of its tags) answers
// at its own names: SRV and A/AAAA of its serving instances, and for each
// protocol its SRV and its DNS-SD PTR (the browse name, or the tag's
// subtype).
func (s *Server) viewRecords(vw *view, out []dns.RR) []dns.RR {
	own := s.names.service(vw)
	for _, in := range vw.serving {
		out = append(out, s.srvRR(own, in))
	}
	seen := map[netip.Addr]bool{}
	for _, in := range vw.serving {
		if !seen[in.Address] {
			seen[in.Address] = true
			out = append(out, s.addrRR(own, in.Address))
		}
	}
	for p := range protoLabels {
		if !vw.hasProto[p] {
			continue
		}
		pn, bn := s.names.proto(vw, p), s.names.browse(vw, p)
		for _, in := range filterProto(vw.serving, p) {
			out = append(out, s.srvRR(pn, in), &dns.PTR{Hdr: s.hdr(bn, dns.TypePTR), Ptr: s.names.dnssd(in, p)})
		}
	}
	return out
}

// withTTL sets the configured TTL on rrs: a secondary keeps what it
// transfers, so LimitTTL's cap (for a stale server) is not for it.
func (v *ZoneView) withTTL(rrs []dns.RR) []dns.RR {
	for _, rr := range rrs {
		rr.Header().Ttl = v.s.cfg.TTL
	}
	return rrs
}
