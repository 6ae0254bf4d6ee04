package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Watch implements registry.Store with an etcd watch of the prefix from
// rev+1. It returns once etcd has accepted the watch; a compacted rev is
// reported as registry.ErrCompacted, by Watch or by the first response. The
// watch requires a leader: a member cut off from its cluster ends the watch
// with an error instead of going silent. A member that hangs with its
// connection open (a halted process, a machine that stopped) sends no such
// error, nor anything else: when the watch has been silent for a while it
// asks the member for its progress, and when that goes unanswered it
// watches again from the last revision delivered, on a new stream, which
// the client sends to another member.
func (s *Store) Watch(ctx context.Context, rev int64) (<-chan registry.WatchResponse, error) {
	w, err := s.openWatch(ctx, rev)
	if err != nil {
		return nil, err
	}
	pending, err := s.pendingAt(ctx, rev)
	if err != nil {
		w.cancel()
		return nil, err
	}
	out := make(chan registry.WatchResponse, 16)
	go s.follow(ctx, w, rev, pending, out)
	return out, nil
}

// watchStream is one etcd watch stream of the prefix.
type watchStream struct {
	ctx    context.Context // carries the stream's own metadata, for RequestProgress
	cancel context.CancelFunc
	ch     clientv3.WatchChan
	first  *clientv3.WatchResponse // a response that came before Created, if any
}

// watchSilence is how long a watch may be silent before the member is
// asked for its progress (again and again while silent); watchStuck is how
// long it may stay silent after the first ask before it is given up as
// hung. A member that answers does so in milliseconds; etcd ignores a
// progress request while the watch is catching up, which is why it is
// asked more than once.
func (s *Store) watchSilence() time.Duration { return max(s.timeout/10, 50*time.Millisecond) }
func (s *Store) watchStuck() time.Duration   { return max(s.timeout/4, 200*time.Millisecond) }

// WatchHeard is when a watch of the store last heard from etcd: an event,
// a progress notice, or the watch opening; zero before any watch.
func (s *Store) WatchHeard() time.Time {
	if n := s.heard.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// WatchTolerance is how long a working watch may go unheard: it asks for
// its progress after watchSilence, and gives its member up after
// watchStuck more.
func (s *Store) WatchTolerance() time.Duration { return s.watchSilence() + s.watchStuck() }

// Barrier writes the prefix's barrier key (one for every server, no
// lease) and returns the revision of the write: once the watch has
// delivered it, it has delivered every change before it, in order. A
// follower that must know it has caught up with etcd waits for it (see
// the server's staleness probe).
func (s *Store) Barrier(ctx context.Context) (int64, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	r, err := s.cli.Put(cctx, s.prefix+"barrier", "")
	if err != nil {
		return 0, s.fail(ctx, err, "write etcd's barrier key "+s.prefix+"barrier")
	}
	return r.Header.Revision, nil
}

// openWatch opens a watch from rev+1 and waits for etcd to accept it, each
// try on a new stream (its own metadata keeps the client from joining an
// existing, perhaps hung, one) and cut at watchStuck, within the budget.
func (s *Store) openWatch(ctx context.Context, rev int64) (*watchStream, error) {
	deadline := time.Now().Add(s.timeout)
	var last error
	for try := 1; ; try++ {
		md := metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "signpost-watch", strconv.FormatInt(s.streams.Add(1), 10))
		wctx, cancel := context.WithCancel(md)
		w := &watchStream{ctx: wctx, cancel: cancel}
		w.ch = s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1),
			clientv3.WithPrevKV(), clientv3.WithCreatedNotify(), clientv3.WithProgressNotify())
		timer := time.NewTimer(min(s.watchStuck(), time.Until(deadline)))
		select {
		case resp, ok := <-w.ch:
			timer.Stop()
			if !ok {
				cancel()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("watch %s from revision %d: closed by the etcd client: %w", s.prefix, rev, registry.ErrUnavailable)
			}
			if err := resp.Err(); err != nil {
				cancel()
				return nil, s.watchErr(ctx, rev, resp, err)
			}
			if !resp.Created {
				w.first = &resp
			}
			return w, nil
		case <-timer.C:
			cancel()
			last = fmt.Errorf("watch %s from revision %d: etcd did not accept the watch within %s (%d attempts): %w", s.prefix, rev, s.timeout, try, registry.ErrUnavailable)
			if time.Now().After(deadline) {
				return nil, last
			}
		case <-ctx.Done():
			timer.Stop()
			cancel()
			return nil, ctx.Err()
		}
	}
}

