package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
)

// Listeners are the sockets a Server answers on: one or more UDP sockets
// bound to the same address (SO_REUSEPORT, so the kernel spreads queries
// over them) and one TCP listener on the same port.
type Listeners struct {
	UDP []*net.UDPConn
	TCP *net.TCPListener
}

// Addr is the address the listeners are bound to.
func (l Listeners) Addr() string { return l.UDP[0].LocalAddr().String() }

// Close closes every socket.
func (l Listeners) Close() error {
	var errs []error
	for _, u := range l.UDP {
		if u != nil {
			errs = append(errs, u.Close())
		}
	}
	if l.TCP != nil {
		errs = append(errs, l.TCP.Close())
	}
	return errors.Join(errs...)
}

// Listen opens UDP and TCP sockets on addr ("127.0.0.1:8053"). sockets is
// how many UDP sockets to open (0: one per two cores, leaving the other
// half to the kernel's network work and the rest of the host: on two
// cores one batched socket answered as many queries as two, with 8% less
// CPU per query, BENCHMARKS.md). More than one needs SO_REUSEPORT, and
// falls back to one where it is missing. With port 0, every socket shares
// the port the first one was given.
func Listen(addr string, sockets int) (Listeners, error) {
	if sockets <= 0 {
		sockets = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if !reusePortSupported {
		sockets = 1
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return Listeners{}, fmt.Errorf("DNS address %q: %w", addr, err)
	}
	lc := net.ListenConfig{}
	if sockets > 1 {
		lc.Control = setReusePort
	}
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		var l Listeners
		pc, err := lc.ListenPacket(ctx, "udp", ua.String())
		if err != nil {
			return Listeners{}, fmt.Errorf("listen on DNS address %q (udp): %w", addr, err)
		}
		first := pc.(*net.UDPConn)
		l.UDP = append(l.UDP, first)
		bound := first.LocalAddr().String()
		for i := 1; i < sockets; i++ {
			pc, err := lc.ListenPacket(ctx, "udp", bound)
			if err != nil {
				_ = l.Close()
				return Listeners{}, fmt.Errorf("listen on DNS address %q (udp, socket %d): %w", bound, i+1, err)
			}
			l.UDP = append(l.UDP, pc.(*net.UDPConn))
		}
		tl, err := net.Listen("tcp", bound)
		if err != nil {
			_ = l.Close()
			if ua.Port == 0 && attempt < 10 {
				continue // the port was free for UDP only; try another
			}
			return Listeners{}, fmt.Errorf("listen on DNS address %q (tcp): %w", bound, err)
		}
		l.TCP = tl.(*net.TCPListener)
		return l, nil
	}
}
