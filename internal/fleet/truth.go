package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/fleet/history"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Prefix is where the servers keep the registry in etcd (their default).
const Prefix = "/signpost/"

// Truth is the store's own history: etcd's events under Prefix,
// translated into instance changes. A live watch notes when each change
// was seen; after the run, Read fetches the whole history from revision
// 1 with previous values, so nothing the live watch missed (it may be
// cut off by a fault) is missing.
type Truth struct {
	cli *clientv3.Client
	rec *Recorder
	mu  sync.Mutex
	// seen is when the live watch saw each (revision, id).
	seen map[string]int64
}

// NewTruth watches etcd live through cli from now until ctx ends.
func NewTruth(ctx context.Context, cli *clientv3.Client, rec *Recorder) *Truth {
	tr := &Truth{cli: cli, rec: rec, seen: map[string]int64{}}
	go tr.follow(ctx)
	return tr
}

func (tr *Truth) follow(ctx context.Context) {
	var rev int64
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range tr.cli.Watch(wctx, Prefix+"instances/", opts...) {
			now := tr.rec.Now()
			tr.mu.Lock()
			for _, ev := range resp.Events {
				key := fmt.Sprintf("%d/%s", ev.Kv.ModRevision, strings.TrimPrefix(string(ev.Kv.Key), Prefix+"instances/"))
				if _, ok := tr.seen[key]; !ok {
					tr.seen[key] = now
				}
			}
			tr.mu.Unlock()
			if resp.Header.Revision > rev && len(resp.Events) > 0 {
				rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
			}
		}
		cancel()
		sleep(ctx, 100*time.Millisecond)
	}
}

// Read returns every instance change from revision 1 to now, with the
// time the live watch saw it where it did.
func (tr *Truth) Read(ctx context.Context) ([]history.Change, error) {
	end, err := tr.cli.Get(ctx, "/fleet/end")
	if err != nil {
		return nil, fmt.Errorf("etcd revision at the end: %w", err)
	}
	last := end.Header.Revision
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var evs []*clientv3.Event
	for resp := range tr.cli.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return nil, fmt.Errorf("etcd history from revision 1: %w", err)
		}
		evs = append(evs, resp.Events...)
		if len(resp.Events) > 0 && resp.Events[len(resp.Events)-1].Kv.ModRevision >= last || resp.Header.Revision >= last && len(resp.Events) == 0 {
			break
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return translate(evs, tr.seen), nil
}

// translate turns etcd events into instance changes. A node's instance
// deleted in the revision that also deleted its node's key, with no put
// of that key, went because the node's lease ran out (ReleaseNode also
// revokes the lease; the fleet's nodes never release).
func translate(evs []*clientv3.Event, seen map[string]int64) []history.Change {
	nodeGone := map[int64]map[string]bool{} // revision -> node names deleted
	for _, ev := range evs {
		if node, ok := strings.CutPrefix(string(ev.Kv.Key), Prefix+"nodes/"); ok && ev.Type == mvccpb.DELETE {
			if nodeGone[ev.Kv.ModRevision] == nil {
				nodeGone[ev.Kv.ModRevision] = map[string]bool{}
			}
			nodeGone[ev.Kv.ModRevision][node] = true
		}
	}
	var out []history.Change
	for _, ev := range evs {
		id, ok := strings.CutPrefix(string(ev.Kv.Key), Prefix+"instances/")
		if !ok {
			continue
		}
		c := history.Change{Rev: ev.Kv.ModRevision, ID: id, At: seen[fmt.Sprintf("%d/%s", ev.Kv.ModRevision, id)]}
		val := ev.Kv.Value
		if ev.Type == mvccpb.DELETE {
			c.Deleted = true
			if ev.PrevKv != nil {
				val = ev.PrevKv.Value
			}
		}
		var in registry.Instance
		if err := json.Unmarshal(val, &in); err == nil {
			c.Service, c.Node, c.Addr, c.Serving = in.Service, in.Node, addrOf(in), in.Serving()
		}
		if c.Deleted && c.Node != "" && nodeGone[c.Rev][c.Node] {
			c.Expired = true
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Rev < out[j].Rev })
	return out
}
