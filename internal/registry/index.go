package registry

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Index is the in-memory copy of a Store that answers every read. It lists
// the store once, then follows its watch; after a lost or compacted watch it
// lists again and applies only the difference, so no change is lost and no
// stale instance is kept.
type Index struct {
	log *slog.Logger

	mu      sync.RWMutex
	byID    map[string]*Instance
	bySvc   map[string]map[string]*Instance
	svcRev  map[string]int64 // revision of each service's last change; removed services' are tombstones
	forgot  int64            // the newest revision of a tombstone dropped (see MaxTombstones)
	rev     int64            // revision of the data in the maps
	visible int64            // revision whose change hooks have run (DNS shows it)
	synced  bool             // filled once, hooks run
	syncErr error
	pingErr error         // the store's own word that it is out of reach
	wake    chan struct{} // closed and replaced on every change
	retry   chan struct{} // Retry: end Run's backoff now

	expired atomic.Int64 // instances removed because their node's lease expired

	applyMu sync.Mutex // serializes apply and the change hooks
	hooks   []func(services []string)
}

// NewIndex returns an empty index. Call Run to fill it from a store.
func NewIndex(log *slog.Logger) *Index {
	if log == nil {
		log = slog.Default()
	}
	return &Index{
		log:    log,
		byID:   map[string]*Instance{},
		bySvc:  map[string]map[string]*Instance{},
		svcRev: map[string]int64{},
		wake:   make(chan struct{}),
		retry:  make(chan struct{}, 1),
	}
}

// OnChange registers fn to be called, in order and never concurrently, with
// the services that changed after each change is applied and before
// WaitRev returns for it. Register hooks before Run.
func (ix *Index) OnChange(fn func(services []string)) {
	ix.applyMu.Lock()
	ix.hooks = append(ix.hooks, fn)
	ix.applyMu.Unlock()
}

