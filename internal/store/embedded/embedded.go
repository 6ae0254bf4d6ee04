// Package embedded is signpost's default store: a bbolt file in the data
// directory. Writes are group-committed, so every acknowledged write is on
// disk (fsync) and concurrent writers share one commit. Node leases are kept
// in memory with their TTLs on disk; after a restart every lease starts a
// fresh TTL, as etcd's do after a leader change.
package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/signpost-dns/signpost/internal/registry"
)

var (
	bucketInstances = []byte("instances")
	bucketByNode    = []byte("bynode") // node \x00 id -> nil
	bucketNodes     = []byte("nodes")  // node -> nodeRecord
	bucketMeta      = []byte("meta")
	keyRev          = []byte("rev")
)

// FileName is the name of the database file inside the data directory.
const FileName = "signpost.db"

// Options tune a Store. The zero value is usable.
type Options struct {
	Log *slog.Logger
	// History is how many events are kept for watchers that fall behind.
	History int
	// ExpiryInterval is how often leases are checked (default 100ms).
	ExpiryInterval time.Duration
	// MaxBatch caps how many writes share one commit (default 512).
	MaxBatch int
	// CommitInterval is the least time between two commits (default
	// 5ms). Writes that arrive meanwhile share the next commit and its
	// fsync, which is most of a write's cost: a steady stream of writes
	// costs a fraction of the CPU, for at most this much more latency.
	CommitInterval time.Duration
}

// Store is the embedded bbolt store. It implements registry.Store.
type Store struct {
	db   *bolt.DB
	log  *slog.Logger
	opts Options
	path string
	file os.FileInfo // the file the store has open, to tell when path is another

	ops     chan *op
	closing chan struct{}
	done    chan struct{}
	closeMu sync.Once

	mu         sync.Mutex
	rev        int64
	history    []registry.Event // ring of recent events, oldest first
	compactRev int64            // watches from before this revision must re-list
	wake       chan struct{}
	leases     map[string]*lease
}

type lease struct {
	ttl      time.Duration
	deadline time.Time
}

type nodeRecord struct {
	TTL time.Duration `json:"ttl"`
}

// op is one write, run inside a shared transaction by the writer goroutine.
type op struct {
	// fn does the write in tx; it must check everything before writing, so
	// that an error leaves tx untouched. next assigns revisions.
	fn func(tx *bolt.Tx, next func() int64) ([]registry.Event, error)
	// after runs once the transaction committed.
	after func()
	// undo, when fn set it, reverts what fn changed outside the
	// transaction (a lease renewed in memory) if the commit fails.
	undo func()
	rev  int64
	err  error
	done chan struct{}
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.History <= 0 {
		opts.History = 10000
	}
	if opts.ExpiryInterval <= 0 {
		opts.ExpiryInterval = 100 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 5 * time.Millisecond
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	if err := verify(path); err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %q: locked by another process (is another signpost server using this data dir?): %w", path, err)
		}
		return nil, &DamagedError{Path: path, Err: err}
	}
	db, err := openBolt(path)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %q: locked by another process (is another signpost server using this data dir?): %w", path, err)
		}
		return nil, &DamagedError{Path: path, Err: err}
	}
	file, err := os.Stat(path) // the file just opened, locked by us
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	s := &Store{
		db:      db,
		path:    path,
		file:    file,
		log:     opts.Log,
		opts:    opts,
		ops:     make(chan *op, 1024),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		wake:    make(chan struct{}),
		leases:  map[string]*lease{},
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, &DamagedError{Path: path, Err: err}
	}
	go s.writer()
	go s.expirer()
	return s, nil
}

// openBolt opens the database read-write. A panic of bbolt on a file that
// changed since verify read it becomes an error.
func openBolt(path string) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(&err)
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
}

func (s *Store) load() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(&err)
	now := time.Now()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketByNode, bucketNodes, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyRev); len(v) == 8 {
			s.rev = int64(binary.BigEndian.Uint64(v))
		}
		s.compactRev = s.rev
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			var rec nodeRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode lease of node %q: %w", k, err)
			}
			s.leases[string(k)] = &lease{ttl: rec.TTL, deadline: now.Add(rec.TTL)}
			return nil
		})
	})
}

