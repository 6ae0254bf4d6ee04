// Package discoverytest runs a small authoritative DNS server on the loopback
// interface for tests of code that uses package discovery, the way
// net/http/httptest runs an HTTP server.
//
// It serves SRV records for services, A/AAAA records for their targets (as
// glue in the Additional section and on direct queries), NXDOMAIN with an SOA
// for unknown names and NODATA for known names of another type. It can be
// told to truncate UDP answers, to leave glue out, and it counts queries.
package discoverytest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/miekg/dns"
)

// Record is one instance of a service as the server publishes it: an SRV
// record under the service name pointing at Target, and an A or AAAA record
// for Target.
type Record struct {
	// Service is the owner name of the SRV record relative to the zone,
	// for example "_calc._tcp" or "calc".
	Service string
	// Target is the SRV target relative to the zone, for example "calc-1".
	Target string
	// Addr is the address the target resolves to; an invalid Addr publishes
	// no address record at all.
	Addr     netip.Addr
	Port     uint16
	Priority uint16
	Weight   uint16
	// TTL is the TTL in seconds of both the SRV and the address record.
	TTL uint32
}

// Server is an authoritative DNS server for one zone, listening on UDP and
// TCP on the same 127.0.0.1 port.
type Server struct {
	// Zone is the fully qualified zone name, for example
	// "servicediscovery.internal.".
	Zone string

	udp, tcp *dns.Server

	mu          sync.Mutex
	records     []Record
	truncateUDP bool
	noGlue      bool
	queries     map[string]int
	udpQueries  int
	tcpQueries  int
}

// Start starts a server for zone on a random 127.0.0.1 port, serving both
// UDP and TCP. Close it when done.
func Start(zone string) (*Server, error) {
	s := &Server{Zone: dns.Fqdn(zone), queries: map[string]int{}}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("discoverytest: listen udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			// The port is taken for TCP: try another one.
			pc.Close()
			lastErr = err
			continue
		}
		s.udp = &dns.Server{PacketConn: pc, Handler: s.handler("udp")}
		s.tcp = &dns.Server{Listener: l, Handler: s.handler("tcp")}
		started := make(chan struct{}, 2)
		s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
		s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
		go s.udp.ActivateAndServe() //nolint:errcheck // ends with Shutdown
		go s.tcp.ActivateAndServe() //nolint:errcheck // ends with Shutdown
		<-started
		<-started
		return s, nil
	}
	return nil, fmt.Errorf("discoverytest: no port free for both udp and tcp: %w", lastErr)
}

// Addr is the host:port the server listens on, for discovery.Resolver.Server.
func (s *Server) Addr() string { return s.udp.PacketConn.LocalAddr().String() }

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown() //nolint:errcheck // best effort in tests
	s.tcp.Shutdown() //nolint:errcheck // best effort in tests
}

// Add publishes records.
func (s *Server) Add(records ...Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, records...)
}

// Reset removes every record and zeroes the query counters.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
	s.queries = map[string]int{}
	s.udpQueries, s.tcpQueries = 0, 0
}

// SetTruncateUDP makes every UDP answer come back empty with the TC bit set,
// so that a client has to retry over TCP.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncateUDP = on
}

// SetNoGlue leaves the Additional section of SRV answers empty, so that a
// client has to resolve the targets itself.
func (s *Server) SetNoGlue(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noGlue = on
}

// Queries is how many queries for name (relative to the zone or fully
// qualified) and qtype (dns.TypeSRV, dns.TypeA, ...) the server answered.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[s.key(s.fqdn(name), qtype)]
}

// Transports is how many queries came over UDP and over TCP.
func (s *Server) Transports() (udp, tcp int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udpQueries, s.tcpQueries
}

func (s *Server) fqdn(name string) string {
	if dns.IsFqdn(name) {
		return dns.CanonicalName(name)
	}
	return dns.CanonicalName(name + "." + s.Zone)
}

func (s *Server) key(name string, qtype uint16) string {
	return name + "/" + dns.TypeToString[qtype]
}

func (s *Server) handler(network string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		resp := s.answer(network, req)
		w.WriteMsg(resp) //nolint:errcheck // the client times out
	}
}

func (s *Server) answer(network string, req *dns.Msg) *dns.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	s.queries[s.key(name, q.Qtype)]++
	if network == "udp" {
		s.udpQueries++
		if s.truncateUDP {
			resp.Truncated = true
			return resp
		}
	} else {
		s.tcpQueries++
	}
	if !dns.IsSubDomain(s.Zone, name) {
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	known := false
	for _, r := range s.records {
		if s.fqdn(r.Service) == name {
			known = true
			if q.Qtype == dns.TypeSRV {
				resp.Answer = append(resp.Answer, s.srv(r))
				if a := s.addr(r); a != nil && !s.noGlue {
					resp.Extra = append(resp.Extra, a)
				}
			}
		}
		if s.fqdn(r.Target) == name {
			known = true
			if a := s.addr(r); a != nil && a.Header().Rrtype == q.Qtype {
				resp.Answer = append(resp.Answer, a)
			}
		}
	}
	if !known && name != s.Zone {
		resp.Rcode = dns.RcodeNameError
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, s.soa())
	}
	return resp
}

func (s *Server) srv(r Record) dns.RR {
	return &dns.SRV{
		Hdr:      dns.RR_Header{Name: s.fqdn(r.Service), Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: r.TTL},
		Priority: r.Priority,
		Weight:   r.Weight,
		Port:     r.Port,
		Target:   s.fqdn(r.Target),
	}
}

func (s *Server) addr(r Record) dns.RR {
	hdr := dns.RR_Header{Name: s.fqdn(r.Target), Class: dns.ClassINET, Ttl: r.TTL}
	switch {
	case r.Addr.Is4():
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: r.Addr.AsSlice()}
	case r.Addr.Is6():
		hdr.Rrtype = dns.TypeAAAA
		return &dns.AAAA{Hdr: hdr, AAAA: r.Addr.AsSlice()}
	}
	return nil
}

func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 5},
		Ns:      "ns." + s.Zone,
		Mbox:    "hostmaster." + s.Zone,
		Serial:  1,
		Refresh: 60,
		Retry:   10,
		Expire:  600,
		Minttl:  5,
	}
}

// Service is a shorthand for a Record at 127.0.0.1 with the given name,
// target, port, priority, weight and TTL.
func Service(service, target string, port, priority, weight uint16, ttl uint32) Record {
	return Record{
		Service: service, Target: target,
		Addr: netip.MustParseAddr("127.0.0.1"), Port: port,
		Priority: priority, Weight: weight, TTL: ttl,
	}
}
