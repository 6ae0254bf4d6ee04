package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/fleet/history"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Node is a simulated agent host: the agent's own server backend
// (internal/backend/serverbackend, over the failover client of every
// server) syncing a scripted set of instances (containers starting and
// stopping) and heartbeating every TTL/3, as the agent's loop does.
type Node struct {
	Name string
	Host *Host
	TTL  time.Duration
	// paused stops the node's loop, as a SIGSTOPped agent: no heartbeat,
	// no sync, until resumed.
	paused atomic.Bool
	client *apiclient.Client
	be     *serverbackend.Backend
}

// NewNode is node name on h, preferring server first of servers.
func NewNode(h *Host, name string, servers []*Server, first int, ttl time.Duration) (*Node, error) {
	var urls []string
	for i := range servers {
		urls = append(urls, servers[(first+i)%len(servers)].URL)
	}
	c := clientFor(h, urls)
	be, err := serverbackend.New(c, name, ttl)
	if err != nil {
		return nil, err
	}
	return &Node{Name: name, Host: h, TTL: ttl, client: c, be: be}, nil
}

// Pause stops the node's heartbeats and syncs; Resume restarts them.
func (n *Node) Pause()  { n.paused.Store(true) }
func (n *Node) Resume() { n.paused.Store(false) }

// Run syncs and heartbeats until ctx ends, as the agent does: the set
// is synced at start and whenever it changes (about every changeEvery
// one instance stops and another starts), or again when a heartbeat
// finds the lease gone; heartbeats go every TTL/3 on their own loop,
// each bounded by TTL/3.
func (n *Node) Run(ctx context.Context, tr *Traffic, rng *rand.Rand, size int, changeEvery time.Duration) {
	var set []registry.Instance
	add := func() {
		k := tr.seq.Add(1)
		addr, port := instAddr(k)
		set = append(set, registry.Instance{
			ID: fmt.Sprintf("%s-%d", n.Name, k), Service: tr.Services[int(k)%len(tr.Services)],
			Protocol: "tcp", Address: addr, Port: port, Node: n.Name,
			Health: registry.Health{Status: registry.HealthPassing},
		})
	}
	for range size {
		add()
	}
	resync := make(chan struct{}, 1)
	synced := make(chan struct{})
	go n.heartbeats(ctx, tr, synced, resync)
	first := true
	dirty := true
	lastChange := time.Now()
	for ctx.Err() == nil {
		if n.paused.Load() {
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		if time.Since(lastChange) > changeEvery {
			lastChange = time.Now()
			set = slices.Delete(set, 0, 1)
			add()
			dirty = true
		}
		select {
		case <-resync:
			dirty = true
		default:
		}
		if !dirty {
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		o := history.Op{Client: n.Name, Node: n.Name, Kind: history.NodeSet}
		for _, in := range set {
			o.IDs = append(o.IDs, in.ID)
		}
		o.Invoke = tr.Rec.Now()
		err := n.be.Sync(ctx, slices.Clone(set))
		o.Return, o.Server = tr.Rec.Now(), n.client.Current()
		o.Outcome, o.Err = outcome(err), errText(err)
		if ctx.Err() == nil {
			tr.Rec.op(o)
		}
		if err != nil {
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		dirty = false
		if first {
			first = false
			close(synced)
		}
	}
}

// heartbeats renews the lease every TTL/3 once the first sync made it,
// as the agent's heartbeat loop does (internal/agent).
func (n *Node) heartbeats(ctx context.Context, tr *Traffic, synced <-chan struct{}, resync chan<- struct{}) {
	select {
	case <-synced:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(n.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.paused.Load() {
			continue
		}
		o := history.Op{Client: n.Name, Node: n.Name, Kind: history.Heartbeat}
		hctx, cancel := context.WithTimeout(ctx, n.TTL/3)
		o.Invoke = tr.Rec.Now()
		err := n.be.Heartbeat(hctx)
		cancel()
		o.Return, o.Server = tr.Rec.Now(), n.client.Current()
		o.Outcome, o.Err = outcome(err), errText(err)
		if errors.Is(err, backend.ErrResync) {
			// The lease ran out: certainly nothing was renewed.
			o.Outcome = history.Failed
			select {
			case resync <- struct{}{}:
			default:
			}
		}
		if ctx.Err() == nil {
			tr.Rec.op(o)
		}
	}
}

// addrOf is an instance's address:port as DNS answers show it.
func addrOf(in registry.Instance) string {
	return netip.AddrPortFrom(in.Address, in.Port).String()
}
