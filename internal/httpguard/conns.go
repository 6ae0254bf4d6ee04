package httpguard

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimiter caps the API's open connections, per client IP and in all.
// A connection over a client's share is closed at once; when the total is
// reached, the connection idle the longest (or never used) is closed to
// make room, so idle keep-alive connections can never lock the API out.
// Only when every connection is busy is the new one closed.
type connLimiter struct {
	net.Listener
	g *Guard

	mu       sync.Mutex
	byClient map[string]int
	conns    map[*trackedConn]struct{}
}

// trackedConn is a connection the limiter counts until it is closed.
type trackedConn struct {
	net.Conn
	l    *connLimiter
	ip   string
	once sync.Once
	// idleSince is when the connection last became idle; zero while a
	// request is being served. Guarded by l.mu.
	idleSince time.Time
}

func newConnLimiter(l net.Listener, g *Guard) *connLimiter {
	return &connLimiter{Listener: l, g: g, byClient: map[string]int{}, conns: map[*trackedConn]struct{}{}}
}

// Close closes the connection and gives its slot back.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		defer c.l.mu.Unlock()
		delete(c.l.conns, c)
		if c.l.byClient[c.ip]--; c.l.byClient[c.ip] <= 0 {
			delete(c.l.byClient, c.ip)
		}
		c.l.g.connsOpen.Dec()
	})
	return err
}

// CloseWrite half-closes the connection when the one underneath can (TCP).
// net/http looks for it to send its FIN before closing a connection whose
// request body it did not read; without it, the close resets the
// connection while the client is still sending, and the client may never
// see its answer (the 413 or 401 of a refused request).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Accept returns the next connection within the limits.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// admit counts c in, or closes it (returning nil) when it is over a limit.
func (l *connLimiter) admit(c net.Conn) *trackedConn {
	ip := clientIP(c.RemoteAddr().String())
	var evict *trackedConn
	l.mu.Lock()
	if l.byClient[ip] >= l.g.lim.MaxConnsPerClient {
		l.mu.Unlock()
		l.g.refused.WithLabelValues("conns_per_client").Inc()
		_ = c.Close()
		return nil
	}
	if len(l.conns) >= l.g.lim.MaxConns {
		for tc := range l.conns {
			if !tc.idleSince.IsZero() && (evict == nil || tc.idleSince.Before(evict.idleSince)) {
				evict = tc
			}
		}
		if evict == nil {
			l.mu.Unlock()
			l.g.refused.WithLabelValues("conns_total").Inc()
			_ = c.Close()
			return nil
		}
		// Take the evicted connection's slot now, so that a burst of
		// new connections cannot all claim the same one.
		evict.idleSince = time.Time{}
	}
	tc := &trackedConn{Conn: c, l: l, ip: ip, idleSince: time.Now()}
	l.conns[tc] = struct{}{}
	l.byClient[ip]++
	l.g.connsOpen.Inc()
	l.mu.Unlock()
	if evict != nil {
		l.g.refused.WithLabelValues("conns_idle_evicted").Inc()
		_ = evict.Close()
	}
	return tc
}

// connState follows each connection between idle and busy
// (http.Server.ConnState).
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateIdle:
		tc.idleSince = time.Now()
	case http.StateActive:
		tc.idleSince = time.Time{}
	}
}
