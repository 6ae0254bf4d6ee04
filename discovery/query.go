package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size advertised with EDNS0, the size that
// avoids IP fragmentation (DNS flag day 2020).
const ednsSize = 1232

// result is what one resolution found, before caching.
type result struct {
	instances []Instance
	ttl       time.Duration
	// negative is set when the service has no instances (NXDOMAIN, NODATA,
	// no addresses): worth caching, unlike a failed exchange.
	negative bool
}

// resolve asks for the SRV records of each name in qnames in turn and
// returns the instances of the first name that has some.
func (r *Resolver) resolve(ctx context.Context, service string, qnames []string) (result, error) {
	var reasons []string
	negTTL := r.negativeTTL()
	for _, qname := range qnames {
		msg, err := r.exchange(ctx, qname, dns.TypeSRV)
		if err != nil {
			return result{}, fmt.Errorf("discovery: service %q: %w", service, err)
		}
		if msg.Rcode != dns.RcodeSuccess && msg.Rcode != dns.RcodeNameError {
			return result{}, fmt.Errorf("discovery: service %q: %s SRV: the DNS server answered %s",
				service, qname, dns.RcodeToString[msg.Rcode])
		}
		srvs, reason := srvRecords(msg)
		if len(srvs) > 0 {
			instances, ttl, err := r.instances(ctx, service, srvs, msg.Extra)
			if err != nil {
				return result{}, err
			}
			if len(instances) > 0 {
				return result{instances: instances, ttl: ttl}, nil
			}
			reason = "no SRV target has an address"
		}
		reasons = append(reasons, qname+" SRV: "+reason)
		negTTL = min(negTTL, soaTTL(msg))
	}
	return result{ttl: negTTL, negative: true},
		fmt.Errorf("discovery: service %q: %w (%s)", service, ErrNotFound, strings.Join(reasons, "; "))
}

// srvRecords returns the usable SRV records of msg, or why there are none.
func srvRecords(msg *dns.Msg) ([]*dns.SRV, string) {
	if msg.Rcode == dns.RcodeNameError {
		return nil, "NXDOMAIN"
	}
	var srvs []*dns.SRV
	decline := false
	for _, rr := range msg.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		if srv.Target == "." {
			// RFC 2782: the service is decidedly not available here.
			decline = true
			continue
		}
		srvs = append(srvs, srv)
	}
	switch {
	case len(srvs) > 0:
		return srvs, ""
	case decline:
		return nil, `target "." (service not available)`
	}
	return nil, "no SRV records (NODATA)"
}

// instances turns SRV records into instances, taking addresses from the
// glue in extra and asking for the rest. It also returns the smallest TTL
// of the records used.
func (r *Resolver) instances(ctx context.Context, service string, srvs []*dns.SRV, extra []dns.RR) ([]Instance, time.Duration, error) {
	glue := map[string][]addrTTL{}
	for _, rr := range extra {
		if a, ok := addrOf(rr); ok {
			name := dns.CanonicalName(rr.Header().Name)
			glue[name] = append(glue[name], a)
		}
	}
	ttl := r.maxTTL()
	var out []Instance
	var failed error
	for _, srv := range srvs {
		target := dns.CanonicalName(srv.Target)
		addrs, ok := glue[target]
		if !ok {
			var err error
			addrs, err = r.lookupAddrs(ctx, target)
			if err != nil {
				// One target not answering (a lost datagram) leaves its
				// instance out, not the others; an answer missing some
				// is kept no longer than a negative one.
				if failed == nil {
					failed = fmt.Errorf("discovery: service %q: target %s: %w", service, target, err)
				}
				r.logger().DebugContext(ctx, "discovery: SRV target's address lookup failed", "service", service, "target", target, "err", err)
				if ctx.Err() != nil {
					return nil, 0, failed
				}
				continue
			}
			glue[target] = addrs // targets may repeat
		}
		if len(addrs) == 0 {
			r.logger().DebugContext(ctx, "discovery: SRV target has no address", "service", service, "target", target)
			continue
		}
		in := Instance{Target: target, Port: srv.Port, Priority: srv.Priority, Weight: srv.Weight}
		ttl = min(ttl, seconds(srv.Hdr.Ttl))
		for _, a := range addrs {
			ttl = min(ttl, a.ttl)
			if !slices.Contains(in.Addrs, a.addr) {
				in.Addrs = append(in.Addrs, a.addr)
			}
		}
		slices.SortStableFunc(in.Addrs, func(a, b netip.Addr) int {
			return boolInt(a.Is6()) - boolInt(b.Is6())
		})
		out = append(out, in)
	}
	if failed != nil {
		if len(out) == 0 {
			return nil, 0, failed
		}
		ttl = min(ttl, r.negativeTTL())
	}
	slices.SortStableFunc(out, func(a, b Instance) int {
		if a.Priority != b.Priority {
			return int(a.Priority) - int(b.Priority)
		}
		return int(b.Weight) - int(a.Weight)
	})
	return out, ttl, nil
}

