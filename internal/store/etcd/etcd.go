// Package etcdstore keeps the registry in etcd, so that several signpost
// servers share one registry that survives losing a machine.
//
// Layout under the prefix (default "/signpost/"):
//
//	instances/<id>  the instance as JSON; a node's instances are attached
//	                to the node's etcd lease and vanish with it
//	nodes/<node>    {"lease": <etcd lease ID>, "ttl": <ns>}, attached to
//	                that lease itself
//
// Revisions are etcd's. Every write of a node's instances also rewrites its
// nodes/ key, so that ReplaceNode notices a concurrent write by comparing
// one revision. Deletes that etcd made because a lease expired carry the
// Reason registry.ReasonLeaseExpired: the node's key vanished in the same
// revision.
package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/signpost-dns/signpost/internal/registry"
)

// DefaultPrefix is the key prefix the registry lives under by default.
const DefaultPrefix = "/signpost/"

// maxAttempts bounds the optimistic retries of one write under contention.
const maxAttempts = 20

// Options configure a Store. Plain data; the zero value of each field
// means its default.
type Options struct {
	// Endpoints are the etcd client URLs, such as "http://10.0.0.1:2379".
	Endpoints []string
	// Prefix is the key prefix of the registry (default "/signpost/").
	Prefix string
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration
	// Timeout is the budget of each store call (default 5s): within it a
	// call that etcd refuses for now (a leader election, a member down)
	// is tried again, each attempt bounded to a third of it; past it the
	// call fails with an error that wraps registry.ErrUnavailable and
	// says what happened.
	Timeout time.Duration
	// Log receives the store's logs (default slog.Default()).
	Log *slog.Logger
}

// Store is the etcd store. It implements registry.Store.
type Store struct {
	cli        *clientv3.Client
	ownClient  bool
	prefix     string
	instPrefix string
	nodePrefix string
	timeout    time.Duration
	log        *slog.Logger
	streams    atomic.Int64 // watch streams opened, to give each its own metadata
	// heard is when a watch last heard from etcd (Unix nanoseconds).
	heard   atomic.Int64
	members *memberCheck // set on a client of its own with several endpoints
	// closed is canceled by Close: calls in flight end at once, and
	// calls after it fail at once, saying so.
	closed     context.Context
	closeCalls context.CancelFunc
	// chunkHook, set by tests only, runs after each transaction of a node
	// set written in several (0: the pending mark).
	chunkHook func(ctx context.Context, i int)
}

type nodeRecord struct {
	Lease clientv3.LeaseID `json:"lease"`
	TTL   time.Duration    `json:"ttl"`
	// Pending is set while a node set is written in several transactions.
	Pending *pendingMark `json:"pending,omitempty"`
	// Released is set just before ReleaseNode revokes the lease, so that
	// watchers do not take the deletes for an expiry.
	Released bool `json:"released,omitempty"`
}

// Open connects to the etcd cluster at opts.Endpoints. It does not wait for
// etcd to answer: calls fail with registry.ErrUnavailable until it does.
func Open(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, fmt.Errorf("open etcd store: no endpoints")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		Logger:      zap.NewNop(),
		// Notice a dead member and move to another (gRPC pings no more
		// often than every 10 s whatever is asked; a member that hangs is
		// left out sooner by the member check, see members.go).
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// Back fast: reconnect within reconnectMaxDelay of etcd
		// answering again (gRPC's default backoff grows to 120 s).
		DialOptions: reconnectOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd store at %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	s := New(cli, opts)
	s.ownClient = true
	s.startMemberCheck(opts.Endpoints)
	return s, nil
}

// New returns a store that uses cli; Close leaves cli open.
func New(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	closed, closeCalls := context.WithCancel(context.Background())
	return &Store{
		closed:     closed,
		closeCalls: closeCalls,
		cli:        cli,
		prefix:     opts.Prefix,
		instPrefix: opts.Prefix + "instances/",
		nodePrefix: opts.Prefix + "nodes/",
		timeout:    opts.Timeout,
		log:        opts.Log,
	}
}

// Close closes the etcd client if Open made it.
func (s *Store) Close() error {
	if !s.ownClient {
		return nil
	}
	s.closeCalls()
	s.members.close()
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}

