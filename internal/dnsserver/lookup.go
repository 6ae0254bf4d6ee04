package dnsserver

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// found is what lookup found for a question: a prepared single answer,
// a list answer, or neither (NODATA when exists, else NXDOMAIN).
type found struct {
	p  *prepared
	rs *rrset
}

func (f found) empty() bool {
	return f.p == nil && (f.rs == nil || f.rs.len() == 0)
}

// lookup finds the answer to the question, packing single answers on
// first use. rel is how many labels come before the zone. exists is false
// when the name is not in the zone at all (NXDOMAIN).
// lr is the asker's locality, which an answer at a service's names may
// add parts to (see localAnswer).
func (s *Server) lookup(q *query, rel int, lr *localResult) (f found, exists bool) {
	switch rel {
	case 0:
		return found{p: s.apex(q.qtype)}, true
	case 1:
		l := q.label(0)
		if string(l) == s.cfg.NSName {
			return found{p: s.nsAddr(q.qtype)}, true
		}
		if string(l) == "_tcp" || string(l) == "_udp" {
			return found{}, true // empty non-terminal
		}
		svc := s.zone.get(l)
		if svc == nil {
			return found{}, false
		}
		return found{rs: s.localAnswer(svc, lr, serviceList(q.qtype))}, true
	case 2:
		l0, l1 := q.label(0), q.label(1)
		if len(l0) > 1 && l0[0] == '_' {
			if string(l0) == "_dns-sd" && string(l1) == "_udp" {
				// The empty non-terminal above _services._dns-sd._udp:
				// NODATA, not NXDOMAIN (RFC 8020).
				return found{}, true
			}
			p := protoIndex(l1)
			if p < 0 {
				return found{}, false
			}
			svc := s.zone.get(l0[1:])
			if svc == nil || !svc.hasProto[p] {
				return found{}, false
			}
			if q.qtype == dns.TypeSRV || q.qtype == dns.TypeANY {
				return found{rs: s.localAnswer(svc, lr, listProtoSRV+p)}, true
			}
			return found{rs: s.protoAnswer(&svc.view, p, q.qtype)}, true
		}
		svc := s.zone.get(l1)
		if svc == nil {
			return found{}, false
		}
		inst := svc.byID[string(l0)]
		if inst == nil {
			// tag.calc.Z is the empty non-terminal above calc's tag
			// names (an instance "tag", refused now, may be stored).
			return found{}, string(l0) == "tag" && svc.tagIndex().any(-1)
		}
		return found{p: s.targetAnswer(inst, q.qtype)}, true
	case 3:
		l0, l1, l2 := q.label(0), q.label(1), q.label(2)
		if string(l0) == "_services" && string(l1) == "_dns-sd" && string(l2) == "_udp" {
			if q.qtype != dns.TypePTR && q.qtype != dns.TypeANY {
				return found{}, true
			}
			return found{rs: s.zone.browse.Load()}, true
		}
		p := protoIndex(l2)
		if p < 0 {
			// <tag>.tag.<service>.Z: the tag's SRV, A and AAAA.
			if string(l1) != "tag" {
				return found{}, false
			}
			svc := s.zone.get(l2)
			if svc == nil {
				return found{}, false
			}
			v := svc.tagIndex().view(l0)
			if v == nil {
				return found{}, false
			}
			return found{rs: s.serviceAnswer(v, q.qtype)}, true
		}
		if len(l1) < 2 || l1[0] != '_' {
			return found{}, false
		}
		svc := s.zone.get(l1[1:])
		if svc == nil {
			return found{}, false
		}
		if len(l0) > 1 && l0[0] == '_' {
			// _<tag>._<service>._<proto>.Z: the tag's SRV for that
			// protocol; _sub._<service>._<proto>.Z is also the empty
			// non-terminal above the DNS-SD subtypes.
			t := svc.tagIndex()
			v := t.view(l0[1:])
			if v == nil || !v.hasProto[p] {
				return found{}, string(l0) == "_sub" && t.any(p)
			}
			return found{rs: s.tagProtoAnswer(v, p, q.qtype)}, true
		}
		inst := svc.byID[string(l0)]
		if inst == nil || inst.proto != p {
			return found{}, false
		}
		return found{p: s.dnssdAnswer(inst, q.qtype)}, true
	case 4:
		// _<tag>._sub._<service>._<proto>.Z: the DNS-SD subtype, PTR to
		// the instance names of the tag's instances (RFC 6763 s7.1).
		l0, l1, l2, l3 := q.label(0), q.label(1), q.label(2), q.label(3)
		p := protoIndex(l3)
		if p < 0 || string(l1) != "_sub" || len(l0) < 2 || l0[0] != '_' || len(l2) < 2 || l2[0] != '_' {
			return found{}, false
		}
		svc := s.zone.get(l2[1:])
		if svc == nil {
			return found{}, false
		}
		v := svc.tagIndex().view(l0[1:])
		if v == nil || !v.hasProto[p] {
			return found{}, false
		}
		return found{rs: s.subtypeAnswer(v, p, q.qtype)}, true
	}
	return found{}, false
}

