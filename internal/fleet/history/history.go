// Package history is what a fleet test run records: every operation the
// harness's clients invoked and what came of it, every DNS answer and watch
// event they saw, every fault the nemesis injected, and the store's own
// history read back after the run. The fleet harness (internal/fleet)
// writes it; the checker (internal/fleet/check) reads it. Times are
// nanoseconds since History.Start, from one monotonic clock (the test
// process's), so that intervals compare across hosts.
package history

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Outcome is what a client learnt of one operation.
type Outcome string

const (
	// OK: the server acknowledged the operation.
	OK Outcome = "ok"
	// Failed: the operation certainly did not take effect (refused before
	// the store was asked, e.g. a 4xx, or a connection that never opened).
	Failed Outcome = "failed"
	// Unknown: the client cannot tell (timeout, connection lost after the
	// request was sent, 5xx from a store that may have committed).
	Unknown Outcome = "unknown"
)

// Kind is the operation an API client invoked.
type Kind string

const (
	// Register puts one instance (PUT /v1/instances/<id>), not owned by a
	// node. Instance is what was sent.
	Register Kind = "register"
	// Deregister deletes one instance by ID.
	Deregister Kind = "deregister"
	// Read lists a service's instances (GET /v1/services/<service>). IDs
	// and Rev are what the server answered.
	Read Kind = "read"
	// NodeSet replaces a node's whole instance set (an agent's sync). IDs
	// are the set sent.
	NodeSet Kind = "nodeset"
	// Heartbeat renews a node's lease.
	Heartbeat Kind = "heartbeat"
)

// Op is one API operation, from the moment the client invoked it to the
// moment it learnt the outcome.
type Op struct {
	Client  string   `json:"client"` // who invoked it (host/process name)
	Server  string   `json:"server"` // the server it went to, as far as known
	Kind    Kind     `json:"kind"`
	Service string   `json:"service,omitempty"`
	ID      string   `json:"id,omitempty"`   // Register, Deregister
	Node    string   `json:"node,omitempty"` // NodeSet, Heartbeat
	Addr    string   `json:"addr,omitempty"` // Register: "address:port" sent
	IDs     []string `json:"ids,omitempty"`  // Read: answered; NodeSet: sent
	Invoke  int64    `json:"invoke"`
	Return  int64    `json:"return"`
	Outcome Outcome  `json:"outcome"`
	// Rev is the registry revision the server reported (X-Signpost-Index
	// or the write's revision), 0 if none.
	Rev int64  `json:"rev,omitempty"`
	Err string `json:"err,omitempty"`
	// Status is the HTTP status of a refusal (e.g. 404: a deregister that
	// found nothing), 0 if none came.
	Status int `json:"status,omitempty"`
	// Stale: a read's server said its answer may be stale
	// (X-Signpost-Stale).
	Stale bool `json:"stale,omitempty"`
}

// DNSAnswer is one DNS query from the client host and its answer.
type DNSAnswer struct {
	Server  string `json:"server"`  // "name" of the server asked
	Service string `json:"service"` // service whose SRV (or A) was asked
	Sent    int64  `json:"sent"`
	Got     int64  `json:"got"` // 0: no answer (timeout)
	Rcode   int    `json:"rcode"`
	// Targets are the answer's instances as "address:port" (from SRV and
	// the additional A/AAAA records), sorted.
	Targets []string `json:"targets,omitempty"`
	MinTTL  uint32   `json:"min_ttl"`
}

// WatchEvent is one event a watcher got from /v1/watch.
type WatchEvent struct {
	Stream  string   `json:"stream"` // one resuming watcher (across reconnects)
	Server  string   `json:"server"`
	Service string   `json:"service,omitempty"`
	Reset   bool     `json:"reset,omitempty"`
	Index   int64    `json:"index"`
	IDs     []string `json:"ids,omitempty"` // the service's instances (whole set)
	// Services, on a reset, are the services named in it.
	Services []string `json:"services,omitempty"`
	Got      int64    `json:"got"`
}

