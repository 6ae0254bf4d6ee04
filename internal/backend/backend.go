// Package backend defines where an agent writes its registrations. The
// signpost server backend (the HTTP API) and the Route 53 backend each
// implement Backend in their own package; nothing else in the agent knows
// which one it has.
package backend

import (
	"context"
	"errors"

	"github.com/signpost-dns/signpost/internal/registry"
)

// ErrResync tells the agent that the backend lost this node's state (its
// lease expired, say) and needs the whole set again through Sync.
var ErrResync = errors.New("backend needs a full resync")

// Backend is the registry as one agent (one node) sees it. Instances passed
// in carry the agent's node name in Node.
type Backend interface {
	// Name says which backend this is, for logs ("server", "route53").
	Name() string
	// Sync makes insts the whole set of this node's registrations: stale
	// ones go, missing ones come, and where the backend allows it in one
	// atomic change, so that the zone is never empty in between.
	Sync(ctx context.Context, insts []registry.Instance) error
	// Register creates or updates one instance.
	Register(ctx context.Context, inst registry.Instance) error
	// Deregister removes one instance; removing one that is not there is
	// not an error.
	Deregister(ctx context.Context, inst registry.Instance) error
	// Heartbeat tells the backend the node is alive. ErrResync (wrapped)
	// means the agent must Sync before anything else.
	Heartbeat(ctx context.Context) error
	// Release removes every registration of this node (a graceful stop
	// that was asked to clean up).
	Release(ctx context.Context) error
}
