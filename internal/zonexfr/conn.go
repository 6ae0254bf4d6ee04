package zonexfr

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"
)

// handOff is a net.Listener whose connections are the ones the DNS server
// hands over, for miekg/dns's server to serve (TSIG included).
type handOff struct {
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newHandOff() *handOff {
	return &handOff{ch: make(chan net.Conn), done: make(chan struct{})}
}

// offer hands c to the server, and reports false (closing c) when it is
// not taken within wait or the listener is closed.
func (l *handOff) offer(c *conn, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case l.ch <- c:
		return true
	case <-l.done:
	case <-t.C:
	}
	_ = c.Close()
	return false
}

func (l *handOff) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, errClosed
	}
}

func (l *handOff) close() { l.closeOnce.Do(func() { close(l.done) }) }

func (l *handOff) Close() error { l.close(); return nil }

func (l *handOff) Addr() net.Addr { return &net.TCPAddr{} }

// conn is a handed-over TCP connection: it reads the query already read
// first, bounds every read and write by the connection's end (life after
// it was handed over) and every write by writeTimeout, and says when it
// is closed.
type conn struct {
	net.Conn
	first        io.Reader
	end          time.Time
	writeTimeout time.Duration
	done         chan struct{}
	closeOnce    sync.Once
}

func newConn(c net.Conn, req []byte, life, writeTimeout time.Duration) *conn {
	b := make([]byte, 2+len(req))
	binary.BigEndian.PutUint16(b, uint16(len(req)))
	copy(b[2:], req)
	return &conn{Conn: c, first: bytes.NewReader(b), end: time.Now().Add(life), writeTimeout: writeTimeout, done: make(chan struct{})}
}

func (c *conn) Read(p []byte) (int, error) {
	if c.first != nil {
		n, err := c.first.Read(p)
		if err == io.EOF {
			c.first, err = nil, nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(c.bound(time.Now().Add(c.writeTimeout)))
	return c.Conn.Write(p)
}

func (c *conn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.bound(t)) }

func (c *conn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.bound(t)) }

func (c *conn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.bound(t)) }

// bound returns t, or the connection's end when t is later or zero.
func (c *conn) bound(t time.Time) time.Time {
	if t.IsZero() || t.After(c.end) {
		return c.end
	}
	return t
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.done) })
	return err
}
