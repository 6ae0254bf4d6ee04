package registry

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns; callers test for them with errors.Is.
var (
	// ErrNotFound: no instance with that ID.
	ErrNotFound = errors.New("not found")
	// ErrNoLease: the node has no live lease; the agent must replace its
	// whole set (which grants a new lease) before writing single instances.
	ErrNoLease = errors.New("node has no live lease")
	// ErrCompacted: a watch asked for a revision the store no longer keeps
	// history for; the watcher must list again.
	ErrCompacted = errors.New("revision compacted")
	// ErrConflict: the write would take over an instance that another node owns.
	ErrConflict = errors.New("instance is owned by another node")
	// ErrUnavailable: the store cannot take writes right now.
	ErrUnavailable = errors.New("store unavailable")
)

// ReasonLeaseExpired is the Event.Reason of deletes caused by a node's
// lease running out.
const ReasonLeaseExpired = "lease expired"

// EventType says what happened to an instance.
type EventType int

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// String gives the event type as a word (put, delete).
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return "unknown"
}

// Event is one change to the registry. For EventDelete, Instance holds the
// instance as it was before it was removed.
type Event struct {
	Type     EventType
	Rev      int64
	Instance Instance
	// Reason is set on deletes the store made by itself, such as
	// "lease expired".
	Reason string
}

// WatchResponse is a batch of events in revision order, or the error that
// ended the watch (the channel closes right after).
type WatchResponse struct {
	Events []Event
	Err    error
	// Rev, when not zero, is a revision the watch has reached: every
	// change up to and including it has been delivered. Stores whose
	// revisions also count writes that watchers do not see (etcd's are
	// global) send it, with or without Events, so that a watcher learns it
	// has caught up with a revision a write returned.
	Rev int64
}

// Lease is a node's claim on its instances.
type Lease struct {
	Node string        `json:"node"`
	TTL  time.Duration `json:"ttl"`
	// Expires is when the lease runs out unless renewed. Approximate for
	// stores that keep leases elsewhere.
	Expires time.Time `json:"expires"`
}

// Store keeps the registry durably. The embedded bbolt store and the etcd
// store implement it; callers never know which they have.
//
// Every method that returns a revision returns the revision at which its
// change became visible; a Watch from before that revision sees it.
type Store interface {
	// List returns every instance and the revision they were read at.
	List(ctx context.Context) ([]Instance, int64, error)
	// Watch streams changes with revisions greater than rev. It fails
	// with ErrCompacted when rev is older than the history kept. The
	// channel closes when ctx is done or the watch is lost (after a
	// response carrying the error).
	Watch(ctx context.Context, rev int64) (<-chan WatchResponse, error)
	// Put creates or replaces one instance. An instance with a Node needs
	// that node's live lease (ErrNoLease otherwise) and is removed with it.
	Put(ctx context.Context, inst Instance) (int64, error)
	// Delete removes one instance; ErrNotFound if there is none.
	Delete(ctx context.Context, id string) (int64, error)
	// ReplaceNode atomically makes insts the whole set that node owns,
	// granting or renewing the node's lease for ttl. Instances the node
	// owned that are not in insts are deleted in the same change.
	ReplaceNode(ctx context.Context, node string, ttl time.Duration, insts []Instance) (int64, error)
	// KeepAlive renews the node's lease; ErrNoLease if it has expired.
	KeepAlive(ctx context.Context, node string) error
	// ReleaseNode ends the node's lease now and deletes its instances.
	ReleaseNode(ctx context.Context, node string) (int64, error)
	// Leases lists the live node leases.
	Leases(ctx context.Context) ([]Lease, error)
	// Close releases the store's resources.
	Close() error
}

// Pinger is implemented by stores that live elsewhere (etcd): Ping says
// whether the store answers now. A server pings it to report itself
// degraded while the store is out of reach.
type Pinger interface {
	Ping(ctx context.Context) error
}

// UnavailableError is a store that did not answer, or refused for now. It
// wraps ErrUnavailable and the store's own error. Reason says what
// happened in words that may be shown to any client ("etcd did not answer
// within 5s (3 attempts)"); the cause may name servers, endpoints or keys,
// and belongs in the server's log.
type UnavailableError struct {
	// Reason may be shown to any client.
	Reason string
	// Err is the store's own error, for the server's log.
	Err error
}

// Error gives the reason, ErrUnavailable and the cause (when there is one).
func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return e.Reason + ": " + ErrUnavailable.Error()
	}
	return e.Reason + ": " + ErrUnavailable.Error() + ": " + e.Err.Error()
}

// Unwrap gives ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// UnavailableReason returns the Reason of the UnavailableError in err's
// chain, or "" when there is none.
func UnavailableReason(err error) string {
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return ue.Reason
	}
	return ""
}