func (s *Store) instKey(id string) string   { return s.instPrefix + id }
func (s *Store) nodeKey(node string) string { return s.nodePrefix + node }

// call bounds one operation by the store's timeout.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func decodeInstance(kv *mvccpb.KeyValue) (*registry.Instance, error) {
	var in registry.Instance
	if err := json.Unmarshal(kv.Value, &in); err != nil {
		return nil, fmt.Errorf("decode instance at %q: %w", kv.Key, err)
	}
	return &in, nil
}

func decodeNode(kv *mvccpb.KeyValue) (nodeRecord, error) {
	var rec nodeRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return rec, fmt.Errorf("decode node lease at %q: %w", kv.Key, err)
	}
	return rec, nil
}

func firstKV(r *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	kvs := r.Responses[i].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}

func modRev(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.ModRevision
}

func stamp(in *registry.Instance, old *registry.Instance) {
	if old != nil {
		in.RegisteredAt = old.RegisteredAt
	}
	if in.RegisteredAt.IsZero() {
		in.RegisteredAt = time.Now().UTC().Truncate(time.Millisecond)
	}
}

// List implements registry.Store. It reads every instance and node record
// at one revision, a page at a time; a node whose set is being written in
// several transactions (see ReplaceNode) is shown as it was before.
func (s *Store) List(ctx context.Context) ([]registry.Instance, int64, error) {
	var out []registry.Instance
	var rev int64
	err := s.reads(ctx, "list "+s.instPrefix, func(cctx context.Context) error {
		byID := map[string]registry.Instance{}
		r, err := s.rangeAt(cctx, s.instPrefix, 0, func(kv *mvccpb.KeyValue) error {
			in, err := decodeInstance(kv)
			if err != nil {
				return err
			}
			byID[in.ID] = *in
			return nil
		})
		if err != nil {
			return err
		}
		pending := map[string]int64{} // node -> the revision to show it at
		_, err = s.rangeAt(cctx, s.nodePrefix, r, func(kv *mvccpb.KeyValue) error {
			rec, err := decodeNode(kv)
			if err != nil {
				return err
			}
			if rec.Pending != nil {
				pending[strings.TrimPrefix(string(kv.Key), s.nodePrefix)] = rec.Pending.Base
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.showBefore(cctx, byID, pending); err != nil {
			return err
		}
		out = make([]registry.Instance, 0, len(byID))
		for _, in := range byID {
			out = append(out, in)
		}
		slices.SortFunc(out, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) })
		rev = r
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// showBefore replaces, in byID, the instances of each pending node by
// those it had at its base revision (an instance that another node has
// taken since stays the other node's).
func (s *Store) showBefore(ctx context.Context, byID map[string]registry.Instance, pending map[string]int64) error {
	if len(pending) == 0 {
		return nil
	}
	for id, in := range byID {
		if _, ok := pending[in.Node]; ok {
			delete(byID, id)
		}
	}
	bases := map[int64]bool{}
	for _, b := range pending {
		bases[b] = true
	}
	for base := range bases {
		_, err := s.rangeAt(ctx, s.instPrefix, base, func(kv *mvccpb.KeyValue) error {
			in, err := decodeInstance(kv)
			if err != nil {
				return err
			}
			if b, ok := pending[in.Node]; ok && b == base {
				if _, taken := byID[in.ID]; !taken {
					byID[in.ID] = *in
				}
			}
			return nil
		})
		if errors.Is(err, rpctypes.ErrCompacted) {
			return fmt.Errorf("a node set is being written and the registry before it (revision %d) is compacted; it is shown once the set is committed or replaced: %w", base, registry.ErrUnavailable)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Put implements registry.Store.
func (s *Store) Put(ctx context.Context, inst registry.Instance) (int64, error) {
	in, err := registry.Prepare(inst)
	if err != nil {
		return 0, err
	}
	what := fmt.Sprintf("put instance %q", in.ID)
	if in.Node != "" {
		what += fmt.Sprintf(" for node %q", in.Node)
	}
	key, nkey := s.instKey(in.ID), s.nodeKey(in.Node)
	var rev int64
	err = s.attempts(ctx, what, func(cctx context.Context) error {
		in := in
		reads := []clientv3.Op{clientv3.OpGet(key)}
		if in.Node != "" {
			reads = append(reads, clientv3.OpGet(nkey))
		}
		snap, err := s.cli.Txn(cctx).Then(reads...).Commit()
		if err != nil {
			return err
		}
		oldKV := firstKV(snap, 0)
		var old *registry.Instance
		if oldKV != nil {
			if old, err = decodeInstance(oldKV); err != nil {
				return err
			}
			if old.Node != in.Node {
				return fmt.Errorf("owned by node %q: %w", old.Node, registry.ErrConflict)
			}
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev(oldKV))}
		var opts []clientv3.OpOption
		var nodeOps []clientv3.Op
		if in.Node != "" {
			nodeKV := firstKV(snap, 1)
			if nodeKV == nil {
				return registry.ErrNoLease
			}
			rec, err := decodeNode(nodeKV)
			if err != nil {
				return err
			}
			opts = append(opts, clientv3.WithLease(rec.Lease))
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeKV.ModRevision))
			// Rewrite the node's key so that a concurrent ReplaceNode notices.
			nodeOps = append(nodeOps, clientv3.OpPut(nkey, string(nodeKV.Value), clientv3.WithLease(rec.Lease)))
		}
		if old != nil && registry.Unchanged(old, &in) {
			rev = oldKV.ModRevision
			return nil
		}
		stamp(&in, old)
		val, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		tr, err := s.cli.Txn(cctx).If(cmps...).Then(append(nodeOps, clientv3.OpPut(key, string(val), opts...))...).Commit()
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return registry.ErrNoLease
			}
			return err
		}
		return committed(tr, &rev)
	})
	return rev, err
}

// Delete implements registry.Store. A delete that etcd may have applied
// before an error (a leader change) and finds the instance gone on its
// next attempt succeeded. Deleting an instance of a node also rewrites the
// node's key, as every write of a node's instances does, so that a node
// set being written meanwhile notices.
func (s *Store) Delete(ctx context.Context, id string) (int64, error) {
	key := s.instKey(id)
	var rev int64
	maybeDone := false // a delete was sent and failed: etcd may have applied it
	err := s.attempts(ctx, fmt.Sprintf("delete instance %q", id), func(cctx context.Context) error {
		g, err := s.cli.Get(cctx, key)
		if err != nil {
			return err
		}
		if len(g.Kvs) == 0 {
			if maybeDone {
				rev = g.Header.Revision
				return nil
			}
			return registry.ErrNotFound
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", g.Kvs[0].ModRevision)}
		var ops []clientv3.Op
		if old, err := decodeInstance(g.Kvs[0]); err == nil && old.Node != "" {
			nkey := s.nodeKey(old.Node)
			ng, err := s.cli.Get(cctx, nkey, clientv3.WithRev(g.Header.Revision))
			if err != nil {
				return err
			}
			if len(ng.Kvs) > 0 {
				nodeKV := ng.Kvs[0]
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeKV.ModRevision))
				ops = append(ops, clientv3.OpPut(nkey, string(nodeKV.Value), clientv3.WithIgnoreLease()))
			}
		}
		tr, err := s.cli.Txn(cctx).If(cmps...).Then(append(ops, clientv3.OpDelete(key))...).Commit()
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return errContended // the node's lease ran out: its key is gone, read again
			}
			maybeDone = true
			return err
		}
		return committed(tr, &rev)
	})
	return rev, err
}

