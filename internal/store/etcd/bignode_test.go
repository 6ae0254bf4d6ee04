package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// bigInst is an instance as an agent registers it: tags, meta, a
// container name and a check's output (about 450 bytes of JSON).
func bigInst(prefix string, i int) registry.Instance {
	return registry.Instance{
		ID: fmt.Sprintf("%s-%04d", prefix, i), Service: "bulk",
		Address: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 7}), Port: uint16(30000 + i%30000),
		Tags:      []string{"v2", "blue", "zone-a"},
		Meta:      map[string]string{"version": "2.14.3", "image": "registry.example.com/team/bulk-worker:2.14.3", "commit": "9f3c2a1b7d"},
		Health:    registry.Health{Status: "passing", Output: "HTTP GET http://127.0.0.1:8080/healthz: 200 OK"},
		Container: fmt.Sprintf("bulk-worker-%s-%04d", prefix, i),
	}
}

func bigSet(prefix string, n int) []registry.Instance {
	out := make([]registry.Instance, n)
	for i := range out {
		out[i] = bigInst(prefix, i)
	}
	return out
}

// setKey names a set of instance IDs, for comparing what a reader saw.
func setKey(ids []string) string {
	slices.Sort(ids)
	return fmt.Sprintf("%d:%s", len(ids), strings.Join(ids, ","))
}

func idsOf(insts []registry.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	return out
}

// nodeIDs lists the IDs of node's instances in list.
func nodeIDs(list []registry.Instance, node string) []string {
	var out []string
	for _, in := range list {
		if in.Node == node {
			out = append(out, in.ID)
		}
	}
	return out
}

// watchChecker follows a store's watch from a List, applying every batch
// to a copy of the registry, and records a violation whenever a batch
// leaves node's set other than one of the allowed sets.
type watchChecker struct {
	mu      sync.Mutex
	allowed map[string]bool
	byID    map[string]registry.Instance
	batches int
	bad     []string
	seen    map[string]int // set -> batches that left it
	err     error
}

func (w *watchChecker) allow(sets ...[]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range sets {
		w.allowed[setKey(slices.Clone(s))] = true
	}
}

func startWatchChecker(t *testing.T, ctx context.Context, s *Store, node string, allowed ...[]string) *watchChecker {
	t.Helper()
	w := &watchChecker{allowed: map[string]bool{}, byID: map[string]registry.Instance{}, seen: map[string]int{}}
	w.allow(allowed...)
	list, rev, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		w.byID[in.ID] = in
	}
	ch, err := s.Watch(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for resp := range ch {
			w.mu.Lock()
			if resp.Err != nil {
				if ctx.Err() == nil {
					w.err = resp.Err
				}
				w.mu.Unlock()
				return
			}
			for _, ev := range resp.Events {
				if ev.Type == registry.EventPut {
					w.byID[ev.Instance.ID] = ev.Instance
				} else {
					delete(w.byID, ev.Instance.ID)
				}
			}
			if len(resp.Events) > 0 {
				w.batches++
				var ids []string
				for id, in := range w.byID {
					if in.Node == node {
						ids = append(ids, id)
					}
				}
				k := setKey(ids)
				w.seen[k]++
				if !w.allowed[k] {
					w.bad = append(w.bad, fmt.Sprintf("batch of %d events at revision %d left node %q with %d instances, not one of the whole sets", len(resp.Events), resp.Events[len(resp.Events)-1].Rev, node, len(ids)))
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// waitSet waits until the checker's copy holds exactly ids for node.
func (w *watchChecker) waitSet(t *testing.T, node string, ids []string) {
	t.Helper()
	want := setKey(slices.Clone(ids))
	waitFor(t, fmt.Sprintf("the watch to deliver node %q's set of %d", node, len(ids)), 30*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		var got []string
		for id, in := range w.byID {
			if in.Node == node {
				got = append(got, id)
			}
		}
		return setKey(got) == want
	})
}

func (w *watchChecker) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Errorf("watch failed: %v", w.err)
	}
	for i, b := range w.bad {
		if i == 10 {
			t.Errorf("... and %d more", len(w.bad)-10)
			break
		}
		t.Error(b)
	}
	t.Logf("watch: %d batches with events", w.batches)
}

// mustSet asserts that List shows exactly ids for node, and that the
// node's record carries no pending mark when pending is false.
func mustSet(t *testing.T, s *Store, cli *clientv3.Client, node string, ids []string, pending bool) {
	t.Helper()
	ctx := context.Background()
	list, _, err := s.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if got, want := setKey(nodeIDs(list, node)), setKey(slices.Clone(ids)); got != want {
		t.Fatalf("List shows node %q with %d instances, want its set of %d", node, len(nodeIDs(list, node)), len(ids))
	}
	g, err := cli.Get(ctx, s.nodeKey(node))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Kvs) == 0 {
		t.Fatalf("node %q has no record", node)
	}
	var rec nodeRecord
	if err := json.Unmarshal(g.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	if (rec.Pending != nil) != pending {
		t.Fatalf("node %q's record %s: pending mark %v, want %v", node, g.Kvs[0].Value, rec.Pending != nil, pending)
	}
}

func TestBigNodeSetEtcd37(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	bigNodeSet(t, etcdtest.Endpoints(members))
}

func TestBigNodeSetEtcd34(t *testing.T) {
	members := etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 1, 50*time.Millisecond, 500*time.Millisecond)
	bigNodeSet(t, etcdtest.Endpoints(members))
}

