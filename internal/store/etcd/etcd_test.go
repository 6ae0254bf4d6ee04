package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/registry/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestConformance(t *testing.T) {
	// Short ticks so that etcd grants the suite's 1s leases.
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	cli := newClient(t, members[0].ClientURL())
	var n atomic.Int64
	open := func(t *testing.T) registry.Store {
		// Each subtest gets its own prefix: an empty registry.
		s := New(cli, Options{Prefix: fmt.Sprintf("/test%d/", n.Add(1)), Log: quiet})
		t.Cleanup(func() { s.Close() })
		return s
	}
	compact := func(t *testing.T, _ registry.Store, rev int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g, err := cli.Get(ctx, "compact-probe")
		if err != nil {
			t.Fatalf("read etcd revision: %v", err)
		}
		if _, err := cli.Compact(ctx, g.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact etcd at %d: %v", g.Header.Revision, err)
		}
	}
	storetest.Run(t, open, storetest.WithCompact(compact))
}

func testInst(id string, n int) registry.Instance {
	return registry.Instance{ID: id, Service: "calc", Address: netip.AddrFrom4([4]byte{10, 1, 0, byte(n)}), Port: uint16(9000 + n)}
}

func TestOpenDefaultsAndLayout(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	s, err := Open(Options{Endpoints: []string{members[0].ClientURL()}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.ReplaceNode(ctx, "host1", 2*time.Second, []registry.Instance{testInst("a", 1)}); err != nil {
		t.Fatal(err)
	}
	cli := newClient(t, members[0].ClientURL())
	g, err := cli.Get(ctx, DefaultPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range g.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if fmt.Sprint(keys) != "[/signpost/instances/a /signpost/nodes/host1]" {
		t.Errorf("keys under %s = %v, want the instance and the node's lease record", DefaultPrefix, keys)
	}
	// The instance is attached to an etcd lease: revoking it from outside
	// removes the instance, and the watch says why.
	_, rev, _ := s.List(ctx)
	ch, err := s.Watch(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := cli.Leases(ctx)
	if err != nil || len(ls.Leases) != 1 {
		t.Fatalf("etcd leases = %v, %v; want one", ls, err)
	}
	if _, err := cli.Revoke(ctx, ls.Leases[0].ID); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-ch:
		if len(resp.Events) != 1 || resp.Events[0].Type != registry.EventDelete || resp.Events[0].Reason != registry.ReasonLeaseExpired {
			t.Errorf("after the lease ended the watch sent %+v, want a delete of a with Reason %q", resp, registry.ReasonLeaseExpired)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event after the lease was revoked")
	}
	if err := s.KeepAlive(ctx, "host1"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("KeepAlive after the etcd lease ended: err = %v, want ErrNoLease", err)
	}
}

func TestOpenNeedsEndpoints(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open with no endpoints succeeded")
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// retryPut puts in until it succeeds or timeout passes: while etcd elects a
// new leader a write may be refused, but it must go through after.
func retryPut(t *testing.T, s *Store, in registry.Instance, timeout time.Duration) int64 {
	t.Helper()
	var rev int64
	var last error
	waitFor(t, "put of "+in.ID+" to succeed", timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rev, last = s.Put(ctx, in)
		if last != nil {
			t.Logf("put %s: %v (retrying)", in.ID, last)
		}
		return last == nil
	})
	return rev
}

// TestThreeMembers runs a real three-member cluster: two stores on it (as
// two signpost servers), one following with an index. Losing one member,
// the leader, writes and reads go on; losing two, writes are refused with
// ErrUnavailable while the index keeps answering; with quorum back, both
// catch up.
func TestThreeMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, 1000*time.Millisecond)
	eps := []string{members[0].ClientURL(), members[1].ClientURL(), members[2].ClientURL()}
	s1, err := Open(Options{Endpoints: eps, Timeout: 3 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := Open(Options{Endpoints: []string{eps[2], eps[1], eps[0]}, Timeout: 3 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ix := registry.NewIndex(quiet)
	go ix.Run(ctx, s2)

	has := func(id string) bool { _, ok := ix.Get(id); return ok }
	const ttl = 4 * time.Second
	rev, err := s1.ReplaceNode(ctx, "host1", ttl, []registry.Instance{testInst("a", 1)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	if err := ix.WaitRev(wctx, rev); err != nil {
		t.Fatalf("the other server's index did not reach the write's revision: %v", err)
	}
	wcancel()
	if !has("a") {
		t.Fatal("a registration through server 1 is not in server 2's index")
	}

	// host1's agent heartbeats through server 2 all along; a heartbeat may
	// fail while a new leader is elected, but the lease must never be lost.
	hbStart := time.Now()
	hbCtx, hbStop := context.WithCancel(ctx)
	var lost atomic.Value
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		for hbCtx.Err() == nil {
			kctx, kcancel := context.WithTimeout(hbCtx, 2*time.Second)
			err := s2.KeepAlive(kctx, "host1")
			kcancel()
			if errors.Is(err, registry.ErrNoLease) {
				lost.Store(err)
				return
			}
			select {
			case <-hbCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	// Stop the leader.
	cli := newClient(t, eps...)
	leader := -1
	for i, ep := range eps {
		st, err := cli.Status(ctx, ep)
		if err == nil && st.Header.MemberId == st.Leader {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader found")
	}
	t.Logf("stopping leader %s", members[leader].Name())
	members[leader].Stop()

	retryPut(t, s1, testInst("b", 2), 30*time.Second)
	waitFor(t, "b in server 2's index with one member down", 30*time.Second, func() bool { return has("b") })
	// Heartbeats keep host1 past twice its TTL with a member down.
	time.Sleep(time.Until(hbStart.Add(2 * ttl)))
	hbStop()
	<-hbDone
	if err := lost.Load(); err != nil {
		t.Fatalf("host1's lease was lost while it heartbeated with one member down: %v", err)
	}
	if !has("a") {
		t.Fatal("host1's instance is gone although its agent heartbeated")
	}
	l, _, err := s2.List(ctx)
	if err != nil || len(l) != 2 {
		t.Fatalf("List through server 2 with one member down = %v, %v; want a and b", l, err)
	}
	// A lease not kept alive still expires with a member down.
	if _, err := s1.ReplaceNode(ctx, "host2", 2*time.Second, []registry.Instance{testInst("c", 3)}); err != nil {
		t.Fatalf("ReplaceNode with one member down: %v", err)
	}
	waitFor(t, "c in the index", 10*time.Second, func() bool { return has("c") })
	waitFor(t, "host2's lease to expire", 30*time.Second, func() bool { return !has("c") })

	// Stop a second member: no quorum, writes are refused.
	second := (leader + 1) % 3
	members[second].Stop()
	start := time.Now()
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = s1.Put(pctx, testInst("d", 4))
	pcancel()
	if !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Put without quorum: err = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Put without quorum took %s to fail; want about the 3s timeout", took)
	}
	t.Logf("without quorum: %v", err)
	if !has("b") { // a went with host1's lease, no longer kept alive
		t.Error("the index lost what it had when etcd lost quorum")
	}

	// Quorum back: writes go through and the index catches up.
	members[second].Start(t)
	retryPut(t, s1, testInst("d", 4), 60*time.Second)
	waitFor(t, "d in server 2's index after quorum came back", 60*time.Second, func() bool { return has("d") })
}