// committed records the revision of a transaction that went through, or
// says to read again and retry one whose compare failed.
func committed(tr *clientv3.TxnResponse, rev *int64) error {
	if !tr.Succeeded {
		return errContended
	}
	*rev = tr.Header.Revision
	return nil
}

// leaseKeys returns the instance keys attached to lease and whether the
// lease is still live.
func (s *Store) leaseKeys(ctx context.Context, lease clientv3.LeaseID) ([]string, bool, error) {
	r, err := s.cli.TimeToLive(ctx, lease, clientv3.WithAttachedKeys())
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, false, nil
		}
		return nil, false, err
	}
	var keys []string
	for _, k := range r.Keys {
		if strings.HasPrefix(string(k), s.instPrefix) {
			keys = append(keys, string(k))
		}
	}
	// etcd answers -1 for a lease it no longer has, and floors the
	// remaining seconds, so a live lease may show 0.
	return keys, r.TTL >= 0, nil
}

// ReplaceNode implements registry.Store. It reuses the node's lease when it
// is live and has the same TTL (renewing it), and grants a new one
// otherwise. A set whose changes fit in one etcd transaction (txnOps
// operations, txnBytes bytes) is one transaction with the node's record.
// A larger one is written in several, atomically for readers: a first
// transaction marks the node's record pending (with the revision readers
// keep showing the node at), then transactions of at most txnOps
// operations write the changes, each guarded by the node key's revision
// (any other write to the node rewrites that key, so a concurrent write
// is noticed and the set is read and written again), and the last one
// writes the record without the mark. List shows a pending node as it was
// before, and Watch holds back its changes and delivers them together at
// the commit. A writer that dies between the transactions leaves the mark:
// the node's next ReplaceNode completes or replaces the set, and its lease
// running out removes everything.
func (s *Store) ReplaceNode(ctx context.Context, node string, ttl time.Duration, insts []registry.Instance) (int64, error) {
	want, err := registry.PrepareNodeSet(node, ttl, insts)
	if err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(want))
	keys := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		keys = append(keys, s.instKey(id))
	}
	ttlSec := max(int64(math.Ceil(ttl.Seconds())), 1)

	nkey := s.nodeKey(node)
	var granted clientv3.LeaseID // granted here and not yet used
	defer func() {
		if granted != 0 {
			s.revoke(granted, node)
		}
	}()
	var rev int64
	// A set is given the store's budget for each nodeSetStep instances,
	// and each etcd request a third of the budget: a set written in many
	// transactions is not cut for its size, and a request lost with a
	// dying leader is still tried again.
	budget := s.timeout * time.Duration(1+len(insts)/nodeSetStep)
	err = s.retryWithin(ctx, fmt.Sprintf("replace instances of node %q", node), budget, wholeBudget, func(cctx context.Context) error {
		rctx, rcancel := s.request(cctx)
		g, err := s.cli.Get(rctx, nkey)
		rcancel()
		if err != nil {
			return err
		}
		snapRev := g.Header.Revision
		var nodeKV *mvccpb.KeyValue
		if len(g.Kvs) > 0 {
			nodeKV = g.Kvs[0]
		}
		cur, err := s.getAt(cctx, keys, snapRev)
		if err != nil {
			return err
		}
		var rec nodeRecord
		var oldKeys []string
		live := false
		if nodeKV != nil {
			if rec, err = decodeNode(nodeKV); err != nil {
				return err
			}
			if rec.Lease == granted {
				// An earlier attempt that failed was applied after all:
				// the lease granted here is in use.
				granted = 0
			}
			rctx, rcancel := s.request(cctx)
			oldKeys, live, err = s.leaseKeys(rctx, rec.Lease)
			rcancel()
			if err != nil {
				return fmt.Errorf("read lease: %w", err)
			}
			if p := rec.Pending; p != nil && p.PrevLease != 0 && p.PrevLease != rec.Lease {
				// A set that moved the node to a new lease was cut short:
				// the old lease's keys are the node's too.
				rctx, rcancel := s.request(cctx)
				more, _, err := s.leaseKeys(rctx, p.PrevLease)
				rcancel()
				if err != nil {
					return fmt.Errorf("read lease: %w", err)
				}
				oldKeys = append(oldKeys, more...)
			}
		}
		lease := rec.Lease
		if live && rec.TTL == ttl {
			rctx, rcancel := s.request(cctx)
			_, err := s.cli.KeepAliveOnce(rctx, lease)
			rcancel()
			if err != nil {
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return errContended // expired meanwhile: the next round grants a new one
				}
				return fmt.Errorf("renew lease: %w", err)
			}
		} else {
			if granted == 0 {
				rctx, rcancel := s.request(cctx)
				g, err := s.cli.Grant(rctx, ttlSec)
				rcancel()
				if err != nil {
					return fmt.Errorf("grant lease: %w", err)
				}
				granted = g.ID
			}
			lease = granted
		}
		var writes []write
		for _, k := range oldKeys {
			if _, keep := want[strings.TrimPrefix(k, s.instPrefix)]; !keep {
				writes = append(writes, write{op: clientv3.OpDelete(k), size: len(k)})
			}
		}
		for _, id := range ids {
			in := want[id]
			key := s.instKey(id)
			oldKV := cur[key]
			var old *registry.Instance
			if oldKV != nil {
				if old, err = decodeInstance(oldKV); err != nil {
					return err
				}
				if old.Node != node {
					return fmt.Errorf("instance %q is owned by node %q: %w", id, old.Node, registry.ErrConflict)
				}
				if registry.Unchanged(old, &in) && clientv3.LeaseID(oldKV.Lease) == lease {
					continue
				}
			}
			stamp(&in, old)
			val, err := json.Marshal(in)
			if err != nil {
				return fmt.Errorf("encode instance %q: %w", id, err)
			}
			w := write{op: clientv3.OpPut(key, string(val), clientv3.WithLease(lease)), size: len(key) + len(val)}
			if oldKV == nil || nodeKV == nil {
				// The node's own instances change only with its key, which
				// every transaction compares; any other key is compared
				// itself (a new one must still be absent).
				c := clientv3.Compare(clientv3.ModRevision(key), "=", modRev(oldKV))
				w.cmp = &c
			}
			writes = append(writes, w)
		}
		final, err := json.Marshal(nodeRecord{Lease: lease, TTL: ttl})
		if err != nil {
			return fmt.Errorf("encode lease: %w", err)
		}
		prevLease := rec.Lease
		if rec.Pending != nil && rec.Pending.PrevLease != 0 {
			prevLease = rec.Pending.PrevLease
		}
		chunks := chunk(writes)
		nodeRev := modRev(nodeKV)
		if len(chunks) > 1 {
			mark := pendingMark{Base: snapRev}
			if rec.Pending != nil {
				mark.Base = rec.Pending.Base // readers still see the node as before the first try
			}
			if nodeKV != nil && prevLease != lease {
				mark.PrevLease = prevLease
			}
			val, err := json.Marshal(nodeRecord{Lease: lease, TTL: ttl, Pending: &mark})
			if err != nil {
				return fmt.Errorf("encode lease: %w", err)
			}
			tr, err := s.commitChunk(cctx, nkey, nodeRev, nil, string(val), lease)
			if err != nil {
				if errors.Is(err, errLeaseGone) && lease == granted {
					granted = 0
				}
				return err
			}
			if lease == granted {
				granted = 0 // the node's record holds it now
			}
			nodeRev = tr.Header.Revision
			s.afterChunk(cctx, 0)
			for i, c := range chunks[:len(chunks)-1] {
				if _, err := s.commitChunk(cctx, nkey, nodeRev, c, "", lease); err != nil {
					return err
				}
				s.afterChunk(cctx, i+1)
			}
			chunks = chunks[len(chunks)-1:]
		}
		tr, err := s.commitChunk(cctx, nkey, nodeRev, chunks[0], string(final), lease)
		if err != nil {
			if errors.Is(err, errLeaseGone) && lease == granted {
				granted = 0
			}
			return err
		}
		if lease == granted {
			granted = 0
		}
		if nodeKV != nil && prevLease != lease {
			// Everything moved to the new lease; the old one holds nothing.
			s.revoke(prevLease, node)
		}
		rev = tr.Header.Revision
		return nil
	})
	return rev, err
}

