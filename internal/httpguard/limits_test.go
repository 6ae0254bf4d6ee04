package httpguard_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/signposttest"
)

// dial opens a raw TCP connection to the process's API.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialFrom opens a raw TCP connection to the process's API from a given
// loopback address, another client as far as per-client shares go.
func dialFrom(t *testing.T, addr string, from net.IP) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
	c, err := d.Dial("tcp", strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reads from c until the server closes it (EOF or reset),
// and fails if that takes longer than limit. It returns what was read.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration, what string) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	data, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after %s (read so far: %q)", what, limit, data)
	}
	return string(data)
}

// TestIdleAndHalfSentConnectionsClosed: an idle keep-alive connection is
// closed after --http-idle-timeout, a connection that never sends a
// request after --http-read-header-timeout, and a request that declares a
// body it never sends after --http-read-timeout, also when it was refused
// with 401 before its body was read.
func TestIdleAndHalfSentConnectionsClosed(t *testing.T) {
	p := signposttest.StartProcess(t, 0,
		"--token-file", writeFile(t, "token", "write-token-0123456789abcdef\n", 0o600),
		"--http-idle-timeout", "1s", "--http-read-header-timeout", "1s", "--http-read-timeout", "2s")
	const limit = 15 * time.Second // far above every timeout, far below "never"

	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t, p.HTTP)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("GET /healthz: %d close=%v", resp.StatusCode, resp.Close)
		}
		start := time.Now()
		closedWithin(t, c, limit, "idle keep-alive connection")
		if took := time.Since(start); took < 500*time.Millisecond {
			t.Fatalf("idle connection closed after %s, before its idle timeout", took)
		}
	})
	t.Run("no request at all", func(t *testing.T) {
		c := dial(t, p.HTTP)
		closedWithin(t, c, limit, "connection that sends nothing")
	})
	t.Run("headers never finished", func(t *testing.T) {
		c := dial(t, p.HTTP)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
		closedWithin(t, c, limit, "half-sent headers")
	})
	t.Run("body never sent, with token", func(t *testing.T) {
		c := dial(t, p.HTTP)
		fmt.Fprintf(c, "PUT /v1/instances/a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer write-token-0123456789abcdef\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"serv")
		got := closedWithin(t, c, limit, "request whose body never comes")
		if strings.Contains(got, "200 OK") {
			t.Fatalf("half-sent body was accepted: %q", got)
		}
	})
	t.Run("body never sent, refused with 401", func(t *testing.T) {
		c := dial(t, p.HTTP)
		fmt.Fprintf(c, "PUT /v1/instances/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
		got := closedWithin(t, c, limit, "401 request whose body never comes")
		if !strings.Contains(got, "401") {
			t.Fatalf("want a 401 before the close, got %q", got)
		}
	})
}

// TestLowFileLimit: under `ulimit -n 160`, a client holding as many idle
// connections as it can open does not stop the API or DNS over TCP: the
// API's share of files is capped and the oldest idle connection gives way.
func TestLowFileLimit(t *testing.T) {
	p := signposttest.StartProcess(t, 160, "--http-idle-timeout", "10m", "--http-read-header-timeout", "10m")
	// Open 300 idle connections from other loopback addresses (the
	// share of one client is not what is tested here), each with one
	// request done, so that they are idle keep-alive connections.
	var held []net.Conn
	for i := 0; i < 300; i++ {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1+byte(i/100), byte(2+i%100))}}
		c, err := d.Dial("tcp", p.HTTP[len("http://"):])
		if err != nil {
			continue
		}
		held = append(held, c)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	}
	t.Cleanup(func() {
		for _, c := range held {
			_ = c.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A connection of its own for each request: a pooled idle one is
	// what gives way to new connections here.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 20; i++ {
		resp, err := client.Post(p.URL+fmt.Sprintf("/v1/nodes/n%d/heartbeat", i), "application/json", nil)
		if err != nil {
			t.Fatalf("API under 300 idle connections and ulimit -n 160: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound { // no such node: the API answered
			t.Fatalf("heartbeat: %d", resp.StatusCode)
		}
		req, _ := http.NewRequestWithContext(ctx, "PUT", p.URL+fmt.Sprintf("/v1/instances/i%d", i), strings.NewReader(instance))
		req.Header.Set("Content-Type", "application/json")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatalf("PUT under 300 idle connections: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT: %d", resp.StatusCode)
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("calc.servicediscovery.internal.", dns.TypeSRV)
	in, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).ExchangeContext(ctx, m, p.DNS)
	if err != nil {
		t.Fatalf("DNS over TCP under 300 idle API connections: %v", err)
	}
	if len(in.Answer) != 20 {
		t.Fatalf("DNS over TCP: %d answers, want 20", len(in.Answer))
	}
	open, err := p.Metric(ctx, "signpost_http_connections")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("open API connections under ulimit -n 160: %v (of %d dialled)", open, len(held))
	if open > 60 {
		t.Fatalf("%v API connections open under ulimit -n 160: want at most (160-64)/2 = 48 (and a few closing)", open)
	}
}

// TestLargeHeadersRefused: headers over 16 KiB get 431, so that a
// connection cannot make the server hold a megabyte of headers.
func TestLargeHeadersRefused(t *testing.T) {
	p := signposttest.StartProcess(t, 0)
	status, _ := call(t, "GET", p.URL+"/v1/instances", "", map[string]string{"X-Pad": strings.Repeat("x", 64<<10)})
	if status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %d, want 431", status)
	}
	if status, _ := call(t, "GET", p.URL+"/v1/instances", "", map[string]string{"X-Pad": strings.Repeat("x", 8<<10)}); status != 200 {
		t.Fatalf("8 KiB of headers: %d, want 200", status)
	}
}
