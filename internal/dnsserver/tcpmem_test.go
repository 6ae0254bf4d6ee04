package dnsserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestIdleTCPConnectionsCostLittleMemory: connections waiting for a query
// hold no answer buffers. At the default cap of 1,000 connections,
// buffers of 128 KiB each would pin 128 MiB.
func TestIdleTCPConnectionsCostLittleMemory(t *testing.T) {
	const conns = 200
	s := newTestServer(t, 3)
	s.cfg.MaxTCPConnsPerClient = conns
	l, err := Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := l.TCP.Addr().String()
	// One query first, so that whatever is allocated once is allocated.
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("big.servicediscovery.internal.", dns.TypeSRV)
	if _, _, err := c.Exchange(m, addr); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := heap()
	for range conns {
		nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.tcpConns)
		s.mu.Unlock()
		if n == conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections admitted", n, conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
	grown := int64(heap()) - int64(before)
	t.Logf("heap and stacks grew %d bytes for %d idle connections (%d each)", grown, conns, grown/conns)
	if per := grown / conns; per > 16<<10 {
		t.Errorf("each idle TCP connection holds %d bytes of heap and stack, want under 16 KiB", per)
	}
}

// TestPipelinedAndLargeTCPQueries: queries written back to back in one
// segment are answered in order (RFC 7766), a query longer than the
// buffer a connection starts with is read whole, and an empty message is
// skipped.
func TestPipelinedAndLargeTCPQueries(t *testing.T) {
	s := newTestServer(t, 3)
	l, err := Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := net.DialTimeout("tcp", l.TCP.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	names := []string{"svc0", "svc1", "big", "svc2"}
	var batch []byte
	batch = append(batch, 0, 0) // an empty message: no answer
	for i, name := range names {
		q := packQuery(t, name+".servicediscovery.internal.", dns.TypeSRV, 1232, func(m *dns.Msg) {
			m.Id = uint16(i + 1)
			if i == 2 {
				// Padding (RFC 7830) makes the query 3,000 bytes.
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 3000)})
			}
		})
		batch = append(batch, byte(len(q)>>8), byte(len(q)))
		batch = append(batch, q...)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(batch); err != nil {
		t.Fatal(err)
	}
	dc := &dns.Conn{Conn: nc}
	for i, name := range names {
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if r.Id != uint16(i+1) || !strings.HasPrefix(r.Question[0].Name, name+".") || len(r.Answer) == 0 {
			t.Fatalf("answer %d: id %d, %v", i+1, r.Id, r.Question)
		}
	}
}

// TestZoneTooLongForBrowsingIsSaid: in a zone longer than 232 bytes in
// wire form, _services._dns-sd._udp.<zone> is over 255 bytes and cannot
// be asked for: the server says so at start instead of browsing silently
// never working.
func TestZoneTooLongForBrowsingIsSaid(t *testing.T) {
	long := strings.Repeat("z", 63) + "." + strings.Repeat("y", 63) + "." + strings.Repeat("x", 63) + "." + strings.Repeat("w", 40)
	for zone, warn := range map[string]bool{long: true, "servicediscovery.internal": false} {
		var logs strings.Builder
		ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
		if _, err := New(Config{Zone: zone, Log: slog.New(slog.NewTextHandler(&logs, nil))}, ix); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), "_services._dns-sd._udp"); got != warn {
			t.Errorf("zone of %d bytes: warned %v, want %v: %s", len(zone), got, warn, logs.String())
		}
	}
}