type addrTTL struct {
	addr netip.Addr
	ttl  time.Duration
}

// lookupAddrs asks for the A and then the AAAA records of target. A target
// that does not exist has no addresses and no error.
func (r *Resolver) lookupAddrs(ctx context.Context, target string) ([]addrTTL, error) {
	var out []addrTTL
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		msg, err := r.exchange(ctx, target, qtype)
		if err != nil {
			return nil, err
		}
		if msg.Rcode == dns.RcodeNameError {
			return nil, nil
		}
		for _, rr := range msg.Answer {
			if a, ok := addrOf(rr); ok && dns.CanonicalName(rr.Header().Name) == target {
				out = append(out, a)
			}
		}
	}
	return out, nil
}

func addrOf(rr dns.RR) (addrTTL, bool) {
	var ip []byte
	switch rr := rr.(type) {
	case *dns.A:
		ip = rr.A.To4()
	case *dns.AAAA:
		ip = rr.AAAA.To16()
	default:
		return addrTTL{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return addrTTL{}, false
	}
	return addrTTL{addr: addr.Unmap(), ttl: seconds(rr.Header().Ttl)}, true
}

// exchange sends one query over UDP, and again over TCP if the answer was
// truncated.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	what := name + " " + dns.TypeToString[qtype]
	if r.Server == "" {
		return nil, fmt.Errorf("%s: no DNS server configured (Resolver.Server is empty)", what)
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(r.Timeout, DefaultTimeout))
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(ednsSize, false)
	c := &dns.Client{Net: "udp", UDPSize: ednsSize}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if in != nil && in.Truncated {
		r.logger().DebugContext(ctx, "discovery: truncated answer, retrying over TCP", "query", what)
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: %w", what, cerr)
		}
		return nil, fmt.Errorf("%w: %s: %s: %w", ErrUnreachable, r.Server, what, err)
	}
	return in, nil
}

// soaTTL is how long a negative answer may be cached (RFC 2308): the
// smaller of the SOA record's TTL and its MINIMUM field, or 0 without SOA.
func soaTTL(msg *dns.Msg) time.Duration {
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return seconds(min(soa.Hdr.Ttl, soa.Minttl))
		}
	}
	return 0
}

func seconds(s uint32) time.Duration { return time.Duration(s) * time.Second }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// LookupAddrs returns the addresses of host (an SRV target, say) from its
// A and then its AAAA records, asked of Server without the cache: what a
// client does when an SRV answer came without glue, as Unbound's
// minimal-responses and dnsmasq's cached answers send it. A name that does
// not exist has no addresses and no error.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	name := dns.CanonicalName(strings.TrimSpace(host))
	if _, ok := dns.IsDomainName(name); !ok || name == "." {
		return nil, fmt.Errorf("discovery: host %q: not a domain name", host)
	}
	found, err := r.lookupAddrs(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("discovery: host %q: %w", host, err)
	}
	out := make([]netip.Addr, 0, len(found))
	for _, a := range found {
		if !slices.Contains(out, a.addr) {
			out = append(out, a.addr)
		}
	}
	return out, nil
}
