package httpguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// bodyKey carries a request's bodyCount in its context.
type bodyKey struct{}

// bodyCount counts the bytes read from a request body, for the per-item
// check of a node set.
type bodyCount struct {
	rc      io.ReadCloser
	n       int64
	perItem int64
}

func (b *bodyCount) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *bodyCount) Close() error { return b.rc.Close() }

// inFlight counts the body bytes of writes being served, in all and per
// client IP.
type inFlight struct {
	mu       sync.Mutex
	n        int64
	byClient map[string]int64
}

// reserve takes n bytes of the BodiesInFlight budget for client ip, or
// says which limit is full.
func (g *Guard) reserve(ip string, n int64) (release func(), status int, msg string) {
	f := &g.bodies
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byClient[ip]+n > g.lim.BodiesInFlightPerClient {
		return nil, http.StatusTooManyRequests, fmt.Sprintf("too many large writes from %s being read at once (%d bytes, --http-max-bodies-in-flight-per-client); retry", ip, g.lim.BodiesInFlightPerClient)
	}
	if f.n+n > g.lim.BodiesInFlight {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("too many large writes being read at once (%d bytes in all, --http-max-bodies-in-flight); retry", g.lim.BodiesInFlight)
	}
	if f.byClient == nil {
		f.byClient = map[string]int64{}
	}
	f.n += n
	f.byClient[ip] += n
	g.bodyBytes.Add(float64(n))
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.n -= n
		if f.byClient[ip] -= n; f.byClient[ip] <= 0 {
			delete(f.byClient, ip)
		}
		g.bodyBytes.Sub(float64(n))
	}, 0, ""
}

// limitBody refuses a declared body over max at once (413, and the
// connection closed rather than drained) and cuts a body that grows past
// max while it is read: the handler's decoder gets a *http.MaxBytesError.
// An instance or node set body also takes its share of BodiesInFlight
// (503 when there is none left, 429 past the client's share); release
// gives it back.
func (g *Guard) limitBody(w http.ResponseWriter, r *http.Request, kind Kind) (_ *http.Request, release func(), ok bool) {
	max := g.lim.OtherBody
	switch kind {
	case WriteInstance:
		max = g.lim.InstanceBody
	case WriteNodeSet:
		max = g.lim.NodeSetBody
	}
	if r.ContentLength > max {
		g.deny(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body of %d bytes is over the limit of %d bytes for this request", r.ContentLength, max))
		return r, nil, false
	}
	release = func() {}
	if kind == WriteInstance || kind == WriteNodeSet {
		n := max
		if r.ContentLength >= 0 {
			n = r.ContentLength
		}
		var status int
		var msg string
		if release, status, msg = g.reserve(clientIP(r.RemoteAddr), n); release == nil {
			reason := "bodies_in_flight"
			if status == http.StatusTooManyRequests {
				reason = "bodies_in_flight_per_client"
			}
			w.Header().Set("Retry-After", "1")
			g.deny(w, r, status, reason, msg)
			return r, nil, false
		}
	}
	bc := &bodyCount{rc: http.MaxBytesReader(w, r.Body, max), perItem: g.lim.InstanceBody}
	r.Body = bc
	return r.WithContext(context.WithValue(r.Context(), bodyKey{}, bc)), release, true
}

// ErrTooLarge is wrapped by the errors of CheckItems.
var ErrTooLarge = errors.New("request body too large")

// CheckItems checks, once a body of n items (the instances of a node set)
// is read, that it is no larger than n times the per-instance limit (plus
// 1 KiB): a node set's size follows its instance count, whatever its hard
// cap. It does nothing for a request that did not pass through a Guard.
func CheckItems(r *http.Request, n int) error {
	bc, ok := r.Context().Value(bodyKey{}).(*bodyCount)
	if !ok {
		return nil
	}
	if allowed := 1<<10 + int64(n)*bc.perItem; bc.n > allowed {
		return fmt.Errorf("%w: %d bytes for %d instances, over %d bytes per instance", ErrTooLarge, bc.n, n, bc.perItem)
	}
	return nil
}
