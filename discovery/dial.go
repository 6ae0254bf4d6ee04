package discovery

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Dial connects to an instance of service over network ("tcp", "tcp4",
// "tcp6"). It tries the instances in the order of Ordered, and every
// address of each, until one accepts; each attempt is bounded by
// DialTimeout. When none accepts, the error wraps ErrUnavailable and every
// attempt's error, and the cached answer is dropped so that the next call
// asks the DNS server again.
func (r *Resolver) Dial(ctx context.Context, network, service string) (net.Conn, error) {
	ordered, err := r.Ordered(ctx, service)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: orDefault(r.DialTimeout, DefaultDialTimeout)}
	var errs []error
	for _, in := range ordered {
		for _, addr := range in.Addrs {
			address := netip.AddrPortFrom(addr, in.Port).String()
			conn, err := d.DialContext(ctx, network, address)
			if err == nil {
				return conn, nil
			}
			r.logger().DebugContext(ctx, "discovery: instance refused connection",
				"service", service, "instance", in.String(), "address", address, "err", err)
			errs = append(errs, err)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("discovery: service %q: %w", service, joined(append(errs, ctx.Err())))
			}
		}
	}
	r.Forget(service)
	return nil, fmt.Errorf("discovery: service %q: %w (%d instances): %w",
		service, ErrUnavailable, len(ordered), joined(errs))
}

// DialContext is Dial with the service taken from the host part of
// address, as net/http passes it: with it as an http.Transport's
// DialContext, a request for "http://calc/..." goes to an instance of the
// service "calc". The port in address is ignored; the SRV record's is used.
func (r *Resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	return r.Dial(ctx, network, host)
}

// Transport returns an http.Transport, a clone of http.DefaultTransport,
// that connects through DialContext and never through a proxy, so that
// the host of each request URL names a service. Idle connections are kept
// as usual; set DisableKeepAlives on it to spread every request by weight.
func (r *Resolver) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = r.DialContext
	return t
}

// joined is errors.Join on one line: "a; b".
type joined []error

func (j joined) Error() string {
	msgs := make([]string, len(j))
	for i, err := range j {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (j joined) Unwrap() []error { return j }