// Run fills the index from st and follows it until ctx is done.
func (ix *Index) Run(ctx context.Context, st Store) error {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := ix.follow(ctx, st)
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			return nil
		}
		ix.setErr(err)
		ix.log.Warn("registry watch lost; will list again", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		case <-ix.retry:
			backoff = 100 * time.Millisecond
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// follow lists, then watches until the watch fails.
func (ix *Index) follow(ctx context.Context, st Store) error {
	list, rev, err := st.List(ctx)
	if err != nil {
		return fmt.Errorf("list registry: %w", err)
	}
	ix.replaceAll(list, rev)
	ix.setErr(nil)
	ch, err := st.Watch(ctx, rev)
	if err != nil {
		return fmt.Errorf("watch registry from revision %d: %w", rev, err)
	}
	for resp := range ch {
		if resp.Err != nil {
			return fmt.Errorf("watch registry after revision %d: %w", rev, resp.Err)
		}
		ix.Apply(resp.Events)
		if n := len(resp.Events); n > 0 {
			rev = resp.Events[n-1].Rev
		}
		if resp.Rev > rev {
			rev = resp.Rev
			ix.advance(resp.Rev)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watch registry after revision %d: closed by the store", rev)
}

func (ix *Index) setErr(err error) {
	ix.mu.Lock()
	ix.syncErr = err
	ix.mu.Unlock()
}

// Status reports whether the index has been filled once and the last error
// in following the store or reaching it (nil while it is current).
func (ix *Index) Status() (synced bool, rev int64, err error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	err = ix.syncErr
	if err == nil {
		err = ix.pingErr
	}
	return ix.synced, ix.rev, err
}

// FollowErr is the last error in following the store (listing or
// watching it), nil while the index follows it: unlike Status, it says
// nothing of the store's pings.
func (ix *Index) FollowErr() error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.syncErr
}

// Retry ends Run's wait before it lists the store again, if it is
// waiting: the store was seen answering again, and the index should be
// current at once rather than after a backoff of up to 5 s.
func (ix *Index) Retry() {
	select {
	case ix.retry <- struct{}{}:
	default:
	}
}

// SetStoreErr records whether the store answered its last ping (nil: it
// did). While it is set, Status reports the index as possibly stale.
func (ix *Index) SetStoreErr(err error) {
	ix.mu.Lock()
	ix.pingErr = err
	ix.mu.Unlock()
}

// replaceAll makes list the whole content of the index at rev, applying the
// difference as events so hooks and watchers see only what changed.
func (ix *Index) replaceAll(list []Instance, rev int64) {
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	seen := make(map[string]bool, len(list))
	var evs []Event
	ix.mu.RLock()
	for i := range list {
		in := list[i]
		seen[in.ID] = true
		if old, ok := ix.byID[in.ID]; ok && SameRegistration(old, &in) {
			continue
		}
		evs = append(evs, Event{Type: EventPut, Rev: rev, Instance: in})
	}
	for id, old := range ix.byID {
		if !seen[id] {
			evs = append(evs, Event{Type: EventDelete, Rev: rev, Instance: *old})
		}
	}
	ix.mu.RUnlock()
	ix.applyLocked(evs, rev, true)
}

// Apply applies events from the store's watch. Exported for stores and
// tests that feed an index directly.
func (ix *Index) Apply(evs []Event) {
	if len(evs) == 0 {
		return
	}
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	ix.applyLocked(evs, evs[len(evs)-1].Rev, false)
}

// advance moves the index to rev, a revision the watch reached without a
// change the index holds, and wakes whoever waits for it.
func (ix *Index) advance(rev int64) {
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if rev <= ix.rev {
		return
	}
	ix.rev = rev
	ix.visible = rev // nothing for hooks to do
	close(ix.wake)
	ix.wake = make(chan struct{})
}

func (ix *Index) applyLocked(evs []Event, rev int64, full bool) {
	changed := map[string]bool{}
	ix.mu.Lock()
	for i := range evs {
		ev := &evs[i]
		in := ev.Instance
		if old, ok := ix.byID[in.ID]; ok {
			delete(ix.bySvc[old.Service], old.ID)
			if len(ix.bySvc[old.Service]) == 0 {
				delete(ix.bySvc, old.Service)
			}
			changed[old.Service] = true
			delete(ix.byID, in.ID)
		}
		if ev.Type == EventPut {
			p := &in
			ix.byID[in.ID] = p
			m := ix.bySvc[in.Service]
			if m == nil {
				m = map[string]*Instance{}
				ix.bySvc[in.Service] = m
			}
			m[in.ID] = p
			changed[in.Service] = true
		}
		if ev.Type == EventDelete && ev.Reason == ReasonLeaseExpired {
			ix.expired.Add(1)
		}
		if ev.Type == EventDelete && ev.Reason != "" {
			ix.log.Info("instance removed", "id", in.ID, "service", in.Service, "address", netip.AddrPortFrom(in.Address, in.Port).String(),
				"node", in.Node, "container", in.Container, "reason", ev.Reason)
		}
	}
	if rev > ix.rev || full {
		ix.rev = rev
	}
	for s := range changed {
		ix.svcRev[s] = ix.rev
	}
	ix.compactTombstones()
	ix.mu.Unlock()

	if len(changed) > 0 {
		services := make([]string, 0, len(changed))
		for s := range changed {
			services = append(services, s)
		}
		sort.Strings(services)
		for _, h := range ix.hooks {
			h(services)
		}
	}
	// Only now, with the hooks run, is the change visible to WaitRev and
	// WaitSynced: a write is acknowledged once DNS answers with it, and a
	// server answers nothing before its zone is built.
	ix.mu.Lock()
	ix.visible = ix.rev
	ix.synced = true
	close(ix.wake)
	ix.wake = make(chan struct{})
	ix.mu.Unlock()
}

// Rev returns the revision the index is at.
func (ix *Index) Rev() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.rev
}

// WaitRev blocks until the index has applied rev (and its hooks have run),
// or ctx is done.
func (ix *Index) WaitRev(ctx context.Context, rev int64) error {
	for {
		ix.mu.RLock()
		cur, wake := ix.visible, ix.wake
		ix.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for registry revision %d (at %d): %w", rev, cur, ctx.Err())
		case <-wake:
		}
	}
}

// WaitService blocks until service changed after rev, or ctx is done, and
// returns the service's current change revision. A blocking query.
func (ix *Index) WaitService(ctx context.Context, service string, rev int64) int64 {
	return ix.waitPast(ctx, rev, func() int64 {
		r, ok := ix.svcRev[service]
		if !ok && rev < ix.forgot {
			// Removed after rev perhaps, and forgotten since: answer now,
			// with what is there (nothing).
			return ix.forgot
		}
		return r
	})
}

// WaitAny blocks until the index moves past rev, or ctx is done, and returns
// the current revision.
func (ix *Index) WaitAny(ctx context.Context, rev int64) int64 {
	return ix.waitPast(ctx, rev, func() int64 { return ix.rev })
}

// waitPast waits until cur (read under the lock) exceeds rev.
func (ix *Index) waitPast(ctx context.Context, rev int64, cur func() int64) int64 {
	for {
		ix.mu.RLock()
		c, wake := cur(), ix.wake
		ix.mu.RUnlock()
		if c > rev {
			return c
		}
		select {
		case <-ctx.Done():
			return c
		case <-wake:
		}
	}
}

