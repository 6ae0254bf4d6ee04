// Package storetest is a conformance suite for registry.Store: every store
// runs it from its own tests, so that the embedded store, the etcd store and
// any later one keep the same contract.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Option tunes Run.
type Option func(*config)

type config struct {
	compact  func(t *testing.T, s registry.Store, rev int64)
	leaseTTL time.Duration
	timeout  time.Duration
}

// WithCompact enables the compaction test. compact must make s forget the
// history after rev, so that a Watch from rev fails with
// registry.ErrCompacted. The suite has written several changes after rev
// before it calls compact. Without this option the test is skipped.
func WithCompact(compact func(t *testing.T, s registry.Store, rev int64)) Option {
	return func(c *config) { c.compact = compact }
}

// WithLeaseTTL sets the node lease TTL the suite uses (default 1s). Stores
// whose leases cannot be that short may ask for longer.
func WithLeaseTTL(ttl time.Duration) Option {
	return func(c *config) { c.leaseTTL = ttl }
}

// WithTimeout sets how long the suite waits for a condition before it fails
// (default 20s).
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// Run runs the suite. open returns a new, empty store for each subtest; it
// should close it with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) registry.Store, opts ...Option) {
	c := &config{leaseTTL: time.Second, timeout: 20 * time.Second}
	for _, o := range opts {
		o(c)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, c *config, s registry.Store)
	}{
		{"PutList", testPutList},
		{"PutInvalid", testPutInvalid},
		{"Delete", testDelete},
		{"PutNeedsLease", testPutNeedsLease},
		{"Conflict", testConflict},
		{"ReplaceNodeSet", testReplaceNodeSet},
		{"ReplaceNodeInvalid", testReplaceNodeInvalid},
		{"ReplaceNodeAtomic", testReplaceNodeAtomic},
		{"Leases", testLeases},
		{"KeepAliveHoldsLease", testKeepAliveHolds},
		{"LeaseExpiry", testLeaseExpiry},
		{"ReleaseNode", testReleaseNode},
		{"WatchOrderExactlyOnce", testWatchOrder},
		{"WatchConcurrentWriters", testWatchConcurrent},
		{"IdenticalPutNoEvent", testIdenticalPut},
		{"WatchCancel", testWatchCancel},
		{"WatchCompacted", testWatchCompacted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, c, open(t))
		})
	}
}

// inst returns a valid instance; n picks its address and port.
func inst(id, service, node string, n int) registry.Instance {
	return registry.Instance{
		ID:      id,
		Service: service,
		Address: netip.AddrFrom4([4]byte{10, 0, byte(n / 250), byte(n%250 + 1)}),
		Port:    uint16(8000 + n),
		Node:    node,
	}
}

func ctxT(t *testing.T, c *config) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	t.Cleanup(cancel)
	return ctx
}

// ids returns the sorted IDs of list, keeping only those of node when node
// is not "*".
func ids(list []registry.Instance, node string) []string {
	var out []string
	for _, in := range list {
		if node == "*" || in.Node == node {
			out = append(out, in.ID)
		}
	}
	slices.Sort(out)
	return out
}

func list(t *testing.T, c *config, s registry.Store) ([]registry.Instance, int64) {
	t.Helper()
	l, rev, err := s.List(ctxT(t, c))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return l, rev
}

func find(l []registry.Instance, id string) (registry.Instance, bool) {
	for _, in := range l {
		if in.ID == id {
			return in, true
		}
	}
	return registry.Instance{}, false
}

func mustPut(t *testing.T, c *config, s registry.Store, in registry.Instance) int64 {
	t.Helper()
	rev, err := s.Put(ctxT(t, c), in)
	if err != nil {
		t.Fatalf("Put %q: %v", in.ID, err)
	}
	return rev
}

func mustReplace(t *testing.T, c *config, s registry.Store, node string, insts ...registry.Instance) int64 {
	t.Helper()
	rev, err := s.ReplaceNode(ctxT(t, c), node, c.leaseTTL, insts)
	if err != nil {
		t.Fatalf("ReplaceNode %q: %v", node, err)
	}
	return rev
}