// follow sends the responses of w, and of the streams that replace it when
// it goes silent, to out until ctx is done or the watch fails.
func (s *Store) follow(ctx context.Context, w *watchStream, rev int64, pending map[string]*held, out chan<- registry.WatchResponse) {
	defer func() { w.cancel() }()
	defer close(out)
	send := func(r registry.WatchResponse) bool {
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	handle := func(resp clientv3.WatchResponse) bool {
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				send(registry.WatchResponse{Err: s.watchErr(ctx, rev, resp, err)})
			}
			return false
		}
		if resp.IsProgressNotify() {
			// Heard, but its revision is not passed on: etcd's requested
			// progress notices were not ordered with the watch's events
			// until the fix of etcd#15220, and the fleet test saw Debian's
			// 3.4.23 send one ahead of events not yet delivered, which moved
			// the index (and the writes waiting on it) past changes it had
			// not applied. A follower that must reach a revision asks for
			// a Barrier instead.
			return true
		}
		evs, reached, err := s.translate(ctx, pending, resp.Events)
		if err != nil {
			if ctx.Err() == nil {
				send(registry.WatchResponse{Err: err})
			}
			return false
		}
		if len(evs) == 0 && reached == 0 {
			return true
		}
		if reached > rev {
			rev = reached
		}
		return send(registry.WatchResponse{Events: evs, Rev: reached})
	}
	if w.first != nil && !handle(*w.first) {
		return
	}
	tick := time.NewTicker(s.watchSilence() / 2)
	defer tick.Stop()
	heard := time.Now()
	s.heard.Store(heard.UnixNano())
	var asked time.Time // the first progress request of this silence
	for {
		select {
		case resp, ok := <-w.ch:
			if !ok {
				if ctx.Err() == nil {
					send(registry.WatchResponse{Err: fmt.Errorf("watch %s after revision %d: closed by the etcd client: %w", s.prefix, rev, registry.ErrUnavailable)})
				}
				return
			}
			heard, asked = time.Now(), time.Time{}
			s.heard.Store(heard.UnixNano())
			if !handle(resp) {
				return
			}
		case <-tick.C:
			silent := time.Since(heard)
			if silent < s.watchSilence() {
				continue
			}
			if asked.IsZero() {
				asked = time.Now()
			}
			if time.Since(asked) < s.watchStuck() {
				rctx, cancel := context.WithTimeout(w.ctx, s.watchSilence())
				_ = s.cli.RequestProgress(rctx) // unanswered is what is measured
				cancel()
				continue
			}
			s.log.Warn("etcd watch silent, its member does not answer; watching again through another", "prefix", s.prefix, "after_revision", rev, "silent", silent.Round(time.Millisecond))
			w.cancel()
			next, err := s.openWatch(ctx, rev)
			if err != nil {
				if ctx.Err() == nil {
					send(registry.WatchResponse{Err: fmt.Errorf("watch %s after revision %d: its etcd member stopped answering: %w", s.prefix, rev, err)})
				}
				return
			}
			w, heard, asked = next, time.Now(), time.Time{}
			s.heard.Store(heard.UnixNano())
			if w.first != nil && !handle(*w.first) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func (s *Store) watchErr(ctx context.Context, rev int64, resp clientv3.WatchResponse, err error) error {
	if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("watch %s after revision %d: etcd history starts at %d: %w", s.prefix, rev, resp.CompactRevision, registry.ErrCompacted)
	}
	return s.fail(ctx, err, fmt.Sprintf("watch %s after revision %d", s.prefix, rev))
}

// held is a node whose set is being written in several transactions, as
// a watch follows it: its changes are held back until the commit.
type held struct {
	base int64 // the revision readers see the node at until then
	// seen says that the watch saw the set begin, so that evs holds every
	// change of the node since base; otherwise the watch began meanwhile
	// and the commit is read from etcd.
	seen  bool
	evs   map[string]*heldEvent
	order []string
}

type heldEvent struct {
	ev      registry.Event
	existed bool // the instance existed before its first held change
}

func (h *held) add(ev registry.Event, existed bool) {
	if h.evs == nil {
		h.evs = map[string]*heldEvent{}
	}
	id := ev.Instance.ID
	if e, ok := h.evs[id]; ok {
		e.ev = ev
		return
	}
	h.evs[id] = &heldEvent{ev: ev, existed: existed}
	h.order = append(h.order, id)
}

// pendingAt returns the nodes whose set was being written at rev, as held
// nodes the watch did not see begin.
func (s *Store) pendingAt(ctx context.Context, rev int64) (map[string]*held, error) {
	out := map[string]*held{}
	if rev <= 0 {
		return out, nil
	}
	err := s.reads(ctx, "read node records under "+s.nodePrefix, func(cctx context.Context) error {
		_, err := s.rangeAt(cctx, s.nodePrefix, rev, func(kv *mvccpb.KeyValue) error {
			rec, err := decodeNode(kv)
			if err == nil && rec.Pending != nil {
				out[strings.TrimPrefix(string(kv.Key), s.nodePrefix)] = &held{base: rec.Pending.Base}
			}
			return nil
		})
		return err
	})
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, fmt.Errorf("watch %s from revision %d: %w", s.prefix, rev, registry.ErrCompacted)
	}
	return out, err
}