// Close stops the store; pending writes fail with registry.ErrUnavailable.
func (s *Store) Close() error {
	var err error
	s.closeMu.Do(func() {
		close(s.closing)
		<-s.done
		err = s.db.Close()
	})
	return err
}

func (s *Store) submit(ctx context.Context, o *op) (int64, error) {
	o.done = make(chan struct{})
	closed := fmt.Errorf("embedded store closed: %w", registry.ErrUnavailable)
	select {
	case <-s.closing:
		return 0, closed
	default:
	}
	select {
	case s.ops <- o:
	case <-s.closing:
		return 0, closed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once submitted the write goes through whatever ctx does, so the
	// caller learns its fate. If the writer stopped without taking it (a
	// Close raced with the send), it was not written: the writer closes
	// an op's done before its own.
	select {
	case <-o.done:
	case <-s.done:
		select {
		case <-o.done:
		default:
			return 0, closed
		}
	}
	return o.rev, o.err
}

func (s *Store) writer() {
	defer close(s.done)
	// A fault reading the file (cut short while the server runs) fails
	// the commit instead of the process.
	debug.SetPanicOnFault(true)
	var last time.Time
	for {
		var batch []*op
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.closing:
			s.failPending()
			return
		}
		// Right after a commit, let more writes gather for the next one.
		if wait := s.opts.CommitInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
		gather:
			for len(batch) < s.opts.MaxBatch {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
				case <-t.C:
					break gather
				case <-s.closing:
					break gather
				}
			}
			t.Stop()
		}
	drain:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		s.commit(batch)
		last = time.Now()
	}
}

func (s *Store) failPending() {
	for {
		select {
		case o := <-s.ops:
			o.err = fmt.Errorf("embedded store closed: %w", registry.ErrUnavailable)
			close(o.done)
		default:
			return
		}
	}
}

// commit writes batch in one transaction. If that transaction fails, no
// write of the batch is kept, and each is committed again alone: one
// write that breaks a commit fails by itself, never its neighbours.
func (s *Store) commit(batch []*op) {
	if err := s.Ping(context.Background()); err != nil {
		// What would be written now would go to a file nobody will open
		// again: refuse it.
		s.log.Error("store file replaced or removed while the server runs; refusing writes until it is restarted", "path", s.path)
		for _, o := range batch {
			o.err = fmt.Errorf("commit to the embedded store: %w", err)
			close(o.done)
		}
		return
	}
	events, rev, err := s.tryCommit(batch)
	if err != nil && len(batch) > 1 {
		s.log.Warn("group commit failed; committing its writes one by one", "writes", len(batch), "err", err)
		for _, o := range batch {
			s.commit([]*op{o})
		}
		return
	}
	if err != nil {
		o := batch[0]
		s.log.Error("store commit failed", "err", err)
		o.err = fmt.Errorf("commit to the embedded store: %w", err)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// Said without the path (clients see it); the log has it.
			o.err = fmt.Errorf("commit to the embedded store: the server's data dir is out of space (see its log): %w", registry.ErrUnavailable)
		}
		close(o.done)
		return
	}
	for _, o := range batch {
		if o.err == nil && o.after != nil {
			o.after()
		}
	}
	s.publish(events, rev)
	for _, o := range batch {
		close(o.done)
	}
}

// tryCommit runs batch in one transaction and returns its events and the
// revision it reached. When the transaction fails it undoes what the ops
// changed in memory and returns the error.
func (s *Store) tryCommit(batch []*op) (_ []registry.Event, _ int64, err error) {
	defer func() {
		if err != nil {
			for i := len(batch) - 1; i >= 0; i-- {
				if u := batch[i].undo; u != nil {
					u()
				}
			}
		}
	}()
	// Runs first: bbolt rolls the transaction back as a panic passes, and
	// the undo above sees the error.
	defer guard(&err)
	s.mu.Lock()
	rev := s.rev
	s.mu.Unlock()
	next := func() int64 { rev++; return rev }
	var events []registry.Event
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			o.err, o.rev, o.undo = nil, 0, nil
			before := rev
			evs, err := o.fn(tx, next)
			if err != nil {
				if !isPrecondition(err) {
					// The op may have written part of its change: abort
					// the whole commit rather than keep half of it.
					return err
				}
				o.err = err
				rev = before
				continue
			}
			o.rev = rev
			events = append(events, evs...)
		}
		if rev == 0 {
			return nil
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(rev))
		return tx.Bucket(bucketMeta).Put(keyRev, b[:])
	})
	if err != nil {
		return nil, 0, err
	}
	return events, rev, nil
}