// waitUntil polls cond until it holds or the suite's timeout passes.
func waitUntil(t *testing.T, c *config, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(c.timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", c.timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watcher collects what a Watch delivers.
type watcher struct {
	t      *testing.T
	c      *config
	cancel context.CancelFunc
	closed chan struct{}

	mu      sync.Mutex
	events  []registry.Event
	reached int64 // highest revision the watch is known to have delivered
	err     error
	resps   [][]registry.Event
}

func watch(t *testing.T, c *config, s registry.Store, rev int64) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, rev)
	if err != nil {
		cancel()
		t.Fatalf("Watch from %d: %v", rev, err)
	}
	w := &watcher{t: t, c: c, cancel: cancel, closed: make(chan struct{}), reached: rev}
	t.Cleanup(cancel)
	go func() {
		defer close(w.closed)
		for resp := range ch {
			w.mu.Lock()
			if resp.Err != nil && w.err == nil {
				w.err = resp.Err
			}
			w.events = append(w.events, resp.Events...)
			if len(resp.Events) > 0 {
				w.resps = append(w.resps, resp.Events)
			}
			for _, ev := range resp.Events {
				w.reached = max(w.reached, ev.Rev)
			}
			w.reached = max(w.reached, resp.Rev)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watcher) snapshot() ([]registry.Event, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events), w.reached, w.err
}

// waitEvents waits until the watch has delivered at least n events.
func (w *watcher) waitEvents(n int) []registry.Event {
	w.t.Helper()
	var evs []registry.Event
	waitUntil(w.t, w.c, fmt.Sprintf("%d watch events", n), func() bool {
		var err error
		evs, _, err = w.snapshot()
		if err != nil {
			w.t.Fatalf("watch failed: %v", err)
		}
		return len(evs) >= n
	})
	return evs
}

// waitReached waits until the watch has delivered everything up to rev, as
// a watcher waiting for a write's revision would.
func (w *watcher) waitReached(rev int64) {
	w.t.Helper()
	waitUntil(w.t, w.c, fmt.Sprintf("watch to reach revision %d", rev), func() bool {
		_, r, err := w.snapshot()
		if err != nil {
			w.t.Fatalf("watch failed: %v", err)
		}
		return r >= rev
	})
}

func evString(ev registry.Event) string {
	s := fmt.Sprintf("%s %s@%d", ev.Type, ev.Instance.ID, ev.Rev)
	if ev.Reason != "" {
		s += " (" + ev.Reason + ")"
	}
	return s
}

func evStrings(evs []registry.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = evString(ev)
	}
	return out
}

func testPutList(t *testing.T, c *config, s registry.Store) {
	_, rev0 := list(t, c, s)
	a := inst("a1", "_calc._tcp", "", 1)
	a.Tags = []string{"blue", "v2"}
	a.Meta = map[string]string{"version": "2"}
	r1 := mustPut(t, c, s, a)
	if r1 <= rev0 {
		t.Errorf("Put returned revision %d, not after the List revision %d", r1, rev0)
	}
	r2 := mustPut(t, c, s, inst("b1", "time", "", 2))
	if r2 <= r1 {
		t.Errorf("second Put returned revision %d, not after the first's %d", r2, r1)
	}
	l, lrev := list(t, c, s)
	if lrev < r2 {
		t.Errorf("List revision %d is before the last write's %d", lrev, r2)
	}
	if got := ids(l, "*"); !slices.Equal(got, []string{"a1", "b1"}) {
		t.Fatalf("List IDs = %v, want [a1 b1]", got)
	}
	got, _ := find(l, "a1")
	want := a.Clone()
	want.Normalize()
	if got.Service != "calc" || got.Protocol != registry.TCP || got.Weight != 1 || got.Health.Status != registry.HealthPassing {
		t.Errorf("stored instance not normalized: %+v", got)
	}
	if !registry.SameRegistration(&got, &want) {
		t.Errorf("List returned %+v, want %+v", got, want)
	}
	if got.RegisteredAt.IsZero() {
		t.Errorf("RegisteredAt not set on %+v", got)
	}
	// An update keeps the registration time and moves the revision.
	moved := a
	moved.Port = 9999
	r3 := mustPut(t, c, s, moved)
	if r3 <= r2 {
		t.Errorf("update returned revision %d, not after %d", r3, r2)
	}
	l, _ = list(t, c, s)
	upd, _ := find(l, "a1")
	if upd.Port != 9999 {
		t.Errorf("after update port = %d, want 9999", upd.Port)
	}
	if !upd.RegisteredAt.Equal(got.RegisteredAt) {
		t.Errorf("update changed RegisteredAt from %v to %v", got.RegisteredAt, upd.RegisteredAt)
	}
}

