package forward

import (
	"net"
	"net/netip"
	"sync"
)

// shareListener closes, as soon as it is accepted, a connection from a
// client that already holds its share of connections. A client is an
// IPv4 address or an IPv6 /64 (one host's usual allocation, which it can
// fill with addresses at will).
type shareListener struct {
	net.Listener
	share   int
	refused func()

	mu    sync.Mutex
	count map[netip.Addr]int
}

func newShareListener(l net.Listener, share int, refused func()) *shareListener {
	return &shareListener{Listener: l, share: share, refused: refused, count: map[netip.Addr]int{}}
}

// Accept returns the next connection of a client under its share.
func (l *shareListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientOf(c.RemoteAddr())
		l.mu.Lock()
		over := l.count[key] >= l.share
		if !over {
			l.count[key]++
		}
		l.mu.Unlock()
		if over {
			_ = c.Close()
			l.refused()
			continue
		}
		return &sharedConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *shareListener) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[key]--; l.count[key] <= 0 {
		delete(l.count, key)
	}
}

// clientOf is the key a connection's share is counted under.
func clientOf(a net.Addr) netip.Addr {
	ip := addrOf(a).WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

type sharedConn struct {
	net.Conn
	l    *shareListener
	key  netip.Addr
	once sync.Once
}

func (c *sharedConn) Close() error {
	c.once.Do(func() { c.l.release(c.key) })
	return c.Conn.Close()
}
