// Package discovery finds instances of a service through DNS SRV records, the
// way signpost publishes them, and connects to them.
//
// A Resolver asks one DNS server (a signpost server, or any resolver that
// answers for the zone, such as the Route 53 resolver), caches each answer
// for its TTL, orders the instances by priority and then at random by weight
// (RFC 2782), and dials the next instance when one refuses the connection:
//
//	r := &discovery.Resolver{Server: "127.0.0.1:8053", Zone: "servicediscovery.internal"}
//	client := &http.Client{Transport: r.Transport()}
//	resp, err := client.Get("http://calc/calc/1%2B2") // "calc" is the service
//
// Errors wrap ErrNotFound when the service has no instances, ErrUnreachable
// when the DNS server does not answer and ErrUnavailable when no instance
// accepts a connection; each names the service.
package discovery