func (s *Store) afterChunk(ctx context.Context, i int) {
	if s.chunkHook != nil {
		s.chunkHook(ctx, i)
	}
}

// nodeSetStep is the number of instances of a node set for which it is
// given the store's whole budget (--etcd-timeout) again.
const nodeSetStep = 2000

// revoke ends a lease that no longer holds anything, best effort: left
// alone it would only expire.
func (s *Store) revoke(lease clientv3.LeaseID, node string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.log.Warn("revoke unused etcd lease", "node", node, "lease", int64(lease), "err", err)
	}
}

// KeepAlive implements registry.Store with one etcd keep-alive of the
// node's stored lease.
func (s *Store) KeepAlive(ctx context.Context, node string) error {
	return s.attempts(ctx, fmt.Sprintf("keep alive node %q", node), func(cctx context.Context) error {
		g, err := s.cli.Get(cctx, s.nodeKey(node))
		if err != nil {
			return err
		}
		if len(g.Kvs) == 0 {
			return registry.ErrNoLease
		}
		rec, err := decodeNode(g.Kvs[0])
		if err != nil {
			return err
		}
		if _, err := s.cli.KeepAliveOnce(cctx, rec.Lease); err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return fmt.Errorf("etcd lease %x: %w", int64(rec.Lease), registry.ErrNoLease)
			}
			return err
		}
		return nil
	})
}

