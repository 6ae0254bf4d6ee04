package dnsserver

// Respond answers one query for the zone exactly as the server's own
// listeners do, over UDP (fitted to 512 bytes or the client's EDNS0 size
// up to MaxUDPSize) or TCP, and returns the answer in a buffer of its
// own; nil means drop. It lets another listener in the same process, such
// as internal/forward's resolver for containers, answer the zone. It
// never steps aside (SetStepAside): the containers that ask it have no
// other server to move to, so they get the last known answers, with the
// TTL of LimitTTL.
func (s *Server) Respond(req []byte, tcp bool) []byte {
	size := s.cfg.MaxUDPSize + optLen
	if tcp {
		size = 65536 + optLen
	}
	return s.respondAs(req, make([]byte, size), tcp, false)
}
