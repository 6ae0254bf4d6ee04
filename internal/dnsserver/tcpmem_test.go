package dnsserver

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
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
		return ms.HeapInuse
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
	t.Logf("heap grew %d bytes for %d idle connections (%d each)", grown, conns, grown/conns)
	if per := grown / conns; per > 16<<10 {
		t.Errorf("each idle TCP connection holds %d bytes of heap, want under 16 KiB", per)
	}
}