// release returns the held changes of node h, committed at rev, as events
// of rev: the last change of each instance, without instances that came
// and went unseen. For a set the watch did not see begin, it reads the
// node before (at its base) and at rev. reason is that of the deletes
// when the node's record went at rev.
func (s *Store) release(ctx context.Context, node string, h *held, rev int64, reason string) ([]registry.Event, error) {
	var out []registry.Event
	if h.seen {
		for _, id := range h.order {
			e := h.evs[id]
			if e == nil || (!e.existed && e.ev.Type == registry.EventDelete) {
				continue
			}
			e.ev.Rev = rev
			out = append(out, e.ev)
		}
		return out, nil
	}
	var before, now map[string]registry.Instance
	taken := map[string]bool{} // IDs another node holds at rev
	err := s.reads(ctx, fmt.Sprintf("read node %q at revisions %d and %d", node, h.base, rev), func(cctx context.Context) error {
		var err error
		if before, err = s.nodeAt(cctx, node, h.base); err != nil {
			return err
		}
		now = map[string]registry.Instance{}
		_, err = s.rangeAt(cctx, s.instPrefix, rev, func(kv *mvccpb.KeyValue) error {
			in, err := decodeInstance(kv)
			if err != nil {
				return err
			}
			if in.Node == node {
				now[in.ID] = *in
			} else {
				taken[in.ID] = true
			}
			return nil
		})
		return err
	})
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, fmt.Errorf("watch %s: node %q's set committed at revision %d, its state before is compacted: %w", s.prefix, node, rev, registry.ErrCompacted)
	}
	if err != nil {
		return nil, err
	}
	for _, id := range slices.Sorted(maps.Keys(before)) {
		if _, ok := now[id]; !ok && !taken[id] {
			out = append(out, registry.Event{Type: registry.EventDelete, Rev: rev, Instance: before[id], Reason: reason})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(now)) {
		in := now[id]
		if old, ok := before[id]; ok && registry.SameRegistration(&old, &in) {
			continue
		}
		out = append(out, registry.Event{Type: registry.EventPut, Rev: rev, Instance: in})
	}
	return out, nil
}