// bigNodeSet: node sets of 2,000 instances on etcd at its default limits
// (128 operations a transaction, 1.5 MiB a request): registered, replaced
// by another 2,000, shrunk to one, grown again; a Put to the node during
// a set written in several transactions is noticed and the set written
// again; a writer cut off between transactions leaves the node as it was
// for readers, and the next set repairs it. A watcher that follows the
// store never sees any other state of the node than a whole set.
func bigNodeSet(t *testing.T, eps []string) {
	cli := newClient(t, eps...)
	s := New(cli, Options{Prefix: "/big/", Log: quiet, Timeout: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node, ttl = "bighost", 10 * time.Second
	a, b := bigSet("a", 2000), bigSet("b", 2000)
	one := b[:1]
	w := startWatchChecker(t, ctx, s, node, nil, idsOf(a), idsOf(b), idsOf(one))

	step := func(what string, set []registry.Instance) {
		t.Helper()
		start := time.Now()
		if _, err := s.ReplaceNode(ctx, node, ttl, set); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %d instances in %s", what, len(set), time.Since(start).Round(time.Millisecond))
		mustSet(t, s, cli, node, idsOf(set), false)
		w.waitSet(t, node, idsOf(set))
	}
	step("register 2,000", a)
	step("replace by another 2,000", b)
	step("shrink to 1", one)
	step("grow to 2,000", a)
	step("the same 2,000 again", a)

	// A one-instance Put to the node between two transactions of a set:
	// the set notices, reads again and writes itself whole; the Put's
	// instance, not in the set, goes, and no reader ever sees it.
	stray := bigInst("stray", 1)
	stray.Node = node
	var marks, chunks int
	var putErr error
	s.chunkHook = func(_ context.Context, i int) {
		if i == 0 {
			marks++
		}
		chunks++
		if marks == 1 && i == 3 {
			_, putErr = s.Put(ctx, stray)
		}
	}
	step("replace by B, with a Put in the middle", b)
	s.chunkHook = nil
	if putErr != nil {
		t.Fatalf("the Put in the middle of the set: %v", putErr)
	}
	if marks < 2 {
		t.Fatalf("the set was marked pending %d times: the Put between its transactions went unnoticed", marks)
	}
	w.mu.Lock()
	for k := range w.seen {
		if strings.Contains(k, stray.ID) {
			t.Errorf("the watch showed the stray Put's instance, written while the set was pending")
		}
	}
	w.mu.Unlock()

	// A writer cut off after its third transaction: readers see the node
	// as it was (B), the record stays pending; a new reader (List, a
	// Watch begun now) sees B too; the next set repairs it.
	wctx, wcancel := context.WithCancel(ctx)
	s.chunkHook = func(_ context.Context, i int) {
		if i == 3 {
			wcancel()
		}
	}
	if _, err := s.ReplaceNode(wctx, node, ttl, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("a set whose writer was canceled between transactions: %v, want context.Canceled", err)
	}
	s.chunkHook = nil
	mustSet(t, s, cli, node, idsOf(b), true)
	late := startWatchChecker(t, ctx, s, node, idsOf(b), idsOf(a), idsOf(one))
	step("repair: replace by 1 over the half-written set", one)
	late.waitSet(t, node, idsOf(one))
	// A half-written set that the next set completes.
	wctx, wcancel = context.WithCancel(ctx)
	s.chunkHook = func(_ context.Context, i int) {
		if i == 5 {
			wcancel()
		}
	}
	if _, err := s.ReplaceNode(wctx, node, ttl, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("a set whose writer was canceled between transactions: %v, want context.Canceled", err)
	}
	s.chunkHook = nil
	mustSet(t, s, cli, node, idsOf(one), true)
	late2 := startWatchChecker(t, ctx, s, node, idsOf(one), idsOf(a))
	step("repair: the same set again", a)
	late2.waitSet(t, node, idsOf(a))

	w.check(t)
	late.check(t)
	late2.check(t)
}

// TestPendingSetExpires: a writer cut off in the middle of a set, and a
// host that never comes back: the lease runs out and takes everything,
// the old instances and the half-written new ones, at once.
func TestPendingSetExpires(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	cli := newClient(t, etcdtest.Endpoints(members)...)
	s := New(cli, Options{Prefix: "/exp/", Log: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node, ttl = "gone", 2 * time.Second
	a, b := bigSet("a", 600), bigSet("b", 600)
	w := startWatchChecker(t, ctx, s, node, nil, idsOf(a))
	if _, err := s.ReplaceNode(ctx, node, ttl, a); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	s.chunkHook = func(_ context.Context, i int) {
		if i == 2 {
			wcancel()
		}
	}
	if _, err := s.ReplaceNode(wctx, node, ttl, b); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled writer: %v", err)
	}
	mustSet(t, s, cli, node, idsOf(a), true)
	w.waitSet(t, node, nil)
	list, _, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(nodeIDs(list, node)); n != 0 {
		t.Fatalf("after the lease ran out List shows %d of the node's instances", n)
	}
	w.check(t)
}
