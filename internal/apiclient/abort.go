package apiclient

import (
	"context"
	"net"
	"net/http"
	"time"
)

// DialFunc dials a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// AbortOnClose wraps dial so that a TCP connection it opens is aborted
// when closed (SO_LINGER 0: a reset, and whatever the kernel has not yet
// sent is dropped) instead of being shut down gracefully, which goes on
// sending queued bytes after close. The client closes a connection when
// it gives up on a request; a request given up on must not reach a server
// later, after a newer one: the fleet test saw a node set queued while
// its host's link was down delivered by the kernel after the heal, 8 s
// after it was sent and 0.4 s after a newer set, which it reverted.
func AbortOnClose(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok && err == nil {
			_ = tc.SetLinger(0) // best effort: a connection it fails on is an ordinary one
		}
		return c, err
	}
}

// newTransport is http.DefaultTransport's settings, with connections that
// abort on close (AbortOnClose).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = AbortOnClose(d.DialContext)
	return t
}
