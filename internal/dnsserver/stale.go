package dnsserver

import (
	"sort"
	"time"
)

// LimitTTL caps the TTL of every answer, positive and negative (the SOA's
// TTL and minimum), at limit seconds; 0 lifts the cap (the configured
// TTLs again). A server whose store is out of reach sets it, so that what
// resolvers cache from its memory ages out within a second once it is
// current again. Every prepared answer is packed again at the new TTL:
// small services on their next query, large ones by the background
// builder (their answers at the old TTL are served meanwhile). It returns
// how long the change took (the copy of every service from the index).
func (s *Server) LimitTTL(limit uint32) time.Duration {
	start := time.Now()
	ttl, neg := s.cfg.TTL, s.cfg.NegTTL
	if limit > 0 {
		ttl, neg = min(ttl, limit), min(neg, limit)
	}
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	if s.ttl.Load() == ttl && s.negTTL.Load() == neg {
		return 0
	}
	s.ttl.Store(ttl)
	s.negTTL.Store(neg)
	seen := map[string]bool{}
	for _, n := range s.index.ServiceNames() {
		seen[n] = true
	}
	s.zone.mu.RLock()
	for n := range s.zone.services {
		seen[n] = true
	}
	s.zone.mu.RUnlock()
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	s.rebuildLocked(names)
	for _, sl := range []*slot{&s.apexNS, &s.nsA, &s.nsAAAA} {
		sl.p.Store(nil)
	}
	s.zone.browse.Store(s.browseSet())
	s.setSerial(s.serial.Load()) // the SOA carries the negative TTL
	return time.Since(start)
}

// SetStepAside makes the server's own listeners answer SERVFAIL for every
// name in the zone (names outside it are still REFUSED), or stop doing so.
// A server cut off from its store while another server is current sets
// it, so that resolvers and clients that know both move to the current
// one: SERVFAIL says "ask another", where NXDOMAIN or an empty answer
// would be cached as the truth. Respond (the resolver for containers)
// never steps aside.
func (s *Server) SetStepAside(on bool) { s.stepAside.Store(on) }

// SteppedAside reports whether SetStepAside is on.
func (s *Server) SteppedAside() bool { return s.stepAside.Load() }

// CurrentTTL returns the TTL of positive answers now, in seconds: TTL, or
// less under LimitTTL.
func (s *Server) CurrentTTL() uint32 { return s.ttl.Load() }