// Instances returns copies of a service's instances, sorted by ID, and the
// revision of the service's last change (for a service removed and
// forgotten since, the revision of the newest forgotten removal: a
// blocking query from it waits for the service's next change).
func (ix *Index) Instances(service string) ([]Instance, int64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	m := ix.bySvc[service]
	out := make([]Instance, 0, len(m))
	for _, in := range m {
		out = append(out, in.Clone())
	}
	SortInstances(out)
	rev, ok := ix.svcRev[service]
	if !ok {
		rev = ix.forgot
	}
	return out, rev
}

// Get returns one instance.
func (ix *Index) Get(id string) (Instance, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	in, ok := ix.byID[id]
	if !ok {
		return Instance{}, false
	}
	return in.Clone(), true
}

// All returns copies of every instance, sorted, and the index revision.
func (ix *Index) All() ([]Instance, int64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]Instance, 0, len(ix.byID))
	for _, in := range ix.byID {
		out = append(out, in.Clone())
	}
	SortInstances(out)
	return out, ix.rev
}

// Node returns copies of the instances node owns, sorted (an empty, not
// nil, list when it owns none), and the index revision.
func (ix *Index) Node(node string) ([]Instance, int64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := []Instance{}
	for _, in := range ix.byID {
		if in.Node == node {
			out = append(out, in.Clone())
		}
	}
	SortInstances(out)
	return out, ix.rev
}

// ServiceSummary counts a service's instances.
type ServiceSummary struct {
	Name      string   `json:"name"`
	Instances int      `json:"instances"`
	Passing   int      `json:"passing"`
	Protocols []string `json:"protocols"`
}

// Services summarizes every service, sorted by name.
func (ix *Index) Services() []ServiceSummary {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]ServiceSummary, 0, len(ix.bySvc))
	for name, m := range ix.bySvc {
		s := ServiceSummary{Name: name, Instances: len(m)}
		protos := map[string]bool{}
		for _, in := range m {
			if in.Serving() {
				s.Passing++
			}
			protos[in.Protocol] = true
		}
		for p := range protos {
			s.Protocols = append(s.Protocols, p)
		}
		sort.Strings(s.Protocols)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ServiceNames returns the names of every service, sorted.
func (ix *Index) ServiceNames() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.bySvc))
	for name := range ix.bySvc {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Len returns the number of instances.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// Expired counts the instances removed because their node's lease expired.
func (ix *Index) Expired() int64 { return ix.expired.Load() }

// MaxTombstones is how many removed services the index remembers (their
// last change revision, so that a watcher learns they are gone). Beyond
// it the oldest half is forgotten at once.
const MaxTombstones = 1024

// compactTombstones forgets the oldest tombstones when there are more than
// MaxTombstones. Called with mu held.
func (ix *Index) compactTombstones() {
	if len(ix.svcRev)-len(ix.bySvc) <= MaxTombstones {
		return
	}
	type tomb struct {
		name string
		rev  int64
	}
	tombs := make([]tomb, 0, len(ix.svcRev)-len(ix.bySvc))
	for s, r := range ix.svcRev {
		if _, live := ix.bySvc[s]; !live {
			tombs = append(tombs, tomb{s, r})
		}
	}
	sort.Slice(tombs, func(i, j int) bool { return tombs[i].rev < tombs[j].rev })
	for _, t := range tombs[:len(tombs)-MaxTombstones/2] {
		delete(ix.svcRev, t.name)
		ix.forgot = max(ix.forgot, t.rev)
	}
}

// ChangedSince returns the services changed after rev (including removed
// ones), sorted, and the index revision. For rev 0 (a new watcher) it
// returns the services that exist now, not the removed ones. For a rev
// older than the tombstones the index still holds (see MaxTombstones), a
// watcher may have missed removals that nothing here records any more:
// reset is then true and services are the services that exist now, the
// whole current state, so that the watcher drops every service it knew
// that is not among them.
func (ix *Index) ChangedSince(rev int64) (services []string, cur int64, reset bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []string
	if rev <= 0 || rev < ix.forgot {
		out = make([]string, 0, len(ix.bySvc))
		for s := range ix.bySvc {
			out = append(out, s)
		}
		reset = rev > 0
	} else {
		for s, r := range ix.svcRev {
			if r > rev {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out, ix.rev, reset
}

// Forgotten returns the newest revision of a removed service that the
// index no longer remembers: a watcher at an older revision may have
// missed a removal, and is told to reset by ChangedSince.
func (ix *Index) Forgotten() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.forgot
}

// WaitSynced blocks until the index has been filled from the store once,
// or ctx is done.
func (ix *Index) WaitSynced(ctx context.Context) error {
	for {
		ix.mu.RLock()
		synced, wake, err := ix.synced, ix.wake, ix.syncErr
		ix.mu.RUnlock()
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("registry not loaded: %w", err)
			}
			return fmt.Errorf("registry not loaded: %w", ctx.Err())
		case <-wake:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