// translate turns etcd events into registry events. It drops events that
// are not instances (node records) and puts that change nothing a watcher
// sees (only the check time or the lease moved), holds back the changes of
// nodes whose set is being written (pending) and releases them at its
// commit, and returns the highest revision among all of them, which the
// watch has now delivered.
func (s *Store) translate(ctx context.Context, pending map[string]*held, evs []*clientv3.Event) ([]registry.Event, int64, error) {
	var reached int64
	var gone map[int64]map[string]bool // revision -> nodes whose record expired
	for _, e := range evs {
		reached = max(reached, e.Kv.ModRevision)
		if e.Type == mvccpb.DELETE {
			if node, ok := strings.CutPrefix(string(e.Kv.Key), s.nodePrefix); ok {
				if e.PrevKv != nil {
					if rec, err := decodeNode(e.PrevKv); err == nil && rec.Released {
						continue // ReleaseNode, not an expiry
					}
				}
				if gone == nil {
					gone = map[int64]map[string]bool{}
				}
				if gone[e.Kv.ModRevision] == nil {
					gone[e.Kv.ModRevision] = map[string]bool{}
				}
				gone[e.Kv.ModRevision][node] = true
			}
		}
	}
	var out []registry.Event
	for _, e := range evs {
		if node, ok := strings.CutPrefix(string(e.Kv.Key), s.nodePrefix); ok {
			h := pending[node]
			if e.Type == mvccpb.PUT {
				rec, err := decodeNode(e.Kv)
				if err != nil {
					s.log.Warn("undecodable node record in etcd watch", "key", string(e.Kv.Key), "rev", e.Kv.ModRevision, "err", err)
				}
				if err == nil && rec.Pending != nil {
					if h == nil {
						pending[node] = &held{base: rec.Pending.Base, seen: true}
					}
					continue
				}
			}
			if h == nil {
				continue
			}
			reason := ""
			if e.Type == mvccpb.DELETE && gone[e.Kv.ModRevision][node] {
				reason = registry.ReasonLeaseExpired
			}
			rel, err := s.release(ctx, node, h, e.Kv.ModRevision, reason)
			if err != nil {
				return nil, 0, err
			}
			delete(pending, node)
			out = append(out, rel...)
			continue
		}
		id, ok := strings.CutPrefix(string(e.Kv.Key), s.instPrefix)
		if !ok {
			continue
		}
		var ev registry.Event
		var prev *registry.Instance
		if e.PrevKv != nil {
			if o, err := decodeInstance(e.PrevKv); err == nil {
				prev = o
			}
		}
		switch e.Type {
		case mvccpb.PUT:
			in, err := decodeInstance(e.Kv)
			if err != nil {
				s.log.Warn("skip undecodable instance in etcd watch", "key", string(e.Kv.Key), "rev", e.Kv.ModRevision, "err", err)
				continue
			}
			if prev != nil && registry.SameRegistration(prev, in) {
				continue
			}
			ev = registry.Event{Type: registry.EventPut, Rev: e.Kv.ModRevision, Instance: *in}
		case mvccpb.DELETE:
			old := &registry.Instance{ID: id}
			if prev != nil {
				old = prev
			}
			ev = registry.Event{Type: registry.EventDelete, Rev: e.Kv.ModRevision, Instance: *old}
			if old.Node != "" && gone[e.Kv.ModRevision][old.Node] {
				ev.Reason = registry.ReasonLeaseExpired
			}
		default:
			continue
		}
		// This change supersedes any held one of another node.
		for n, h := range pending {
			if n != ev.Instance.Node && h.evs[id] != nil {
				h.evs[id] = nil
			}
		}
		if h := pending[ev.Instance.Node]; h != nil {
			h.add(ev, e.Type == mvccpb.DELETE || e.PrevKv != nil)
			continue
		}
		out = append(out, ev)
	}
	return out, reached, nil
}