// WatchStream is one watcher's life, so that the checker knows which streams
// were still running when the run ended.
type WatchStream struct {
	Stream string `json:"stream"` // as in WatchEvent.Stream
	Server string `json:"server"`
	// Stopped is when the harness ended the stream; 0: it ran to the end of
	// the run.
	Stopped int64 `json:"stopped,omitempty"`
}

// Fault is one fault the nemesis injected and healed.
type Fault struct {
	Kind   string `json:"kind"`   // e.g. "cut-host", "cut-server-etcd", "kill-member", ...
	Target string `json:"target"` // host names, comma-separated
	Start  int64  `json:"start"`
	End    int64  `json:"end"` // healed
	Note   string `json:"note,omitempty"`
}

// Change is one instance change in the store's own history (an etcd watch
// from revision 1 with previous values, translated).
type Change struct {
	Rev     int64  `json:"rev"`
	ID      string `json:"id"`
	Service string `json:"service"`
	Node    string `json:"node,omitempty"`
	Addr    string `json:"addr,omitempty"` // "address:port"
	Serving bool   `json:"serving"`        // passing health: would be in DNS
	Deleted bool   `json:"deleted,omitempty"`
	// Expired: a delete the store made when a lease ran out (a deleted key
	// that had a lease and no client deleted), as far as the harness can tell.
	Expired bool `json:"expired,omitempty"`
	// At is when the harness's history reader saw the change (not the
	// commit time, which etcd does not record); 0 when read after the run.
	At int64 `json:"at,omitempty"`
}

// Bounds are the documented bounds the checks enforce.
type Bounds struct {
	TTL time.Duration `json:"ttl"` // node lease TTL
	// ExpiryLate: a node's instances leave no later than its last
	// acknowledged heartbeat + TTL + ExpiryLate.
	ExpiryLate time.Duration `json:"expiry_late"`
	// Converge: after a heal, every server answers the store's state
	// within Converge.
	Converge time.Duration `json:"converge"`
	// Stale: a DNS answer may lag the store by at most Stale while its
	// server is not cut off.
	Stale time.Duration `json:"stale"`
	// StaleTTL: a DNS answer whose state had been replaced more than
	// StaleTTL before it was asked comes from a server that knows it is
	// stale, so its records carry a TTL of at most 1 s. 0: not checked.
	StaleTTL time.Duration `json:"stale_ttl,omitempty"`
	// ConvergeSaid: a server that says it is stale (X-Signpost-Stale, a
	// TTL of 1 s, SERVFAIL) is back within ConvergeSaid of the heal of
	// the last fault touching it. 0: not checked.
	ConvergeSaid time.Duration `json:"converge_said,omitempty"`
}

// History is one whole run.
type History struct {
	Seed     int64        `json:"seed"`
	Scenario string       `json:"scenario"`
	Start    time.Time    `json:"start"`
	Bounds   Bounds       `json:"bounds"`
	Ops      []Op         `json:"ops"`
	DNS      []DNSAnswer  `json:"dns"`
	Watches  []WatchEvent `json:"watches"`
	Faults   []Fault      `json:"faults"`
	Truth    []Change     `json:"truth"`
	// Servers are the server names the run used, for DNS and watches.
	Servers []string `json:"servers"`
	// Streams are the watchers the run used; the checker compares a stream's
	// last events with the store's final state only for streams listed here
	// that ran to the end.
	Streams []WatchStream `json:"streams,omitempty"`
	// End is when the traffic stopped.
	End int64 `json:"end,omitempty"`
}

// Save writes h as JSON to path.
func (h *History) Save(path string) error {
	b, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write history %q: %w", path, err)
	}
	return nil
}

// Load reads a history Save wrote.
func Load(path string) (*History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read history %q: %w", path, err)
	}
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("history %q: %w", path, err)
	}
	return &h, nil
}