func testPutInvalid(t *testing.T, c *config, s registry.Store) {
	bad := inst("Not_A_Label", "calc", "", 1)
	_, err := s.Put(ctxT(t, c), bad)
	var fe *registry.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Put of an invalid ID: err = %v, want a *registry.FieldError", err)
	}
	noPort := inst("x1", "calc", "", 1)
	noPort.Port = 0
	if _, err := s.Put(ctxT(t, c), noPort); !errors.As(err, &fe) || fe.Field != "port" {
		t.Errorf("Put without a port: err = %v, want a FieldError on port", err)
	}
	if l, _ := list(t, c, s); len(l) != 0 {
		t.Errorf("invalid Puts stored %v", ids(l, "*"))
	}
}

func testDelete(t *testing.T, c *config, s registry.Store) {
	r1 := mustPut(t, c, s, inst("a1", "calc", "", 1))
	mustPut(t, c, s, inst("a2", "calc", "", 2))
	rd, err := s.Delete(ctxT(t, c), "a1")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if rd <= r1 {
		t.Errorf("Delete returned revision %d, not after the Put's %d", rd, r1)
	}
	if l, lrev := list(t, c, s); !slices.Equal(ids(l, "*"), []string{"a2"}) || lrev < rd {
		t.Errorf("after Delete List = %v at %d, want [a2] at >= %d", ids(l, "*"), lrev, rd)
	}
	if _, err := s.Delete(ctxT(t, c), "a1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second Delete: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctxT(t, c), "never"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Delete of an unknown ID: err = %v, want ErrNotFound", err)
	}
}

func testPutNeedsLease(t *testing.T, c *config, s registry.Store) {
	if _, err := s.Put(ctxT(t, c), inst("a1", "calc", "host1", 1)); !errors.Is(err, registry.ErrNoLease) {
		t.Fatalf("Put for a node without a lease: err = %v, want ErrNoLease", err)
	}
	if l, _ := list(t, c, s); len(l) != 0 {
		t.Fatalf("refused Put stored %v", ids(l, "*"))
	}
	mustReplace(t, c, s, "host1")
	mustPut(t, c, s, inst("a1", "calc", "host1", 1))
	if l, _ := list(t, c, s); !slices.Equal(ids(l, "host1"), []string{"a1"}) {
		t.Errorf("List of host1 = %v, want [a1]", ids(l, "host1"))
	}
}

func testConflict(t *testing.T, c *config, s registry.Store) {
	mustReplace(t, c, s, "host-a", inst("x1", "calc", "", 1))
	mustReplace(t, c, s, "host-b", inst("y1", "calc", "", 2))
	mustPut(t, c, s, inst("h1", "calc", "", 3))
	before, _ := list(t, c, s)

	for _, tc := range []struct {
		what string
		in   registry.Instance
	}{
		{"another node's instance by a node", inst("x1", "calc", "host-b", 9)},
		{"a node's instance by hand", inst("x1", "calc", "", 9)},
		{"a hand-registered instance by a node", inst("h1", "calc", "host-a", 9)},
	} {
		if _, err := s.Put(ctxT(t, c), tc.in); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Put of %s: err = %v, want ErrConflict", tc.what, err)
		}
	}
	// ReplaceNode that would take x1 over fails whole: y2 is not written
	// and host-b keeps y1.
	_, err := s.ReplaceNode(ctxT(t, c), "host-b", c.leaseTTL, []registry.Instance{inst("x1", "calc", "", 9), inst("y2", "calc", "", 4)})
	if !errors.Is(err, registry.ErrConflict) {
		t.Errorf("ReplaceNode taking another node's instance: err = %v, want ErrConflict", err)
	}
	if _, err := s.ReplaceNode(ctxT(t, c), "host-a", c.leaseTTL, []registry.Instance{inst("h1", "calc", "", 9)}); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("ReplaceNode taking a hand-registered instance: err = %v, want ErrConflict", err)
	}
	after, _ := list(t, c, s)
	if !slices.Equal(ids(after, "*"), ids(before, "*")) {
		t.Fatalf("refused writes changed the registry from %v to %v", ids(before, "*"), ids(after, "*"))
	}
	for _, b := range before {
		a, _ := find(after, b.ID)
		if !registry.SameRegistration(&a, &b) {
			t.Errorf("refused writes changed %q from %+v to %+v", b.ID, b, a)
		}
	}
}

