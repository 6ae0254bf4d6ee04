package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
)

// Route53Source sweeps the SRV record sets of a Route 53 hosted zone, in the
// original agent's layout: one target per weighted record set. A record set
// with several targets is probed at its first and removed whole.
type Route53Source struct {
	Zone *route53backend.Zone
	// Resolve looks up a target's address. Default: the system resolver
	// (inside a VPC, Route 53 Resolver answers the private zone).
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	sets    map[string]route53backend.SRVRecordSet
}

// Name implements Source.
func (s *Route53Source) Name() string { return "route53 zone " + s.Zone.Name() }

// SystemResolve resolves host with the system resolver, or with the DNS
// server at addr ("10.0.0.2:53") when addr is set.
func SystemResolve(addr string) func(ctx context.Context, host string) (netip.Addr, error) {
	r := net.DefaultResolver
	if addr != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	return func(ctx context.Context, host string) (netip.Addr, error) {
		addrs, err := r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return netip.Addr{}, err
		}
		if len(addrs) == 0 {
			return netip.Addr{}, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		return addrs[0].Unmap(), nil
	}
}

// Endpoints implements Source.
func (s *Route53Source) Endpoints(ctx context.Context) ([]Endpoint, error) {
	sets, err := s.Zone.ListSRV(ctx)
	if err != nil {
		return nil, err
	}
	resolve := s.Resolve
	if resolve == nil {
		resolve = SystemResolve("")
	}
	s.sets = make(map[string]route53backend.SRVRecordSet, len(sets))
	out := make([]Endpoint, 0, len(sets))
	for _, set := range sets {
		if len(set.Targets) == 0 {
			continue
		}
		key := set.Name + " " + set.SetIdentifier
		s.sets[key] = set
		t := set.Targets[0]
		ep := Endpoint{Key: key, Service: serviceOf(set.Name, s.Zone.Name()), Target: t.Target, Port: t.Port}
		addr, err := resolve(ctx, t.Target)
		var dnsErr *net.DNSError
		switch {
		case err == nil:
			ep.Address = addr
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			// Gone: removed at once.
		default:
			ep.ResolveErr = fmt.Errorf("resolve %s: %w", t.Target, err)
		}
		out = append(out, ep)
	}
	return out, nil
}

// serviceOf turns "_calc._tcp.zone." into "calc".
func serviceOf(name, zone string) string {
	rel := strings.TrimSuffix(strings.TrimSuffix(name, zone), ".")
	first, _, _ := strings.Cut(rel, ".")
	return strings.TrimPrefix(first, "_")
}

// Remove implements Source: it deletes the record set exactly as listed,
// so a set that changed meanwhile is left alone.
func (s *Route53Source) Remove(ctx context.Context, ep Endpoint) error {
	set, ok := s.sets[ep.Key]
	if !ok {
		return fmt.Errorf("record set %q was not listed by this sweep", ep.Key)
	}
	return s.Zone.DeleteRecordSet(ctx, set)
}
