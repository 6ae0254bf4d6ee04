package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestFailedCommitFailsOnlyItsWrite: a write that breaks the transaction
// it shares (an op that writes a key bbolt refuses, as a write the checks
// let through would; or one during which bbolt panics, as on a damaged
// page) fails alone; the writes committed beside it all succeed, and the
// node set that failed leaves no lease behind.
func TestFailedCommitFailsOnlyItsWrite(t *testing.T) {
	t.Run("key too large", func(t *testing.T) {
		failedCommitFailsOnlyItsWrite(t, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketNodes).Put([]byte(strings.Repeat("n", bolt.MaxKeySize+1)), []byte("{}"))
		})
	})
	t.Run("panic", func(t *testing.T) {
		failedCommitFailsOnlyItsWrite(t, func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketNodes).Put([]byte("bad-node"), []byte("{}")); err != nil {
				return err
			}
			panic("page 12: unexpected page type")
		})
	})
}

func failedCommitFailsOnlyItsWrite(t *testing.T, breakTx func(tx *bolt.Tx) error) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler), CommitInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	// A node set whose commit fails after it renewed its lease in memory.
	bad := &op{}
	bad.fn = func(tx *bolt.Tx, next func() int64) ([]registry.Event, error) {
		mine := &lease{ttl: time.Minute, deadline: time.Now().Add(time.Minute)}
		s.mu.Lock()
		s.leases["bad-node"] = mine
		s.mu.Unlock()
		bad.undo = func() {
			s.mu.Lock()
			delete(s.leases, "bad-node")
			s.mu.Unlock()
		}
		return nil, breakTx(tx)
	}

	// Hold the writer in a commit until every write below is queued, so
	// that they all share the next commit.
	const good = 150
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	blocker := &op{fn: func(*bolt.Tx, func() int64) ([]registry.Event, error) {
		close(entered)
		<-release
		return nil, nil
	}}
	go func() { _, _ = s.submit(ctx, blocker) }()
	<-entered
	var wg sync.WaitGroup
	errs := make(chan error, good)
	start := make(chan struct{})
	for i := range good {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Put(ctx, registry.Instance{ID: fmt.Sprintf("good-%d", i), Service: "calc", Address: netip.MustParseAddr("10.1.2.3"), Port: uint16(1000 + i)})
			if err != nil {
				errs <- err
			}
		}()
	}
	var badErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		_, badErr = s.submit(ctx, bad)
	}()
	close(start)
	deadline := time.Now().Add(30 * time.Second)
	for len(s.ops) < good+1 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes queued after 30s", len(s.ops))
		}
		time.Sleep(time.Millisecond)
	}
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		n++
		t.Errorf("a good write failed beside the bad one: %v", err)
	}
	if badErr == nil {
		t.Error("the write that broke its commit succeeded")
	} else if strings.Contains(badErr.Error(), dir) {
		t.Errorf("the error shows the database path: %v", badErr)
	}
	list, _, err := s.List(ctx)
	if err != nil || len(list) != good {
		t.Errorf("List = %d instances, %v; want all %d good ones and no other", len(list), err, good)
	}
	if _, err := s.Put(ctx, registry.Instance{ID: "after", Service: "calc", Address: netip.MustParseAddr("10.1.2.3"), Port: 1}); err != nil {
		t.Errorf("a write after the failed commit: %v", err)
	}
	if err := s.KeepAlive(ctx, "bad-node"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("the failed node set left a lease behind: KeepAlive = %v", err)
	}
	ls, _ := s.Leases(ctx)
	if len(ls) != 0 {
		t.Errorf("Leases after a failed node set = %v, want none", ls)
	}
}

// TestOversizedKeysRefusedBeforeCommit: names that would break bbolt's key
// limit are refused with a FieldError before they reach a commit.
func TestOversizedKeysRefusedBeforeCommit(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	long := strings.Repeat("a", 40000)
	var fe *registry.FieldError
	if _, err := s.ReplaceNode(ctx, long, 10*time.Second, []registry.Instance{}); !errors.As(err, &fe) || fe.Field != "node" {
		t.Errorf("ReplaceNode with a 40,000-byte node name and no instances: err = %v, want a FieldError on node", err)
	}
	if _, err := s.Put(ctx, registry.Instance{ID: long, Service: "calc", Address: netip.MustParseAddr("10.1.2.3"), Port: 1}); !errors.As(err, &fe) {
		t.Errorf("Put with a 40,000-byte id: err = %v, want a FieldError", err)
	}
	ls, _ := s.Leases(ctx)
	if len(ls) != 0 {
		t.Errorf("Leases = %v, want none", ls)
	}
}