func testReplaceNodeSet(t *testing.T, c *config, s registry.Store) {
	_, rev0 := list(t, c, s)
	r1 := mustReplace(t, c, s, "host1", inst("a", "calc", "", 1), inst("b", "calc", "", 2), inst("c", "time", "", 3))
	if r1 <= rev0 {
		t.Errorf("ReplaceNode returned revision %d, not after %d", r1, rev0)
	}
	mustPut(t, c, s, inst("d", "calc", "host1", 4))
	mustPut(t, c, s, inst("h", "calc", "", 5)) // by hand: not the node's
	l, rev1 := list(t, c, s)
	if got := ids(l, "host1"); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("host1 owns %v, want [a b c d]", got)
	}
	w := watch(t, c, s, rev1)
	b2 := inst("b", "calc", "", 20) // moved
	r2 := mustReplace(t, c, s, "host1", b2, inst("c", "time", "", 3), inst("e", "calc", "", 6))
	if r2 <= rev1 {
		t.Errorf("second ReplaceNode returned revision %d, not after %d", r2, rev1)
	}
	l, _ = list(t, c, s)
	if got := ids(l, "*"); !slices.Equal(got, []string{"b", "c", "e", "h"}) {
		t.Fatalf("after ReplaceNode the registry holds %v, want [b c e h]", got)
	}
	if got, _ := find(l, "b"); got.Port != b2.Port || got.Node != "host1" {
		t.Errorf("b after ReplaceNode = %+v, want port %d and node host1", got, b2.Port)
	}
	w.waitReached(r2)
	evs, _, _ := w.snapshot()
	var dels, puts []string
	for _, ev := range evs {
		if ev.Rev <= rev1 || ev.Rev > r2 {
			t.Errorf("event %s outside (%d, %d]", evString(ev), rev1, r2)
		}
		switch ev.Type {
		case registry.EventDelete:
			dels = append(dels, ev.Instance.ID)
			if ev.Instance.Service != "calc" || ev.Instance.Node != "host1" {
				t.Errorf("delete event does not carry the old instance: %+v", ev.Instance)
			}
			if ev.Reason != "" {
				t.Errorf("delete by ReplaceNode has Reason %q, want none", ev.Reason)
			}
		case registry.EventPut:
			puts = append(puts, ev.Instance.ID)
		}
	}
	slices.Sort(dels)
	slices.Sort(puts)
	if !slices.Equal(dels, []string{"a", "d"}) || !slices.Equal(puts, []string{"b", "e"}) {
		t.Errorf("watch saw deletes %v and puts %v, want deletes [a d] and puts [b e] (c unchanged); events %v", dels, puts, evStrings(evs))
	}
	// An empty set removes everything the node owns, and only that.
	mustReplace(t, c, s, "host1")
	if l, _ := list(t, c, s); !slices.Equal(ids(l, "*"), []string{"h"}) {
		t.Errorf("after an empty ReplaceNode the registry holds %v, want [h]", ids(l, "*"))
	}
}

func testReplaceNodeInvalid(t *testing.T, c *config, s registry.Store) {
	ctx := ctxT(t, c)
	var fe *registry.FieldError
	if _, err := s.ReplaceNode(ctx, "", c.leaseTTL, nil); !errors.As(err, &fe) {
		t.Errorf("ReplaceNode with no node: err = %v, want a FieldError", err)
	}
	if _, err := s.ReplaceNode(ctx, "host1", 0, nil); !errors.As(err, &fe) {
		t.Errorf("ReplaceNode with TTL 0: err = %v, want a FieldError", err)
	}
	dup := []registry.Instance{inst("a", "calc", "", 1), inst("a", "calc", "", 2)}
	if _, err := s.ReplaceNode(ctx, "host1", c.leaseTTL, dup); !errors.As(err, &fe) {
		t.Errorf("ReplaceNode with a duplicate ID: err = %v, want a FieldError", err)
	}
	bad := []registry.Instance{inst("a", "calc", "", 1), inst("b", "calc", "", 2)}
	bad[1].Port = 0
	if _, err := s.ReplaceNode(ctx, "host1", c.leaseTTL, bad); !errors.As(err, &fe) {
		t.Errorf("ReplaceNode with an invalid instance: err = %v, want a FieldError", err)
	}
	if l, _ := list(t, c, s); len(l) != 0 {
		t.Errorf("refused ReplaceNodes stored %v", ids(l, "*"))
	}
	// A refused node set leaves no lease behind.
	if ls, err := s.Leases(ctx); err != nil || len(ls) != 0 {
		t.Errorf("Leases after refused ReplaceNodes = %v, %v; want none", ls, err)
	}
	if err := s.KeepAlive(ctx, "host1"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("KeepAlive after refused ReplaceNodes: err = %v, want ErrNoLease", err)
	}
	// The node field of the given instances is the node's, whatever it said.
	mustReplace(t, c, s, "host1", inst("a", "calc", "someone-else", 1))
	if l, _ := list(t, c, s); !slices.Equal(ids(l, "host1"), []string{"a"}) {
		t.Errorf("ReplaceNode did not give its instances to the node: %+v", l)
	}
}