// guard turns a panic of bbolt on a damaged file (or a fault reading past
// the end of a file cut short, with debug.SetPanicOnFault) into *err.
// Deferred directly by the function whose error it sets.
func guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("store file unreadable: %v", r)
	}
}

// isPrecondition reports whether err is one that ops return after checking,
// before writing anything; any other error aborts the commit.
func isPrecondition(err error) bool {
	var fe *registry.FieldError
	return errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrNoLease) ||
		errors.Is(err, registry.ErrConflict) || errors.As(err, &fe)
}

func (s *Store) publish(events []registry.Event, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = rev
	if len(events) == 0 {
		return
	}
	s.history = append(s.history, events...)
	// Trim in chunks so that a full history is not copied on every write.
	if over := len(s.history) - s.opts.History; over > s.opts.History/2 {
		s.compactRev = s.history[over-1].Rev
		s.history = append([]registry.Event(nil), s.history[over:]...)
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

// List implements registry.Store.
func (s *Store) List(ctx context.Context) (_ []registry.Instance, _ int64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(&err)
	var out []registry.Instance
	var rev int64
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRev); len(v) == 8 {
			rev = int64(binary.BigEndian.Uint64(v))
		}
		b := tx.Bucket(bucketInstances)
		out = make([]registry.Instance, 0, b.Stats().KeyN)
		return b.ForEach(func(k, v []byte) error {
			var in registry.Instance
			if err := json.Unmarshal(v, &in); err != nil {
				return fmt.Errorf("decode instance %q: %w", k, err)
			}
			out = append(out, in)
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list the embedded store: %w", err)
	}
	return out, rev, nil
}

// Watch implements registry.Store.
func (s *Store) Watch(ctx context.Context, rev int64) (<-chan registry.WatchResponse, error) {
	s.mu.Lock()
	if rev < s.compactRev {
		cr := s.compactRev
		s.mu.Unlock()
		return nil, fmt.Errorf("watch from revision %d, history starts after %d: %w", rev, cr, registry.ErrCompacted)
	}
	s.mu.Unlock()
	ch := make(chan registry.WatchResponse, 16)
	go func() {
		defer close(ch)
		last := rev
		for {
			s.mu.Lock()
			if last < s.compactRev {
				cr := s.compactRev
				s.mu.Unlock()
				select {
				case ch <- registry.WatchResponse{Err: fmt.Errorf("watcher at revision %d fell behind history (starts after %d): %w", last, cr, registry.ErrCompacted)}:
				case <-ctx.Done():
				}
				return
			}
			// History is sorted by revision: find the first event after last.
			i := sort.Search(len(s.history), func(i int) bool { return s.history[i].Rev > last })
			evs := append([]registry.Event(nil), s.history[i:]...)
			wake := s.wake
			s.mu.Unlock()
			if len(evs) > 0 {
				select {
				case ch <- registry.WatchResponse{Events: evs}:
					last = evs[len(evs)-1].Rev
				case <-ctx.Done():
					return
				}
				continue
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			case <-s.closing:
				select {
				case ch <- registry.WatchResponse{Err: fmt.Errorf("embedded store closed: %w", registry.ErrUnavailable)}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return ch, nil
}

func getInstance(tx *bolt.Tx, id string) (*registry.Instance, error) {
	v := tx.Bucket(bucketInstances).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var in registry.Instance
	if err := json.Unmarshal(v, &in); err != nil {
		return nil, fmt.Errorf("decode instance %q: %w", id, err)
	}
	return &in, nil
}

func byNodeKey(node, id string) []byte {
	k := make([]byte, 0, len(node)+1+len(id))
	k = append(k, node...)
	k = append(k, 0)
	return append(k, id...)
}

func putInstance(tx *bolt.Tx, in *registry.Instance, old *registry.Instance) error {
	v, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode instance %q: %w", in.ID, err)
	}
	if err := tx.Bucket(bucketInstances).Put([]byte(in.ID), v); err != nil {
		return fmt.Errorf("write instance %q: %w", in.ID, err)
	}
	if old != nil && old.Node != "" && old.Node != in.Node {
		if err := tx.Bucket(bucketByNode).Delete(byNodeKey(old.Node, old.ID)); err != nil {
			return err
		}
	}
	if in.Node != "" {
		return tx.Bucket(bucketByNode).Put(byNodeKey(in.Node, in.ID), nil)
	}
	return nil
}

func deleteInstance(tx *bolt.Tx, in *registry.Instance) error {
	if err := tx.Bucket(bucketInstances).Delete([]byte(in.ID)); err != nil {
		return fmt.Errorf("delete instance %q: %w", in.ID, err)
	}
	if in.Node != "" {
		return tx.Bucket(bucketByNode).Delete(byNodeKey(in.Node, in.ID))
	}
	return nil
}

// nodeIDs lists the IDs a node owns.
func nodeIDs(tx *bolt.Tx, node string) []string {
	prefix := append([]byte(node), 0)
	var ids []string
	c := tx.Bucket(bucketByNode).Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids
}

// deleteNodeInstances deletes the instances node owns, except those in
// keep, and returns their delete events, marked with reason.
func deleteNodeInstances(tx *bolt.Tx, next func() int64, node string, keep map[string]registry.Instance, reason string) ([]registry.Event, error) {
	var evs []registry.Event
	for _, id := range nodeIDs(tx, node) {
		if _, ok := keep[id]; ok {
			continue
		}
		old, err := getInstance(tx, id)
		if err != nil {
			return nil, err
		}
		if old == nil {
			continue
		}
		if err := deleteInstance(tx, old); err != nil {
			return nil, err
		}
		evs = append(evs, registry.Event{Type: registry.EventDelete, Rev: next(), Instance: *old, Reason: reason})
	}
	return evs, nil
}

// leaseLive reports whether node holds a lease, as seen by tx and by the
// in-memory deadlines. A lease granted earlier in the same commit is live.
func (s *Store) leaseLive(tx *bolt.Tx, node string) bool {
	if tx.Bucket(bucketNodes).Get([]byte(node)) == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[node]
	return !ok || time.Now().Before(l.deadline)
}

// Put implements registry.Store.
func (s *Store) Put(ctx context.Context, inst registry.Instance) (int64, error) {
	in, err := registry.Prepare(inst)
	if err != nil {
		return 0, err
	}
	if err := fits(in.Node, &in); err != nil {
		return 0, err
	}
	return s.submit(ctx, &op{fn: func(tx *bolt.Tx, next func() int64) ([]registry.Event, error) {
		old, err := getInstance(tx, in.ID)
		if err != nil {
			return nil, err
		}
		if old != nil && old.Node != in.Node {
			return nil, fmt.Errorf("put instance %q for node %q: owned by node %q: %w", in.ID, in.Node, old.Node, registry.ErrConflict)
		}
		if in.Node != "" && !s.leaseLive(tx, in.Node) {
			return nil, fmt.Errorf("put instance %q for node %q: %w", in.ID, in.Node, registry.ErrNoLease)
		}
		return s.putLocked(tx, next, in, old)
	}})
}

func (s *Store) putLocked(tx *bolt.Tx, next func() int64, in registry.Instance, old *registry.Instance) ([]registry.Event, error) {
	if old != nil {
		if registry.Unchanged(old, &in) {
			return nil, nil
		}
		in.RegisteredAt = old.RegisteredAt
	}
	if in.RegisteredAt.IsZero() {
		in.RegisteredAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	if err := putInstance(tx, &in, old); err != nil {
		return nil, err
	}
	if old != nil && registry.SameRegistration(old, &in) {
		// Only the check time moved: durable, but nothing to tell watchers.
		return nil, nil
	}
	return []registry.Event{{Type: registry.EventPut, Rev: next(), Instance: in}}, nil
}

// Delete implements registry.Store.
func (s *Store) Delete(ctx context.Context, id string) (int64, error) {
	return s.submit(ctx, &op{fn: func(tx *bolt.Tx, next func() int64) ([]registry.Event, error) {
		old, err := getInstance(tx, id)
		if err != nil {
			return nil, err
		}
		if old == nil {
			return nil, fmt.Errorf("delete instance %q: %w", id, registry.ErrNotFound)
		}
		if err := deleteInstance(tx, old); err != nil {
			return nil, err
		}
		return []registry.Event{{Type: registry.EventDelete, Rev: next(), Instance: *old}}, nil
	}})
}

// ReplaceNode implements registry.Store.
func (s *Store) ReplaceNode(ctx context.Context, node string, ttl time.Duration, insts []registry.Instance) (int64, error) {
	want, err := registry.PrepareNodeSet(node, ttl, insts)
	if err != nil {
		return 0, err
	}
	if err := fits(node, nil); err != nil {
		return 0, err
	}
	for _, in := range want {
		if err := fits(node, &in); err != nil {
			return 0, err
		}
	}
	rec, err := json.Marshal(nodeRecord{TTL: ttl})
	if err != nil {
		return 0, fmt.Errorf("encode lease of node %q: %w", node, err)
	}
	o := &op{}
	o.fn = func(tx *bolt.Tx, next func() int64) ([]registry.Event, error) {
		olds := map[string]*registry.Instance{}
		for id := range want {
			old, err := getInstance(tx, id)
			if err != nil {
				return nil, err
			}
			if old != nil && old.Node != node {
				return nil, fmt.Errorf("replace node %q: instance %q is owned by node %q: %w", node, id, old.Node, registry.ErrConflict)
			}
			olds[id] = old
		}
		if err := tx.Bucket(bucketNodes).Put([]byte(node), rec); err != nil {
			return nil, fmt.Errorf("write lease of node %q: %w", node, err)
		}
		// Renew the lease now, not only after the commit: an expiry of
		// the old lease later in the same commit must see it live and
		// leave the new set alone. If the commit fails, the lease is as
		// it was: a failed node set leaves no lease behind.
		mine := &lease{ttl: ttl, deadline: time.Now().Add(ttl)}
		s.mu.Lock()
		prev, had := s.leases[node]
		s.leases[node] = mine
		s.mu.Unlock()
		o.undo = func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.leases[node] != mine {
				return
			}
			if had {
				s.leases[node] = prev
			} else {
				delete(s.leases, node)
			}
		}
		evs, err := deleteNodeInstances(tx, next, node, want, "")
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(want))
		for id := range want {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			e, err := s.putLocked(tx, next, want[id], olds[id])
			if err != nil {
				return nil, err
			}
			evs = append(evs, e...)
		}
		return evs, nil
	}
	o.after = func() {
		s.mu.Lock()
		s.leases[node] = &lease{ttl: ttl, deadline: time.Now().Add(ttl)}
		s.mu.Unlock()
	}
	return s.submit(ctx, o)
}

// fits checks, before a write joins a group commit, that the keys and the
// value it makes fit bbolt's limits (bolt.MaxKeySize, bolt.MaxValueSize),
// so that it cannot fail the commit it shares. in is nil to check only the
// node's own key.
func fits(node string, in *registry.Instance) error {
	tooLong := func(field, value string, n int) error {
		shown := value
		if len(shown) > 40 {
			shown = shown[:40] + "..."
		}
		return &registry.FieldError{Field: field, Value: shown, Reason: fmt.Sprintf("%d bytes: the embedded store keeps at most %d", n, bolt.MaxKeySize)}
	}
	if len(node) > bolt.MaxKeySize {
		return tooLong("node", node, len(node))
	}
	if in == nil {
		return nil
	}
	if len(in.ID) > bolt.MaxKeySize {
		return tooLong("id", in.ID, len(in.ID))
	}
	if n := len(byNodeKey(node, in.ID)); node != "" && n > bolt.MaxKeySize {
		return tooLong("node", node, n)
	}
	v, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode instance %q: %w", in.ID, err)
	}
	// Room for the registration time that the write adds.
	if len(v)+64 > bolt.MaxValueSize {
		return &registry.FieldError{Field: "instance", Value: in.ID, Reason: fmt.Sprintf("%d bytes encoded: the embedded store keeps at most %d", len(v), bolt.MaxValueSize)}
	}
	return nil
}

// KeepAlive implements registry.Store.
func (s *Store) KeepAlive(ctx context.Context, node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[node]
	if !ok || !time.Now().Before(l.deadline) {
		return fmt.Errorf("keep alive node %q: %w", node, registry.ErrNoLease)
	}
	l.deadline = time.Now().Add(l.ttl)
	return nil
}

// ReleaseNode implements registry.Store.
func (s *Store) ReleaseNode(ctx context.Context, node string) (int64, error) {
	return s.dropNode(ctx, node, "", false)
}

// dropNode deletes a node's lease and instances. With onlyExpired it does
// nothing unless the lease is still expired when the write runs, so that a
// heartbeat that arrived meanwhile wins.
func (s *Store) dropNode(ctx context.Context, node, reason string, onlyExpired bool) (int64, error) {
	removed := -1
	rev, err := s.submit(ctx, &op{
		fn: func(tx *bolt.Tx, next func() int64) ([]registry.Event, error) {
			if onlyExpired {
				s.mu.Lock()
				l, ok := s.leases[node]
				live := ok && time.Now().Before(l.deadline)
				s.mu.Unlock()
				if live {
					removed = -1
					return nil, nil
				}
			}
			if tx.Bucket(bucketNodes).Get([]byte(node)) == nil {
				if onlyExpired {
					// A lease renewed in a commit that then failed: only
					// memory knew it; forget it.
					s.mu.Lock()
					if l, ok := s.leases[node]; ok && !time.Now().Before(l.deadline) {
						delete(s.leases, node)
					}
					s.mu.Unlock()
				}
				return nil, fmt.Errorf("release node %q: %w", node, registry.ErrNoLease)
			}
			if err := tx.Bucket(bucketNodes).Delete([]byte(node)); err != nil {
				return nil, fmt.Errorf("delete lease of node %q: %w", node, err)
			}
			evs, err := deleteNodeInstances(tx, next, node, nil, reason)
			if err != nil {
				return nil, err
			}
			removed = len(evs)
			return evs, nil
		},
		after: func() {
			s.mu.Lock()
			if l, ok := s.leases[node]; !onlyExpired || (ok && !time.Now().Before(l.deadline)) {
				delete(s.leases, node)
			}
			s.mu.Unlock()
		},
	})
	if err == nil && reason != "" && removed >= 0 {
		s.log.Info("node lease expired; its instances were removed", "node", node, "removed", removed)
	}
	return rev, err
}

func (s *Store) expirer() {
	t := time.NewTicker(s.opts.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		now := time.Now()
		var expired []string
		s.mu.Lock()
		for node, l := range s.leases {
			if !now.Before(l.deadline) {
				expired = append(expired, node)
			}
		}
		s.mu.Unlock()
		sort.Strings(expired)
		for _, node := range expired {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := s.dropNode(ctx, node, registry.ReasonLeaseExpired, true)
			cancel()
			if err != nil && !errors.Is(err, registry.ErrNoLease) && !errors.Is(err, registry.ErrUnavailable) {
				s.log.Error("expire node lease", "node", node, "err", err)
			}
		}
	}
}

// Leases implements registry.Store.
func (s *Store) Leases(ctx context.Context) ([]registry.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]registry.Lease, 0, len(s.leases))
	for node, l := range s.leases {
		out = append(out, registry.Lease{Node: node, TTL: l.ttl, Expires: l.deadline})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// Ping reports whether the store's file is still the one in its data dir:
// a file replaced (a backup restored, a copy moved over it) or removed
// while the server runs would silently take every write since, and lose
// it at the next start. The server then says it is degraded, and writes
// are refused until it is restarted on the file now there. The error does
// not show the path (clients see it); the log does.
func (s *Store) Ping(ctx context.Context) error {
	fi, err := os.Stat(s.path)
	if err == nil && os.SameFile(fi, s.file) {
		return nil
	}
	return fmt.Errorf("the data dir's %s was replaced or removed while the server runs; restart the server to use the file there now: %w", FileName, registry.ErrUnavailable)
}

var _ registry.Store = (*Store)(nil)
var _ registry.Pinger = (*Store)(nil)
