package server_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/server"
)

// dialFrom opens a TCP connection to addr from the loopback address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByServer reports whether the server has closed c (EOF or reset
// within a short wait; an open idle connection just times out).
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// tcpQuery asks name SRV over the open connection c.
func tcpQuery(t *testing.T, c net.Conn, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	dc := &dns.Conn{Conn: c}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := dc.WriteMsg(m); err != nil {
		t.Fatalf("write query: %v", err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return r
}

// TestDNSTCPShareOfOneClient: 1,000 idle TCP connections from one client
// (127.0.0.2) leave another client (127.0.0.1) able to query over TCP; the
// first client keeps only its share, its newest connections.
func TestDNSTCPShareOfOneClient(t *testing.T) {
	// Default caps (1000 in all, 100 per client); an idle timeout long
	// enough not to be what closes them.
	ts := startServer(t, func(c *server.Config) { c.DNS.TCPIdleTimeout = 5 * time.Minute })
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 8081))
	addr := ts.DNSAddr()
	hog := make([]net.Conn, 1000)
	for i := range hog {
		hog[i] = dialFrom(t, "127.0.0.2", addr)
	}
	var open []net.Conn
	waitFor(t, "the hog down to its share of 100 connections", func() bool {
		open = open[:0]
		for _, c := range hog {
			if !closedByServer(c) {
				open = append(open, c)
			}
		}
		return len(open) <= 100
	})
	if len(open) < 90 {
		t.Fatalf("the hog kept %d connections, want its share of 100", len(open))
	}
	// What it kept still answers.
	if r := tcpQuery(t, open[len(open)-1], "calc."+zone); len(r.Answer) != 1 {
		t.Fatalf("the hog's kept connection: %v", r)
	}
	for i := 0; i < 3; i++ {
		r := ts.ask(t, "tcp", "calc."+zone, dns.TypeSRV, 0)
		if len(r.Answer) != 1 {
			t.Fatalf("another client over TCP: %v", r)
		}
	}
}

// TestDNSTCPOldestIdleClosedWhenFull: at the server's cap, a new client's
// connection closes the connection idle the longest; an idle connection
// is closed after the idle timeout.
func TestDNSTCPOldestIdleClosedWhenFull(t *testing.T) {
	ts := startServer(t, func(c *server.Config) {
		c.DNS.MaxTCPConns = 10
		c.DNS.MaxTCPConnsPerClient = 6
		c.DNS.TCPIdleTimeout = 5 * time.Second
	})
	ts.register(t, inst("calc-1", "calc", "10.1.0.1", 8081))
	addr := ts.DNSAddr()
	var held []net.Conn
	for i := 0; i < 10; i++ {
		from := "127.0.0.2"
		if i >= 5 {
			from = "127.0.0.3"
		}
		held = append(held, dialFrom(t, from, addr))
		// Each is answered once, so the server has seen them all, in order.
		if r := tcpQuery(t, held[i], "calc."+zone); len(r.Answer) != 1 {
			t.Fatalf("connection %d: %v", i, r)
		}
	}
	c := dialFrom(t, "127.0.0.1", addr)
	if r := tcpQuery(t, c, "calc."+zone); len(r.Answer) != 1 {
		t.Fatalf("new client at the cap: %v", r)
	}
	waitFor(t, "the oldest idle connection closed", func() bool { return closedByServer(held[0]) })
	for i, h := range held[1:] {
		if closedByServer(h) {
			t.Fatalf("connection %d closed, but it was not the oldest idle", i+1)
		}
	}
	// A half-sent query does not keep a connection past the idle timeout.
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a half-sent query kept the connection open for 30 s")
	}
}