func protoIndex(l []byte) int {
	switch string(l) {
	case "_tcp":
		return protoTCP
	case "_udp":
		return protoUDP
	}
	return -1
}

// load returns the slot's answer, packing it with mk on first use. Two
// queries racing on an empty slot both pack; either result is right.
func load(sl *slot, mk func() *prepared) *prepared {
	if p := sl.p.Load(); p != nil {
		return p.get()
	}
	p := mk()
	if p == nil {
		p = noData
	}
	sl.p.Store(p)
	return p.get()
}

// noData marks a slot whose answer is NODATA, so that it is not packed
// again.
var noData = &prepared{}

// get returns p, or nil when it is noData.
func (p *prepared) get() *prepared {
	if p == noData {
		return nil
	}
	return p
}

func (s *Server) serviceAnswer(svc *view, qtype uint16) *rrset {
	if i := serviceList(qtype); i >= 0 {
		return s.list(svc, i)
	}
	return nil
}

// serviceList is the list that answers qtype at a service's own name,
// -1 for none.
func serviceList(qtype uint16) int {
	switch qtype {
	case dns.TypeSRV, dns.TypeANY:
		return listSRV
	case dns.TypeA:
		return listA
	case dns.TypeAAAA:
		return listAAAA
	}
	return -1
}

func (s *Server) protoAnswer(svc *view, p int, qtype uint16) *rrset {
	switch qtype {
	case dns.TypeSRV, dns.TypeANY:
		return s.list(svc, listProtoSRV+p)
	case dns.TypePTR:
		return s.list(svc, listProtoPTR+p)
	}
	return nil
}

// tagProtoAnswer answers at _<tag>._<service>._<proto>.Z: SRV only (the
// tag's PTR is at its DNS-SD subtype name).
func (s *Server) tagProtoAnswer(v *view, p int, qtype uint16) *rrset {
	if qtype == dns.TypeSRV || qtype == dns.TypeANY {
		return s.list(v, listProtoSRV+p)
	}
	return nil
}

// subtypeAnswer answers at the DNS-SD subtype _<tag>._sub._<service>._<proto>.Z:
// PTR to the instance names of the tag's instances (RFC 6763 s7.1).
func (s *Server) subtypeAnswer(v *view, p int, qtype uint16) *rrset {
	if qtype == dns.TypePTR || qtype == dns.TypeANY {
		return s.list(v, listProtoPTR+p)
	}
	return nil
}

// targetAnswer answers at an SRV target, ID.service.Z: its address, and
// its metadata as TXT.
func (s *Server) targetAnswer(inst *instance, qtype uint16) *prepared {
	in := inst.in
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		if qtype == dns.TypeANY {
			if in.Address.Is4() {
				qtype = dns.TypeA
			} else {
				qtype = dns.TypeAAAA
			}
		}
		if in.Address.Is4() != (qtype == dns.TypeA) {
			return nil
		}
		sl := &inst.a
		if qtype == dns.TypeAAAA {
			sl = &inst.aaaa
		}
		return load(sl, func() *prepared {
			name := s.names.target(in)
			return build(name, qtype, []dns.RR{s.addrRR(name, in.Address)}, nil)
		})
	case dns.TypeTXT:
		return load(&inst.txt, func() *prepared {
			name := s.names.target(in)
			return build(name, dns.TypeTXT, []dns.RR{s.txtRR(name, in)}, nil)
		})
	}
	return nil
}