func testReplaceNodeAtomic(t *testing.T, c *config, s registry.Store) {
	var setA, setB []registry.Instance
	for i := range 5 {
		setA = append(setA, inst(fmt.Sprintf("a%d", i), "calc", "", i))
		setB = append(setB, inst(fmt.Sprintf("b%d", i), "calc", "", 10+i))
	}
	wantA, wantB := ids(setA, "*"), ids(setB, "*")
	whole := func(got []string) bool {
		return len(got) == 0 || slices.Equal(got, wantA) || slices.Equal(got, wantB)
	}
	_, rev0 := list(t, c, s)
	w := watch(t, c, s, rev0)

	stop := make(chan struct{})
	var lists int
	var bad []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, _, err := s.List(context.Background())
			if err != nil {
				bad = append(bad, "List: "+err.Error())
				return
			}
			lists++
			if got := ids(l, "*"); !whole(got) {
				bad = append(bad, fmt.Sprint(got))
			}
		}
	}()
	var last int64
	for i := range 20 {
		set := setA
		if i%2 == 1 {
			set = setB
		}
		last = mustReplace(t, c, s, "host1", set...)
	}
	close(stop)
	<-done
	if len(bad) > 0 {
		t.Errorf("List saw a half-replaced set %d times of %d, first: %s", len(bad), lists, bad[0])
	}
	// Each watch response leaves the node with a whole set.
	w.waitReached(last)
	w.mu.Lock()
	resps := slices.Clone(w.resps)
	w.mu.Unlock()
	state := map[string]bool{}
	for i, evs := range resps {
		for _, ev := range evs {
			if ev.Type == registry.EventPut {
				state[ev.Instance.ID] = true
			} else {
				delete(state, ev.Instance.ID)
			}
		}
		var got []string
		for id := range state {
			got = append(got, id)
		}
		slices.Sort(got)
		if !whole(got) {
			t.Fatalf("after watch response %d the node holds %v, a half-replaced set (events %v)", i, got, evStrings(evs))
		}
	}
	if got := fmt.Sprint(mapKeys(state)); got != fmt.Sprint(wantB) {
		t.Errorf("the watch ends with %s, want %v", got, wantB)
	}
}

func mapKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func testLeases(t *testing.T, c *config, s registry.Store) {
	if err := s.KeepAlive(ctxT(t, c), "nobody"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("KeepAlive of an unknown node: err = %v, want ErrNoLease", err)
	}
	start := time.Now()
	mustReplace(t, c, s, "host1", inst("a", "calc", "", 1))
	mustReplace(t, c, s, "host2")
	ls, err := s.Leases(ctxT(t, c))
	if err != nil {
		t.Fatalf("Leases: %v", err)
	}
	var nodes []string
	for _, l := range ls {
		nodes = append(nodes, l.Node)
		if l.TTL < c.leaseTTL {
			t.Errorf("lease of %s has TTL %s, want at least %s", l.Node, l.TTL, c.leaseTTL)
		}
		// Expires is approximate: allow a second of slack either side.
		if l.Expires.Before(start.Add(-time.Second)) || l.Expires.After(time.Now().Add(l.TTL+time.Second)) {
			t.Errorf("lease of %s expires at %v, want within its TTL %s of now %v", l.Node, l.Expires, l.TTL, time.Now())
		}
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"host1", "host2"}) {
		t.Errorf("Leases lists %v, want [host1 host2]", nodes)
	}
	if err := s.KeepAlive(ctxT(t, c), "host1"); err != nil {
		t.Errorf("KeepAlive of a live lease: %v", err)
	}
}

func testKeepAliveHolds(t *testing.T, c *config, s registry.Store) {
	mustReplace(t, c, s, "host1", inst("a", "calc", "", 1))
	mustReplace(t, c, s, "host2", inst("b", "calc", "", 2))
	// Three TTLs of heartbeats keep host1 alive; host2, not renewed, goes.
	end := time.Now().Add(3 * c.leaseTTL)
	for time.Now().Before(end) {
		if err := s.KeepAlive(ctxT(t, c), "host1"); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
		time.Sleep(c.leaseTTL / 5)
	}
	l, _ := list(t, c, s)
	if !slices.Equal(ids(l, "host1"), []string{"a"}) {
		t.Errorf("host1's instance went away while its lease was kept alive: %v", ids(l, "*"))
	}
	waitUntil(t, c, "host2's instance to expire", func() bool {
		l, _ := list(t, c, s)
		return len(ids(l, "host2")) == 0
	})
	// ReplaceNode renews the lease too.
	end = time.Now().Add(3 * c.leaseTTL)
	for time.Now().Before(end) {
		mustReplace(t, c, s, "host1", inst("a", "calc", "", 1))
		time.Sleep(c.leaseTTL / 5)
	}
	if l, _ := list(t, c, s); !slices.Equal(ids(l, "host1"), []string{"a"}) {
		t.Errorf("host1's instance went away while ReplaceNode renewed its lease: %v", ids(l, "*"))
	}
}