// ReleaseNode implements registry.Store. It marks the node's record
// released, then revokes the node's lease, which deletes the node's
// instances and record in one etcd revision whatever their number;
// watchers take deletes whose record was marked released for a release,
// not an expiry. A release that etcd may have applied before an error and
// finds the node gone on its next attempt succeeded.
func (s *Store) ReleaseNode(ctx context.Context, node string) (int64, error) {
	nkey := s.nodeKey(node)
	var rev int64
	maybeDone := false // a write was sent and failed: etcd may have applied it
	err := s.attempts(ctx, fmt.Sprintf("release node %q", node), func(cctx context.Context) error {
		g, err := s.cli.Get(cctx, nkey)
		if err != nil {
			return err
		}
		if len(g.Kvs) == 0 {
			if maybeDone {
				rev = max(rev, g.Header.Revision)
				return nil
			}
			return registry.ErrNoLease
		}
		nodeKV := g.Kvs[0]
		rec, err := decodeNode(nodeKV)
		if err != nil {
			return err
		}
		if !rec.Released {
			rec.Released = true
			val, err := json.Marshal(rec)
			if err != nil {
				return fmt.Errorf("encode lease: %w", err)
			}
			tr, err := s.cli.Txn(cctx).
				If(clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeKV.ModRevision)).
				Then(clientv3.OpPut(nkey, string(val), clientv3.WithLease(rec.Lease))).Commit()
			if err != nil {
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return registry.ErrNoLease
				}
				maybeDone = true
				return err
			}
			if !tr.Succeeded {
				return errContended
			}
		}
		r, err := s.cli.Revoke(cctx, rec.Lease)
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return errContended // gone meanwhile: read again
			}
			maybeDone = true
			return fmt.Errorf("revoke lease: %w", err)
		}
		rev = r.Header.Revision
		if p := rec.Pending; p != nil && p.PrevLease != 0 && p.PrevLease != rec.Lease {
			s.revoke(p.PrevLease, node)
		}
		return nil
	})
	return rev, err
}