// dnssdAnswer answers at a DNS-SD instance name, ID._service._proto.Z:
// SRV with glue, and TXT (RFC 6763).
func (s *Server) dnssdAnswer(inst *instance, qtype uint16) *prepared {
	in := inst.in
	switch qtype {
	case dns.TypeSRV, dns.TypeANY:
		return load(&inst.srv, func() *prepared {
			name := s.names.dnssd(in, inst.proto)
			glue := []dns.RR{s.addrRR(s.names.target(in), in.Address)}
			return build(name, dns.TypeSRV, []dns.RR{s.srvRR(name, in)}, glue)
		})
	case dns.TypeTXT:
		// The TXT at the target name is another name; this slot is
		// only reached for DNS-SD names, so keep it apart.
		return load(&inst.dnssdTXT, func() *prepared {
			name := s.names.dnssd(in, inst.proto)
			return build(name, dns.TypeTXT, []dns.RR{s.txtRR(name, in)}, nil)
		})
	}
	return nil
}

func (s *Server) apex(qtype uint16) *prepared {
	switch qtype {
	case dns.TypeSOA, dns.TypeANY:
		return load(&s.apexSOA, func() *prepared {
			return build(s.cfg.Zone, dns.TypeSOA, []dns.RR{s.soa()}, nil)
		})
	case dns.TypeNS:
		return load(&s.apexNS, func() *prepared {
			ns := &dns.NS{Hdr: s.hdr(s.cfg.Zone, dns.TypeNS), Ns: s.nsFQDN()}
			var glue []dns.RR
			for _, a := range s.cfg.NSAddrs {
				glue = append(glue, s.addrRR(s.nsFQDN(), a))
			}
			return build(s.cfg.Zone, dns.TypeNS, []dns.RR{ns}, glue)
		})
	}
	return nil
}

func (s *Server) nsAddr(qtype uint16) *prepared {
	if qtype != dns.TypeA && qtype != dns.TypeAAAA {
		return nil
	}
	sl := &s.nsA
	if qtype == dns.TypeAAAA {
		sl = &s.nsAAAA
	}
	return load(sl, func() *prepared {
		var rrs []dns.RR
		for _, a := range s.cfg.NSAddrs {
			if a.Is4() == (qtype == dns.TypeA) {
				rrs = append(rrs, s.addrRR(s.nsFQDN(), a))
			}
		}
		if len(rrs) == 0 {
			return nil
		}
		return build(s.nsFQDN(), qtype, rrs, nil)
	})
}

func (s *Server) nsFQDN() string { return s.cfg.NSName + "." + s.cfg.Zone }

func (s *Server) soa() *dns.SOA { return s.soaAt(s.serial.Load(), s.negTTL.Load()) }

// soaAt is the zone's SOA record at serial, with negTTL as its TTL and
// minimum. A secondary refreshes hourly and on NOTIFY.
func (s *Server) soaAt(serial, negTTL uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.cfg.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:      s.nsFQDN(),
		Mbox:    "hostmaster." + s.cfg.Zone,
		Serial:  serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  negTTL,
	}
}

// setSerial moves the SOA serial and repacks what carries it.
func (s *Server) setSerial(serial uint32) {
	s.serial.Store(serial)
	tail := s.soaTailFor(serial)
	s.soaTail.Store(&tail)
	s.apexSOA.p.Store(nil)
}

// Offsets in the SOA tail of the pointers to the zone, patched per query.
func (s *Server) soaPtrs() (mname, rname int) {
	mname = 10 + 1 + len(s.cfg.NSName)
	return mname, mname + 2 + 1 + len("hostmaster")
}

// soaTailFor packs the zone's SOA after its owner name: type, class, TTL,
// RDLENGTH and data, with the two names in the data (ns.Z, hostmaster.Z)
// ending in pointers to the zone, which negative answers fill in with
// where the zone is in their question. Negative answers stay small in a
// long zone.
func (s *Server) soaTailFor(serial uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, dns.TypeSOA)
	b = binary.BigEndian.AppendUint16(b, dns.ClassINET)
	b = binary.BigEndian.AppendUint32(b, s.negTTL.Load())
	b = append(b, 0, 0)
	b = append(b, byte(len(s.cfg.NSName)))
	b = append(b, s.cfg.NSName...)
	b = append(b, 0xc0, 0)
	b = append(b, byte(len("hostmaster")))
	b = append(b, "hostmaster"...)
	b = append(b, 0xc0, 0)
	for _, v := range []uint32{serial, 3600, 600, 86400, s.negTTL.Load()} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	binary.BigEndian.PutUint16(b[8:], uint16(len(b)-10))
	return b
}