func testLeaseExpiry(t *testing.T, c *config, s registry.Store) {
	mustPut(t, c, s, inst("h", "calc", "", 9))
	mustReplace(t, c, s, "host1", inst("a", "calc", "", 1), inst("b", "time", "", 2))
	mustPut(t, c, s, inst("c", "calc", "host1", 3))
	_, rev := list(t, c, s)
	w := watch(t, c, s, rev)
	waitUntil(t, c, "host1's instances to expire", func() bool {
		l, _ := list(t, c, s)
		return len(ids(l, "host1")) == 0
	})
	l, _ := list(t, c, s)
	if got := ids(l, "*"); !slices.Equal(got, []string{"h"}) {
		t.Errorf("after the lease expired the registry holds %v, want the hand-registered [h]", got)
	}
	evs := w.waitEvents(3)
	var dels []string
	for _, ev := range evs {
		if ev.Type != registry.EventDelete {
			t.Errorf("unexpected event %s", evString(ev))
			continue
		}
		dels = append(dels, ev.Instance.ID)
		if ev.Reason == "" {
			t.Errorf("delete by lease expiry %s has no Reason", evString(ev))
		}
		if ev.Instance.Node != "host1" || ev.Instance.Service == "" {
			t.Errorf("expiry delete does not carry the old instance: %+v", ev.Instance)
		}
	}
	slices.Sort(dels)
	if !slices.Equal(dels, []string{"a", "b", "c"}) {
		t.Errorf("watch saw deletes of %v, want [a b c]", dels)
	}
	if err := s.KeepAlive(ctxT(t, c), "host1"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("KeepAlive after expiry: err = %v, want ErrNoLease", err)
	}
	if _, err := s.Put(ctxT(t, c), inst("a", "calc", "host1", 1)); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("Put after expiry: err = %v, want ErrNoLease", err)
	}
	waitUntil(t, c, "Leases to drop host1", func() bool {
		ls, err := s.Leases(ctxT(t, c))
		return err == nil && len(ls) == 0
	})
	// A new ReplaceNode starts a new lease.
	mustReplace(t, c, s, "host1", inst("a", "calc", "", 1))
	if err := s.KeepAlive(ctxT(t, c), "host1"); err != nil {
		t.Errorf("KeepAlive after a new ReplaceNode: %v", err)
	}
	if l, _ := list(t, c, s); !slices.Equal(ids(l, "host1"), []string{"a"}) {
		t.Errorf("after a new ReplaceNode host1 owns %v, want [a]", ids(l, "host1"))
	}
}

func testReleaseNode(t *testing.T, c *config, s registry.Store) {
	mustPut(t, c, s, inst("h", "calc", "", 9))
	mustReplace(t, c, s, "host1", inst("a", "calc", "", 1), inst("b", "time", "", 2))
	mustReplace(t, c, s, "host2", inst("x", "calc", "", 3))
	_, rev := list(t, c, s)
	w := watch(t, c, s, rev)
	rr, err := s.ReleaseNode(ctxT(t, c), "host1")
	if err != nil {
		t.Fatalf("ReleaseNode: %v", err)
	}
	if rr <= rev {
		t.Errorf("ReleaseNode returned revision %d, not after %d", rr, rev)
	}
	l, lrev := list(t, c, s)
	if got := ids(l, "*"); !slices.Equal(got, []string{"h", "x"}) || lrev < rr {
		t.Errorf("after ReleaseNode List = %v at %d, want [h x] at >= %d", got, lrev, rr)
	}
	w.waitReached(rr)
	evs, _, _ := w.snapshot()
	var dels []string
	for _, ev := range evs {
		if ev.Type != registry.EventDelete || ev.Rev > rr {
			t.Errorf("unexpected event %s (ReleaseNode at %d)", evString(ev), rr)
			continue
		}
		dels = append(dels, ev.Instance.ID)
		if ev.Reason != "" {
			t.Errorf("delete by ReleaseNode %s has Reason %q; Reason is for deletes the store made by itself", evString(ev), ev.Reason)
		}
	}
	slices.Sort(dels)
	if !slices.Equal(dels, []string{"a", "b"}) {
		t.Errorf("watch saw deletes of %v, want [a b]", dels)
	}
	if err := s.KeepAlive(ctxT(t, c), "host1"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("KeepAlive after ReleaseNode: err = %v, want ErrNoLease", err)
	}
	if _, err := s.ReleaseNode(ctxT(t, c), "host1"); !errors.Is(err, registry.ErrNoLease) {
		t.Errorf("second ReleaseNode: err = %v, want ErrNoLease", err)
	}
	waitUntil(t, c, "Leases to list only host2", func() bool {
		ls, err := s.Leases(ctxT(t, c))
		return err == nil && len(ls) == 1 && ls[0].Node == "host2"
	})
	if err := s.KeepAlive(ctxT(t, c), "host2"); err != nil {
		t.Errorf("KeepAlive of the other node: %v", err)
	}
}

