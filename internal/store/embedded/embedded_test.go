package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/registry/storetest"
)

// testHistory is small so that the compaction test can outrun it cheaply.
const testHistory = 256

func openTest(t *testing.T) registry.Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{
		Log:            slog.New(slog.DiscardHandler),
		History:        testHistory,
		ExpiryInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close embedded store: %v", err)
		}
	})
	return s
}

// compact writes enough changes to push rev out of the kept history.
func compact(t *testing.T, s registry.Store, rev int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2 * testHistory / 16 {
				n := g*1000 + i
				in := registry.Instance{
					ID: fmt.Sprintf("filler-%d", n), Service: "filler",
					Address: netip.MustParseAddr("10.9.0.1"), Port: uint16(1 + n),
				}
				if _, err := s.Put(context.Background(), in); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write filler: %v", err)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, openTest, storetest.WithCompact(compact))
}

// TestReopenKeepsRegistry checks what the suite cannot: a restart keeps the
// instances, the revision and the node leases.
func TestReopenKeepsRegistry(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	in := registry.Instance{ID: "a", Service: "calc", Address: netip.MustParseAddr("10.0.0.1"), Port: 80}
	if _, err := s.ReplaceNode(ctx, "host1", time.Minute, []registry.Instance{in}); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, in); err == nil {
		t.Error("Put on a closed store succeeded")
	}
	s, err = Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, rev2, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].ID != "a" || l[0].Node != "host1" || rev2 != rev {
		t.Errorf("after reopen List = %+v at %d, want [a of host1] at %d", l, rev2, rev)
	}
	if err := s.KeepAlive(ctx, "host1"); err != nil {
		t.Errorf("KeepAlive after reopen: %v", err)
	}
}

// TestReplaceNodeWinsOverExpiryInOneCommit: when an agent's ReplaceNode
// and the expiry of its old lease share one commit, in that order, the
// agent's new set must survive: ReplaceNode said it was written.
func TestReplaceNodeWinsOverExpiryInOneCommit(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{Log: slog.New(slog.DiscardHandler), ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := registry.Instance{ID: "a", Service: "calc", Address: netip.MustParseAddr("10.0.0.1"), Port: 80}
	if _, err := s.ReplaceNode(ctx, "host1", 20*time.Millisecond, []registry.Instance{a}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the lease is now expired, not yet dropped

	// Hold the writer so that the next two writes share one commit.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // before Close, which waits for the writer
	started := make(chan struct{})
	go s.submit(ctx, &op{fn: func(*bolt.Tx, func() int64) ([]registry.Event, error) {
		close(started)
		<-release
		return nil, nil
	}})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not take the blocking write")
	}
	waitQueued := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for len(s.ops) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d writes not queued", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	replaced := make(chan error, 1)
	go func() {
		_, err := s.ReplaceNode(ctx, "host1", time.Minute, []registry.Instance{a})
		replaced <- err
	}()
	waitQueued(1)
	expired := make(chan error, 1)
	go func() {
		_, err := s.dropNode(ctx, "host1", "lease expired", true)
		expired <- err
	}()
	waitQueued(2)
	unblock()
	if err := <-replaced; err != nil {
		t.Fatalf("ReplaceNode: %v", err)
	}
	<-expired
	l, _, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].ID != "a" {
		t.Errorf("after a successful ReplaceNode the registry holds %+v, want a", l)
	}
	b := a
	b.ID, b.Node = "b", "host1"
	if _, err := s.Put(ctx, b); err != nil {
		t.Errorf("Put for the node after its successful ReplaceNode: %v", err)
	}
}
