// Package backend defines where an agent writes its registrations. The
// signpost server backend (the HTTP API) and the Route 53 backend each
// implement Backend in their own package; nothing else in the agent knows
// which one it has.
package backend

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// ErrResync tells the agent that the backend lost this node's state (its
// lease expired, say) and needs the whole set again through Sync.
var ErrResync = errors.New("backend needs a full resync")

// ErrAuth tells the agent that the backend refused its credentials (a
// missing or wrong token): retrying cannot help, so an agent that meets
// it before its first sync stops with a clear message.
var ErrAuth = errors.New("the backend refused this agent's credentials")

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
	// Known returns, by instance ID, the health the backend holds for
	// those of insts it holds now unchanged (same ID, service, protocol,
	// address and port, as far as the backend records them). A restarted
	// agent asks it once before its first Sync, so that an instance that
	// is still running keeps being served while its first new check runs
	// instead of starting pending. Instances it does not hold are left
	// out.
	Known(ctx context.Context, insts []registry.Instance) (map[string]registry.Health, error)
}

// Metadata keys the agent sets on every instance for backends that must
// reproduce a container-level record layout (the Route 53 backend). They
// are internal: every key with MetaPrefix is reserved for them, and the
// signpost server backend strips them before writing, so they never reach
// the server's TXT records or API metadata.
const (
	// MetaPrefix begins every internal metadata key.
	MetaPrefix = "signpost."
	// MetaSRVName is the service name exactly as the container gave it:
	// the value of SERVICE_<port>_NAME ("calc" or "_calc._tcp"), or the
	// name SERVICE_NAME gives the port.
	MetaSRVName = MetaPrefix + "srv-name"
	// MetaContainerID is the container's full id.
	MetaContainerID = MetaPrefix + "container-id"
	// MetaContainerPorts is how many service ports (instances) the
	// container registers, in decimal.
	MetaContainerPorts = MetaPrefix + "container-ports"
)

// IsInternalMeta reports whether a metadata key is one of the reserved,
// internal keys (it begins with MetaPrefix).
func IsInternalMeta(key string) bool { return strings.HasPrefix(key, MetaPrefix) }

// PublicMeta returns meta without the internal keys. It returns meta
// itself when there are none, and nil when nothing is left.
func PublicMeta(meta map[string]string) map[string]string {
	n := 0
	for k := range meta {
		if IsInternalMeta(k) {
			n++
		}
	}
	if n == 0 {
		return meta
	}
	if n == len(meta) {
		return nil
	}
	out := make(map[string]string, len(meta)-n)
	for k, v := range meta {
		if !IsInternalMeta(k) {
			out[k] = v
		}
	}
	return out
}

// Link is one server a backend writes through, as the backend last saw
// it.
type Link struct {
	// Name is the server's address (its URL).
	Name string `json:"server"`
	// State is "up", "down" or "unknown" (nothing sent to it yet).
	State string `json:"state"`
	// Current is set on the server writes go to now.
	Current bool `json:"current"`
	// Since is when State last changed.
	Since time.Time `json:"since,omitzero"`
	// LastError is the last failure's message.
	LastError string `json:"last_error,omitempty"`
}

// Links is what a LinkReporter reports.
type Links struct {
	Servers []Link `json:"servers"`
	// Failovers counts the moves to another server because the current
	// one failed.
	Failovers uint64 `json:"failovers"`
}

// LinkReporter is implemented by a backend that writes through servers
// (the signpost server backend, which fails over between several), so
// that the agent can report which one it uses and which are failing.
type LinkReporter interface {
	Links() Links
}
