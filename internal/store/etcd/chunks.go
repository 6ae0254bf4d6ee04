package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Sizes of the store's requests, within etcd's defaults: a transaction
// carries at most 128 operations and 128 compares (--max-txn-ops) and a
// request at most 1.5 MiB (--max-request-bytes).
const (
	// txnOps is the most instance operations one write transaction
	// carries, leaving room for the node's own key.
	txnOps = 120
	// txnBytes bounds the keys and values one write transaction carries.
	txnBytes = 1 << 20
	// readOps is the most keys one read transaction asks for.
	readOps = 120
	// pageKeys is the most keys one range read returns; an instance is at
	// most the API's instance body (16 KiB by default), so a page stays
	// within a few MiB.
	pageKeys = 256
)

// pendingMark is set on a node's record while a node set too large for
// one transaction is written in several: readers keep showing the node as
// it was at Base until the record is written without it.
type pendingMark struct {
	// Base is a revision at which the node was as readers must see it
	// until the set is committed.
	Base int64 `json:"base"`
	// PrevLease is the node's lease before the set, when the set moves
	// the node to a new one: its keys are the node's too until then.
	PrevLease clientv3.LeaseID `json:"prev_lease,omitempty"`
}

// rangeAt calls fn with every key under prefix at revision rev (0: the
// current one), a page of pageKeys at a time, all at one revision, and
// returns that revision.
func (s *Store) rangeAt(ctx context.Context, prefix string, rev int64, fn func(*mvccpb.KeyValue) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	// A member without a leader refuses at once rather than holding the
	// read for the attempt's whole time; the retry goes to another.
	ctx = clientv3.WithRequireLeader(ctx)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageKeys)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		// Each page within a third of the budget: a member that takes the
		// read and does not answer (one rejoining after a partition, its
		// read index waiting on a leader it is catching up with) is left
		// for the next attempt, which the client sends to another. The
		// fleet test saw a list held 2 s so by Debian's 3.4.
		rctx, cancel := s.request(ctx)
		r, err := s.cli.Get(rctx, key, opts...)
		cancel()
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = r.Header.Revision
		}
		for _, kv := range r.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !r.More || len(r.Kvs) == 0 {
			return rev, nil
		}
		key = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// getAt reads keys at revision rev, readOps at a time, and returns them by
// key (absent keys are missing).
func (s *Store) getAt(ctx context.Context, keys []string, rev int64) (map[string]*mvccpb.KeyValue, error) {
	out := make(map[string]*mvccpb.KeyValue, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), readOps)
		ops := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			ops[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
		}
		rctx, cancel := s.request(ctx)
		r, err := s.cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, err
		}
		for i := range ops {
			if kv := firstKV(r, i); kv != nil {
				out[string(kv.Key)] = kv
			}
		}
		keys = keys[n:]
	}
	return out, nil
}

// nodeAt returns the instances that node owned at revision rev, by ID.
func (s *Store) nodeAt(ctx context.Context, node string, rev int64) (map[string]registry.Instance, error) {
	out := map[string]registry.Instance{}
	_, err := s.rangeAt(ctx, s.instPrefix, rev, func(kv *mvccpb.KeyValue) error {
		in, err := decodeInstance(kv)
		if err != nil {
			return err
		}
		if in.Node == node {
			out[in.ID] = *in
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// write is one instance operation of a node set and the compare that
// guards it, if any.
type write struct {
	op   clientv3.Op
	cmp  *clientv3.Cmp
	size int
}

// chunk splits writes into transactions of at most txnOps operations and
// txnBytes bytes each.
func chunk(writes []write) [][]write {
	var out [][]write
	var cur []write
	size := 0
	for _, w := range writes {
		if len(cur) > 0 && (len(cur) >= txnOps || size+w.size > txnBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, w)
		size += w.size
	}
	return append(out, cur)
}

// commitChunk writes one transaction of a node set: its writes, guarded
// by the node key's mod revision (nodeRev; 0: absent) and their own
// compares, then the node's record when rec is not empty.
func (s *Store) commitChunk(ctx context.Context, nkey string, nodeRev int64, ws []write, rec string, lease clientv3.LeaseID) (*clientv3.TxnResponse, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeRev)}
	ops := make([]clientv3.Op, 0, len(ws)+1)
	for _, w := range ws {
		if w.cmp != nil {
			cmps = append(cmps, *w.cmp)
		}
		ops = append(ops, w.op)
	}
	if rec != "" {
		// The record last: a watcher sees the node's instance changes of
		// this revision before the record that commits them.
		ops = append(ops, clientv3.OpPut(nkey, rec, clientv3.WithLease(lease)))
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	tr, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, errLeaseGone
		}
		return nil, err
	}
	if !tr.Succeeded {
		return nil, errContended
	}
	return tr, nil
}

// errLeaseGone: the lease a write used ran out meanwhile.
var errLeaseGone = fmt.Errorf("lease gone: %w", errContended)
