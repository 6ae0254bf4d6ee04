// Package httpguard is the signpost API's front door: every resource an
// HTTP client can hold is bounded here (connections, timeouts, body sizes,
// watches and blocking queries), and writes a browser could forge are
// refused (foreign Host headers, bodies that are not application/json,
// missing or wrong bearer tokens). The API handlers behind it trust that
// these checks ran and hold none of them themselves.
package httpguard

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// Limits are the bounds on what one client, and all clients together, may
// hold. The zero value of a field means its default (see Defaults).
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (431 beyond).
	MaxHeaderBytes int
	// ReadTimeout bounds reading a whole request, body included: a
	// request that declares a body it never sends is closed after it.
	ReadTimeout time.Duration
	// WriteTimeout bounds answering a request, and is the longest a
	// response waits on a client that does not read: every write of a
	// watch or blocking query gets a fresh WriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request.
	IdleTimeout time.Duration
	// MaxConns caps open API connections in all; when full, the oldest
	// idle connection is closed for a new one. 0: derived from the
	// process's file limit (see ConnsForFileLimit).
	MaxConns int
	// MaxConnsPerClient caps open connections from one client IP.
	MaxConnsPerClient int
	// MaxStreams caps watches and blocking queries in all (503 beyond).
	// 0: half of MaxConns, so that streams never take every connection.
	MaxStreams int
	// MaxStreamsPerClient caps watches and blocking queries from one
	// client IP (429 beyond).
	MaxStreamsPerClient int
	// InstanceBody caps the body of one instance (PUT /v1/instances/ID),
	// and the share of each instance in a node set.
	InstanceBody int64
	// NodeSetBody is the hard cap on a node set's body (PUT /v1/nodes/N),
	// whatever its instance count.
	NodeSetBody int64
	// BodiesInFlight caps the bytes of instance and node set bodies being
	// read and decoded at once, in all (503 beyond): each request counts
	// for its declared length, or its limit when it declares none.
	BodiesInFlight int64
	// BodiesInFlightPerClient caps the part of BodiesInFlight one client
	// IP may hold (429 beyond), so that a few connections trickling
	// bodies cannot starve every other client's writes. 0: NodeSetBody
	// (one largest node set at a time).
	BodiesInFlightPerClient int64
	// OtherBody caps every other request body (heartbeats, deletes,
	// reads), which carry nothing.
	OtherBody int64
}

// Defaults returns the default limits.
func Defaults() Limits {
	return Limits{
		ReadHeaderTimeout:   10 * time.Second,
		MaxHeaderBytes:      16 << 10,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		IdleTimeout:         2 * time.Minute,
		MaxConns:            0,
		MaxConnsPerClient:   128,
		MaxStreams:          0,
		MaxStreamsPerClient: 64,
		InstanceBody:        16 << 10,
		NodeSetBody:         4 << 20,
		OtherBody:           4 << 10,
		BodiesInFlight:      16 << 20,
	}
}

// withDefaults fills zero fields from Defaults.
func (l Limits) withDefaults() Limits {
	d := Defaults()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&l.ReadTimeout, d.ReadTimeout)
	set(&l.WriteTimeout, d.WriteTimeout)
	set(&l.IdleTimeout, d.IdleTimeout)
	seti := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	seti(&l.MaxHeaderBytes, d.MaxHeaderBytes)
	seti(&l.MaxConns, ConnsForFileLimit(0))
	seti(&l.MaxConnsPerClient, d.MaxConnsPerClient)
	seti(&l.MaxStreams, max(1, l.MaxConns/2))
	seti(&l.MaxStreamsPerClient, d.MaxStreamsPerClient)
	set64 := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	set64(&l.InstanceBody, d.InstanceBody)
	set64(&l.NodeSetBody, d.NodeSetBody)
	set64(&l.OtherBody, d.OtherBody)
	set64(&l.BodiesInFlight, d.BodiesInFlight)
	// Both budgets hold at least one largest node set, which would
	// otherwise get 503 forever.
	l.BodiesInFlight = max(l.BodiesInFlight, l.NodeSetBody)
	// A client's share holds at least one largest node set.
	l.BodiesInFlightPerClient = min(max(l.BodiesInFlightPerClient, l.NodeSetBody), l.BodiesInFlight)
	return l
}

// Kind is what a request is, for the limits that apply to it.
type Kind int

// The kinds of request.
const (
	// Read is a plain read, answered at once.
	Read Kind = iota
	// Stream is a watch or a blocking query: it may stay open for minutes.
	Stream
	// WriteInstance carries one instance.
	WriteInstance
	// WriteNodeSet carries a node's whole set of instances.
	WriteNodeSet
	// Write is any other write (heartbeat, delete): no body expected.
	Write
)

// IsWrite reports whether k changes the registry.
func (k Kind) IsWrite() bool { return k >= WriteInstance }

// clientIP names the client a request or connection comes from, for its
// share of the limits: its IPv4 address, or the /64 of its IPv6 address
// (one host commonly holds a whole /64). Forwarding headers are not
// trusted: the API is reached directly.
func clientIP(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// refuse answers with the API's JSON error body.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiclient.ErrorResponse{Error: msg})
}

// fileReserve is the number of open files kept out of the API's share:
// the store, DNS sockets, logs, and DNS over TCP's own connections.
const fileReserve = 64

// ConnsForFileLimit is the default MaxConns for a process that may open
// nofile files: half of what is left after a reserve, so that idle API
// connections can never take the files that DNS over TCP and the store
// need; at most 4096, at least 16. nofile 0 (unknown) gives 1024.
func ConnsForFileLimit(nofile uint64) int {
	if nofile == 0 {
		return 1024
	}
	n := (int64(nofile) - fileReserve) / 2
	return int(max(16, min(n, 4096)))
}
