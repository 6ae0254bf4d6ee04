// Package serverbackend is the agent's backend for the signpost server: it
// writes a node's registrations through the server's HTTP API and keeps the
// node's lease alive with heartbeats.
//
// The agent's internal metadata (keys beginning with backend.MetaPrefix,
// "signpost.": the container id, the service name as written, the port
// count, which only the Route 53 layout needs) is stripped before writing,
// so it never shows in the server's TXT records or API. Containers cannot
// publish metadata under that prefix either: it is reserved.
//
// Every call is bounded (Backend.CallTimeout, three lease TTLs): a server
// that never answers fails the call instead of holding the agent's loop,
// whose retries and resyncs then take over.
package serverbackend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Backend writes one node's registrations to a signpost server.
type Backend struct {
	client  *apiclient.Client
	node    string
	ttl     time.Duration
	timeout time.Duration
}

// callTimeoutPerTTL is how many lease TTLs one call may take (CallTimeout):
// the server bounds its own writes (its store's budget is a few seconds),
// so a call that takes longer is stuck, not slow.
const callTimeoutPerTTL = 3

// minCallTimeout is CallTimeout's floor, for short leases.
const minCallTimeout = 3 * time.Second

// CallTimeout bounds every call to the server: one that gets no answer
// (a wedged server, a host gone without a reset) fails with an error
// wrapping context.DeadlineExceeded instead of holding the agent's loop.
// It is three lease TTLs, at least 3s.
func (b *Backend) CallTimeout() time.Duration { return b.timeout }

// bounded returns ctx bounded by CallTimeout.
func (b *Backend) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.timeout)
}

var (
	_ backend.Backend      = (*Backend)(nil)
	_ backend.LinkReporter = (*Backend)(nil)
)

// Links implements backend.LinkReporter: the client's servers, which one
// is current and which are failing.
func (b *Backend) Links() backend.Links {
	st := b.client.Servers()
	out := backend.Links{Servers: make([]backend.Link, len(st)), Failovers: b.client.Failovers()}
	for i, s := range st {
		out.Servers[i] = backend.Link{Name: s.URL, State: s.State, Current: s.Current, Since: s.Since, LastError: s.LastError}
	}
	return out
}

// New returns a backend that registers as node with a lease of ttl.
func New(client *apiclient.Client, node string, ttl time.Duration) (*Backend, error) {
	if client == nil {
		return nil, errors.New("serverbackend: nil client")
	}
	if node == "" {
		return nil, errors.New("serverbackend: empty node name")
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("serverbackend: lease ttl %s: want at least 1s", ttl)
	}
	return &Backend{client: client, node: node, ttl: ttl, timeout: max(callTimeoutPerTTL*ttl, minCallTimeout)}, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "server" }

// public returns inst without the internal metadata keys.
func public(inst registry.Instance) registry.Instance {
	inst.Meta = backend.PublicMeta(inst.Meta)
	return inst
}

// Sync replaces the node's whole set in one call and renews its lease.
func (b *Backend) Sync(ctx context.Context, insts []registry.Instance) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	if len(insts) > 0 {
		out := make([]registry.Instance, len(insts))
		for i := range insts {
			out[i] = public(insts[i])
		}
		insts = out
	}
	if _, err := b.client.ReplaceNode(ctx, b.node, b.ttl, insts); err != nil {
		if apiclient.IsStatus(err, http.StatusUnauthorized) || apiclient.IsStatus(err, http.StatusForbidden) {
			return fmt.Errorf("sync node %q: %w (give the server's token with --token-file): %w", b.node, backend.ErrAuth, err)
		}
		return fmt.Errorf("sync node %q (%d instances): %w", b.node, len(insts), err)
	}
	return nil
}

// noLease reports whether err is the server's "node has no live lease".
func noLease(err error) bool {
	var e *apiclient.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound && e.Field == "node"
}

// Register creates or updates one instance. When the node's lease is gone
// it returns backend.ErrResync, wrapped.
func (b *Backend) Register(ctx context.Context, inst registry.Instance) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	inst = public(inst)
	inst.Node = b.node
	if _, err := b.client.Register(ctx, inst); err != nil {
		if noLease(err) {
			return fmt.Errorf("register %s: %w: %w", inst.ID, backend.ErrResync, err)
		}
		return fmt.Errorf("register %s (%s %s:%d): %w", inst.ID, inst.Service, inst.Address, inst.Port, err)
	}
	return nil
}

// Deregister removes one instance; one that is not there is not an error.
func (b *Backend) Deregister(ctx context.Context, inst registry.Instance) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	if _, err := b.client.DeregisterNode(ctx, b.node, inst.ID); err != nil && !apiclient.IsStatus(err, http.StatusNotFound) {
		return fmt.Errorf("deregister %s: %w", inst.ID, err)
	}
	return nil
}

// Heartbeat renews the node's lease; a lease that is gone gives
// backend.ErrResync, wrapped.
func (b *Backend) Heartbeat(ctx context.Context) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	if err := b.client.Heartbeat(ctx, b.node); err != nil {
		if apiclient.IsStatus(err, http.StatusNotFound) {
			return fmt.Errorf("heartbeat of node %q: %w: %w", b.node, backend.ErrResync, err)
		}
		return fmt.Errorf("heartbeat of node %q: %w", b.node, err)
	}
	return nil
}

// Release removes every registration of the node and ends its lease.
func (b *Backend) Release(ctx context.Context) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	if _, err := b.client.ReleaseNode(ctx, b.node); err != nil && !apiclient.IsStatus(err, http.StatusNotFound) {
		return fmt.Errorf("release node %q: %w", b.node, err)
	}
	return nil
}

// Known reads the node's instances from the server (GET
// /v1/instances?node=) and returns the health the server holds for each of
// insts it holds with the same service, protocol, address and port.
func (b *Backend) Known(ctx context.Context, insts []registry.Instance) (map[string]registry.Health, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	held, _, err := b.client.Instances(ctx, b.node)
	if err != nil {
		return nil, fmt.Errorf("read the instances of node %q: %w", b.node, err)
	}
	byID := make(map[string]*registry.Instance, len(held))
	for i := range held {
		byID[held[i].ID] = &held[i]
	}
	out := map[string]registry.Health{}
	for i := range insts {
		in := insts[i].Clone()
		in.Normalize() // as the server holds it
		h, ok := byID[in.ID]
		if !ok || h.Node != b.node || h.Service != in.Service || h.Protocol != in.Protocol ||
			h.Address != in.Address || h.Port != in.Port {
			continue
		}
		out[in.ID] = h.Health
	}
	return out, nil
}
