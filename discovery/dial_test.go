package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/signpost-dns/signpost/discovery/discoverytest"
)

// deadPort returns a 127.0.0.1 TCP port that refuses connections.
func deadPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return uint16(port)
}

// liveServer is an HTTP server on 127.0.0.1 that answers with name.
func liveServer(t *testing.T, name string) uint16 {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, name)
	}))
	t.Cleanup(hs.Close)
	return uint16(hs.Listener.Addr().(*net.TCPAddr).Port)
}

func TestDialFailsOver(t *testing.T) {
	tests := []struct {
		name             string
		deadPri, livePri uint16
		deadW, liveW     uint16
	}{
		{"dead instance preferred by priority", 0, 1, 1, 1},
		{"dead instance preferred by weight", 5, 5, 1000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startDNS(t)
			live := liveServer(t, "live")
			srv.Add(
				discoverytest.Service("_calc._tcp", "dead", deadPort(t), tt.deadPri, tt.deadW, 30),
				discoverytest.Service("_calc._tcp", "live", live, tt.livePri, tt.liveW, 30),
			)
			r := newResolver(srv)
			for range 10 {
				conn, err := r.Dial(context.Background(), "tcp", "calc")
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				got := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
				conn.Close()
				if got != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), live) {
					t.Fatalf("Dial connected to %v, want the live instance on port %d", got, live)
				}
			}
		})
	}
}

func TestDialAllDown(t *testing.T) {
	srv := startDNS(t)
	srv.Add(
		discoverytest.Service("_calc._tcp", "calc-1", deadPort(t), 0, 1, 30),
		discoverytest.Service("_calc._tcp", "calc-2", deadPort(t), 0, 1, 30),
	)
	r := newResolver(srv)
	_, err := r.Dial(context.Background(), "tcp", "calc")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Dial with every instance down: %v, want ErrUnavailable", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("error %q does not carry the dial errors", err)
	}
	// The failed answer was forgotten: the next Dial asks DNS again and
	// finds the instance that came up meanwhile.
	srv.Reset()
	live := liveServer(t, "back")
	srv.Add(discoverytest.Service("_calc._tcp", "calc-3", live, 0, 1, 30))
	conn, err := r.Dial(context.Background(), "tcp", "calc")
	if err != nil {
		t.Fatalf("Dial after an instance came back: %v", err)
	}
	conn.Close()
	if srv.Queries("_calc._tcp", dns.TypeSRV) != 1 {
		t.Errorf("the failed answer was not forgotten")
	}
}

func TestDialNotFound(t *testing.T) {
	srv := startDNS(t)
	_, err := newResolver(srv).Dial(context.Background(), "tcp", "calc")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Dial of a missing service: %v, want ErrNotFound", err)
	}
}

func TestTransport(t *testing.T) {
	srv := startDNS(t)
	srv.Add(
		discoverytest.Service("_calc._tcp", "dead", deadPort(t), 0, 1, 30),
		discoverytest.Service("_calc._tcp", "live", liveServer(t, "hello from live"), 0, 1, 30),
	)
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1") // must be ignored
	tr := newResolver(srv).Transport()
	tr.DisableKeepAlives = true
	client := &http.Client{Transport: tr}
	for range 10 {
		resp, err := client.Get("http://calc/anything")
		if err != nil {
			t.Fatalf("GET through the transport: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello from live" {
			t.Fatalf("body = %q, want the live instance's", body)
		}
	}
	_, err := client.Get("http://time/")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("GET of a missing service: %v, want ErrNotFound", err)
	}
}
