package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestAcknowledgedWritesSurviveSIGKILL writes from several clients, kills
// the server with SIGKILL in the middle of the stream, restarts it on the
// same data dir, and finds every write the API acknowledged.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	dataDir := t.TempDir()
	p := signposttest.StartProcess(t, 0, "--data-dir", dataDir)
	c, err := apiclient.New(p.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Some deletes that are acknowledged before the kill must stay deleted.
	for i := 0; i < 5; i++ {
		in := registry.Instance{ID: fmt.Sprintf("gone-%d", i), Service: "gone", Address: netip.MustParseAddr("10.0.0.1"), Port: uint16(1000 + i)}
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Deregister(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	acked := map[string]uint16{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				port := uint16(10000 + w*1000 + i%1000)
				in := registry.Instance{ID: id, Service: fmt.Sprintf("svc%d", i%7), Address: netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", w, i%250+1)), Port: port}
				if _, err := c.Register(ctx, in); err != nil {
					return // the server died under us: this one was not acknowledged
				}
				mu.Lock()
				acked[id] = port
				mu.Unlock()
			}
		}(w)
	}
	// Let a few hundred writes through, then kill -9.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 300 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}

	p2 := signposttest.StartProcess(t, 0, "--data-dir", dataDir)
	c2, err := apiclient.New(p2.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	all, _, err := c2.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]uint16{}
	for _, in := range all {
		have[in.ID] = in.Port
	}
	missing := 0
	for id, port := range acked {
		if have[id] != port {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged write %s (port %d) lost after SIGKILL", id, port)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", missing, len(acked))
	}
	for i := 0; i < 5; i++ {
		if _, ok := have[fmt.Sprintf("gone-%d", i)]; ok {
			t.Errorf("acknowledged delete gone-%d came back after SIGKILL", i)
		}
	}
	// And DNS answers them.
	m := new(dns.Msg)
	m.SetQuestion("_svc0._tcp.servicediscovery.internal.", dns.TypeSRV)
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, p2.DNS)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("DNS after restart: %v %v", r, err)
	}
	t.Logf("%d acknowledged writes, all found after SIGKILL and restart", len(acked))
}