type write struct {
	typ registry.EventType
	id  string
	rev int64
}

func testWatchOrder(t *testing.T, c *config, s registry.Store) {
	_, rev0 := list(t, c, s)
	var want []string
	var last int64
	put := func(id string, n int) {
		last = mustPut(t, c, s, inst(id, "calc", "", n))
		want = append(want, evString(registry.Event{Type: registry.EventPut, Rev: last, Instance: registry.Instance{ID: id}}))
	}
	del := func(id string) {
		rev, err := s.Delete(ctxT(t, c), id)
		if err != nil {
			t.Fatalf("Delete %q: %v", id, err)
		}
		last = rev
		want = append(want, evString(registry.Event{Type: registry.EventDelete, Rev: rev, Instance: registry.Instance{ID: id}}))
	}
	// Half the writes happen before the watch starts (replayed from
	// history), half after (live).
	steps := func(base int) {
		for i := range 4 {
			put(fmt.Sprintf("w%d", base+i), base+i)
		}
		put(fmt.Sprintf("w%d", base), 100+base) // update
		del(fmt.Sprintf("w%d", base+1))
	}
	steps(0)
	w := watch(t, c, s, rev0)
	steps(10)
	put("marker", 99)
	w.waitEvents(len(want))
	w.waitReached(last)
	evs, _, _ := w.snapshot()
	got := evStrings(evs)
	if !slices.Equal(got, want) {
		t.Fatalf("watch from %d delivered\n  %v\nwant\n  %v", rev0, got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Rev < evs[i-1].Rev {
			t.Errorf("event %s after %s: revisions go back", evString(evs[i]), evString(evs[i-1]))
		}
	}
	// Watching from the middle delivers exactly the events after it.
	mid := evs[len(evs)/2].Rev
	w2 := watch(t, c, s, mid)
	w2.waitReached(last)
	var wantMid []string
	for _, ev := range evs {
		if ev.Rev > mid {
			wantMid = append(wantMid, evString(ev))
		}
	}
	got2, _, _ := w2.snapshot()
	if !slices.Equal(evStrings(got2), wantMid) {
		t.Errorf("watch from %d delivered %v, want %v", mid, evStrings(got2), wantMid)
	}
	for _, ev := range got2 {
		if ev.Type == registry.EventDelete && ev.Instance.Service != "calc" {
			t.Errorf("delete event does not carry the old instance: %+v", ev.Instance)
		}
	}
}

func testWatchConcurrent(t *testing.T, c *config, s registry.Store) {
	_, rev0 := list(t, c, s)
	w := watch(t, c, s, rev0)
	const writers, each = 8, 10
	var mu sync.Mutex
	var writes []write
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("g%d-%d", g, i)
				rev, err := s.Put(context.Background(), inst(id, "calc", "", g*each+i))
				if err != nil {
					errs <- fmt.Errorf("put %q: %w", id, err)
					return
				}
				mu.Lock()
				writes = append(writes, write{registry.EventPut, id, rev})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var maxRev int64
	revOf := map[string]int64{}
	for _, wr := range writes {
		maxRev = max(maxRev, wr.rev)
		revOf[wr.id] = wr.rev
	}
	w.waitReached(maxRev)
	evs, _, _ := w.snapshot()
	if len(evs) != writers*each {
		t.Errorf("watch delivered %d events for %d writes", len(evs), writers*each)
	}
	seen := map[string]int{}
	for i, ev := range evs {
		seen[ev.Instance.ID]++
		if ev.Type != registry.EventPut || ev.Rev != revOf[ev.Instance.ID] {
			t.Errorf("event %s: want a put at the revision its Put returned, %d", evString(ev), revOf[ev.Instance.ID])
		}
		if i > 0 && ev.Rev < evs[i-1].Rev {
			t.Errorf("event %s after %s: revisions go back", evString(ev), evString(evs[i-1]))
		}
	}
	for id := range revOf {
		if seen[id] != 1 {
			t.Errorf("watch delivered %q %d times, want once", id, seen[id])
		}
	}
}

func testIdenticalPut(t *testing.T, c *config, s registry.Store) {
	a := inst("a", "calc", "", 1)
	a.Tags = []string{"x"}
	r1 := mustPut(t, c, s, a)
	w := watch(t, c, s, r1)
	r2 := mustPut(t, c, s, a)
	// Only the check time moves: kept, but nothing for watchers.
	checked := a
	checked.Health.CheckedAt = time.Now().UTC().Truncate(time.Millisecond)
	r3 := mustPut(t, c, s, checked)
	w.waitReached(max(r2, r3))
	l, _ := list(t, c, s)
	if got, _ := find(l, "a"); !got.Health.CheckedAt.Equal(checked.Health.CheckedAt) {
		t.Errorf("a Put that moved only the check time was not kept: CheckedAt = %v, want %v", got.Health.CheckedAt, checked.Health.CheckedAt)
	}
	rm := mustPut(t, c, s, inst("marker", "calc", "", 2))
	w.waitEvents(1)
	w.waitReached(rm)
	evs, _, _ := w.snapshot()
	if len(evs) != 1 || evs[0].Instance.ID != "marker" {
		t.Errorf("after identical Puts the watch delivered %v, want only the marker's put", evStrings(evs))
	}
	// The same holds for a node's instances and ReplaceNode.
	mustReplace(t, c, s, "host1", inst("n1", "calc", "", 3))
	_, rev := list(t, c, s)
	w2 := watch(t, c, s, rev)
	r4 := mustReplace(t, c, s, "host1", inst("n1", "calc", "", 3))
	r5 := mustPut(t, c, s, inst("n1", "calc", "host1", 3))
	w2.waitReached(max(r4, r5))
	rm = mustPut(t, c, s, inst("marker", "calc", "", 4))
	w2.waitReached(rm)
	evs, _, _ = w2.snapshot()
	if len(evs) != 1 || evs[0].Instance.ID != "marker" {
		t.Errorf("after an identical ReplaceNode and Put the watch delivered %v, want only the marker's put", evStrings(evs))
	}
}

func testWatchCancel(t *testing.T, c *config, s registry.Store) {
	_, rev := list(t, c, s)
	w := watch(t, c, s, rev)
	mustPut(t, c, s, inst("a", "calc", "", 1))
	w.waitEvents(1)
	w.cancel()
	select {
	case <-w.closed:
	case <-time.After(c.timeout):
		t.Fatalf("watch channel still open %s after its context was canceled", c.timeout)
	}
}

func testWatchCompacted(t *testing.T, c *config, s registry.Store) {
	if c.compact == nil {
		t.Skip("the store's test gave no way to compact it (storetest.WithCompact)")
	}
	_, rev0 := list(t, c, s)
	for i := range 5 {
		mustPut(t, c, s, inst(fmt.Sprintf("a%d", i), "calc", "", i))
	}
	c.compact(t, s, rev0)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ch, err := s.Watch(ctx, rev0)
	if err == nil {
		// A store may report it on the channel instead, as the first
		// response, and then close the channel.
		resp, ok := <-ch
		if !ok {
			t.Fatal("watch from a compacted revision closed with no error")
		}
		if len(resp.Events) > 0 {
			t.Errorf("watch from a compacted revision delivered events %v", evStrings(resp.Events))
		}
		err = resp.Err
		for range ch {
		}
	}
	if !errors.Is(err, registry.ErrCompacted) {
		t.Fatalf("watch from compacted revision %d: err = %v, want ErrCompacted", rev0, err)
	}
	// A new List and a watch from its revision work again.
	_, rev := list(t, c, s)
	w := watch(t, c, s, rev)
	r := mustPut(t, c, s, inst("after", "calc", "", 50))
	w.waitReached(r)
	if evs, _, _ := w.snapshot(); len(evs) != 1 || evs[0].Instance.ID != "after" {
		t.Errorf("watch after re-listing delivered %v, want the put of after", evStrings(evs))
	}
}
