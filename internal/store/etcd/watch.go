package etcdstore

import (
	"context"
	"errors"
	"fmt"
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
	out := make(chan registry.WatchResponse, 16)
	go s.follow(ctx, w, rev, out)
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
func (s *Store) follow(ctx context.Context, w *watchStream, rev int64, out chan<- registry.WatchResponse) {
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
			return send(registry.WatchResponse{Rev: resp.Header.Revision})
		}
		evs, reached := s.translate(resp.Events)
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

// translate turns etcd events into registry events. It drops events that
// are not instances (node records) and puts that change nothing a watcher
// sees (only the check time or the lease moved), and returns the highest
// revision among all of them, which the watch has now delivered.
func (s *Store) translate(evs []*clientv3.Event) ([]registry.Event, int64) {
	var reached int64
	var gone map[int64]map[string]bool // revision -> nodes whose record was deleted
	for _, e := range evs {
		reached = max(reached, e.Kv.ModRevision)
		if e.Type == mvccpb.DELETE {
			if node, ok := strings.CutPrefix(string(e.Kv.Key), s.nodePrefix); ok {
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
		id, ok := strings.CutPrefix(string(e.Kv.Key), s.instPrefix)
		if !ok {
			continue
		}
		switch e.Type {
		case mvccpb.PUT:
			in, err := decodeInstance(e.Kv)
			if err != nil {
				s.log.Warn("skip undecodable instance in etcd watch", "key", string(e.Kv.Key), "rev", e.Kv.ModRevision, "err", err)
				continue
			}
			if e.PrevKv != nil {
				if old, err := decodeInstance(e.PrevKv); err == nil && registry.SameRegistration(old, in) {
					continue
				}
			}
			out = append(out, registry.Event{Type: registry.EventPut, Rev: e.Kv.ModRevision, Instance: *in})
		case mvccpb.DELETE:
			old := &registry.Instance{ID: id}
			if e.PrevKv != nil {
				if o, err := decodeInstance(e.PrevKv); err == nil {
					old = o
				}
			}
			ev := registry.Event{Type: registry.EventDelete, Rev: e.Kv.ModRevision, Instance: *old}
			if old.Node != "" && gone[e.Kv.ModRevision][old.Node] {
				ev.Reason = registry.ReasonLeaseExpired
			}
			out = append(out, ev)
		}
	}
	return out, reached
}
