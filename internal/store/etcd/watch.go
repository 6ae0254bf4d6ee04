package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Watch implements registry.Store with an etcd watch of the prefix from
// rev+1. It returns once etcd has accepted the watch; a compacted rev is
// reported as registry.ErrCompacted, by Watch or by the first response. The
// watch requires a leader: a member cut off from its cluster ends the watch
// with an error instead of going silent.
func (s *Store) Watch(ctx context.Context, rev int64) (<-chan registry.WatchResponse, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithPrevKV(), clientv3.WithCreatedNotify(), clientv3.WithProgressNotify())
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	var first *clientv3.WatchResponse
	select {
	case resp, ok := <-wch:
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
			first = &resp
		}
	case <-timer.C:
		cancel()
		return nil, fmt.Errorf("watch %s from revision %d: etcd did not answer within %s: %w", s.prefix, rev, s.timeout, registry.ErrUnavailable)
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	out := make(chan registry.WatchResponse, 16)
	go func() {
		defer cancel()
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
		if first != nil && !handle(*first) {
			return
		}
		for resp := range wch {
			if !handle(resp) {
				return
			}
		}
		if ctx.Err() == nil {
			send(registry.WatchResponse{Err: fmt.Errorf("watch %s after revision %d: closed by the etcd client: %w", s.prefix, rev, registry.ErrUnavailable)})
		}
	}()
	return out, nil
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