// Leases implements registry.Store. Expires is etcd's remaining TTL from
// now, which etcd counts in whole seconds, rounded down.
func (s *Store) Leases(ctx context.Context) ([]registry.Lease, error) {
	var out []registry.Lease
	err := s.reads(ctx, "list node leases under "+s.nodePrefix, func(cctx context.Context) error {
		var kvs []*mvccpb.KeyValue
		if _, err := s.rangeAt(cctx, s.nodePrefix, 0, func(kv *mvccpb.KeyValue) error {
			kvs = append(kvs, kv)
			return nil
		}); err != nil {
			return err
		}
		out = make([]registry.Lease, 0, len(kvs))
		for _, kv := range kvs {
			node := strings.TrimPrefix(string(kv.Key), s.nodePrefix)
			rec, err := decodeNode(kv)
			if err != nil {
				return err
			}
			r, err := s.cli.TimeToLive(cctx, rec.Lease)
			if err != nil {
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					continue
				}
				return fmt.Errorf("read lease of node %q: %w", node, err)
			}
			if r.TTL < 0 { // gone; its record goes with it
				continue
			}
			out = append(out, registry.Lease{Node: node, TTL: rec.TTL, Expires: time.Now().Add(time.Duration(r.TTL) * time.Second)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var _ registry.Store = (*Store)(nil)
