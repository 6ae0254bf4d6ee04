// Package apiclient is the Go client of the signpost server's HTTP API and
// holds the API's wire types. The agent's server backend and the command
// line verbs use it.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// IndexHeader carries the registry revision a response reflects.
const IndexHeader = "X-Signpost-Index"

// StaleHeader is "true" on a read from a server that has lost contact with
// its store (docs/etcd.md, "A server cut off from etcd").
const StaleHeader = "X-Signpost-Stale"

// NodeRequest replaces everything a node owns and renews its lease.
type NodeRequest struct {
	// TTL of the node's lease, as a Go duration ("10s").
	TTL       string              `json:"ttl"`
	Instances []registry.Instance `json:"instances"`
}

// WriteResponse answers a write with the revision it became visible at.
type WriteResponse struct {
	Index    int64              `json:"index"`
	Instance *registry.Instance `json:"instance,omitempty"`
}

// ServiceResponse lists one service's instances.
type ServiceResponse struct {
	Service   string              `json:"service"`
	Index     int64               `json:"index"`
	Instances []registry.Instance `json:"instances"`
	// Stale: the server said its answer may be stale (StaleHeader).
	Stale bool `json:"-"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
	// Field names the offending field of a refused registration.
	Field string `json:"field,omitempty"`
}

// WatchEvent is one server-sent event of /v1/watch: a service's whole
// current set of instances, sent when it changes (empty when it is gone).
type WatchEvent struct {
	Service   string              `json:"service"`
	Index     int64               `json:"index"`
	Instances []registry.Instance `json:"instances"`
	// Reset, when set, is a reset event instead (Service and Instances
	// are empty): the server no longer knows every removal since the
	// watch's index, and sends the whole current state. Every service not
	// in Reset.Services is gone; the service events that follow carry the
	// instances of those that are.
	Reset *WatchReset `json:"-"`
}

// WatchReset is the data of the `event: reset` of /v1/watch, sent first
// when the watch's index is older than the removals the server still
// remembers (registry.MaxTombstones).
type WatchReset struct {
	// Index is the revision the list of services is at.
	Index int64 `json:"index"`
	// Services names every service that exists at Index, sorted.
	Services []string `json:"services"`
}

// Error is a non-2xx answer from the server.
type Error struct {
	Status int
	Method string
	URL    string
	ErrorResponse
}

// Error names the request, the HTTP status and the server's message.
func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.ErrorResponse.Error)
}

// IsStatus reports whether err is an *Error with the given status code.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Client talks to one signpost server, or to several that share one
// store (etcd), failing over between them.
//
// Each request goes to one server, the current one (sticky). When it
// fails (no answer within the attempt's timeout, a refused or broken
// connection, a 5xx such as the 503 of a server whose store is out of
// reach), the same request goes to the next server at once, within the
// caller's deadline, and the one that answers becomes the current
// server. Every request of the API is idempotent, so a retry of one that
// was applied without an answer changes nothing; a DELETE whose retry
// finds the thing gone (404) succeeds. A 4xx answer is the caller's error
// and is returned as it is. A server that failed is tried again (last in
// the order, and probed at its /healthz) after a jittered exponential
// backoff from 250ms to 5s; the first server listed, the preferred one,
// is taken back as soon as a probe finds it healthy.
type Client struct {
	servers []*server
	token   string
	http    *http.Client
	// WatchStall is how long Watch waits for anything from the server,
	// a keepalive included, before it gives the stream up as dead
	// (default DefaultWatchStall).
	WatchStall time.Duration
	// AttemptTimeout bounds one attempt on one server while another
	// server is left to try (default DefaultAttemptTimeout); an attempt
	// also gets at most half of what is left of the caller's deadline,
	// so that a server that hangs leaves the next one as long. The last
	// server of a round gets all that is left.
	AttemptTimeout time.Duration

	mu        sync.Mutex
	current   int
	failovers uint64
}

// New returns a client for the server at base ("http://127.0.0.1:8080").
// token may be empty when the server takes writes without one.
func New(base, token string) (*Client, error) {
	return NewServers([]string{base}, token)
}

// NewServers returns a client for several servers sharing one store, the
// first preferred (see Client). Each URL is checked as ParseServers
// does; none may be given twice.
func NewServers(bases []string, token string) (*Client, error) {
	if len(bases) == 0 {
		return nil, errors.New("no server URL given: want http://host:port")
	}
	if len(bases) > MaxServers {
		return nil, fmt.Errorf("server URLs %q: %d servers, at most %d", strings.Join(bases, ","), len(bases), MaxServers)
	}
	c := &Client{token: token, http: &http.Client{Timeout: 0, Transport: newTransport()}}
	seen := map[string]string{}
	for _, b := range bases {
		u, err := parseBase(b)
		if err != nil {
			return nil, err
		}
		key := strings.ToLower(u.Scheme + "://" + u.Host + u.Path)
		if first, ok := seen[key]; ok {
			return nil, fmt.Errorf("server URL %q: the same server as %q, given twice", b, first)
		}
		seen[key] = b
		c.servers = append(c.servers, &server{base: u, name: u.String(), state: StateUnknown})
	}
	return c, nil
}

// SetTransport sends the client's requests through rt instead of the
// client's own transport (http.DefaultTransport's settings, connections
// aborted on close: see AbortOnClose): for example, connections dialled
// from another network namespace (the fleet test's hosts; wrap their dial
// in AbortOnClose too). Call it before the first request.
func (c *Client) SetTransport(rt http.RoundTripper) { c.http.Transport = rt }

// do sends one request, failing over between the servers (see Client).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) (http.Header, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		payload = b
	}
	order := c.order()
	var errs []error
	sentBefore := false // an earlier attempt may have been applied
	for i, s := range order {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if i < len(order)-1 {
			actx, cancel = context.WithTimeout(ctx, c.attemptTimeout(ctx))
		}
		h, err := c.attempt(actx, s, method, path, q, body != nil, payload, out)
		cancel()
		if !failsOver(err) {
			c.answered(s)
			if err != nil && method == http.MethodDelete && sentBefore && IsStatus(err, http.StatusNotFound) {
				// Gone: the attempt that got no answer removed it.
				return h, nil
			}
			return h, err
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, err // the caller gave up; the server did nothing wrong
		}
		c.failed(s, err)
		errs = append(errs, err)
		sentBefore = sentBefore || !notSent(err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, &allFailed{errs}
}

// attempt sends one request to one server.
func (c *Client) attempt(ctx context.Context, s *server, method, path string, q url.Values, hasBody bool, payload []byte, out any) (http.Header, error) {
	u := *s.base
	u.Path += path
	if q != nil {
		u.RawQuery = q.Encode()
	}
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u.String(), err)
	}
	if hasBody || method != http.MethodGet {
		// The server refuses a write not declared as JSON, even one
		// without a body (a heartbeat): browsers cannot forge that.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u.String(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, u.String(), err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode, Method: method, URL: u.String()}
		if json.Unmarshal(data, &e.ErrorResponse) != nil || e.ErrorResponse.Error == "" {
			e.ErrorResponse.Error = strings.TrimSpace(string(data))
		}
		return resp.Header, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode answer: %w", method, u.String(), err)
		}
	}
	return resp.Header, nil
}

// Register creates or updates one instance (idempotent).
func (c *Client) Register(ctx context.Context, in registry.Instance) (WriteResponse, error) {
	var out WriteResponse
	_, err := c.do(ctx, http.MethodPut, "/v1/instances/"+url.PathEscape(in.ID), nil, in, &out)
	return out, err
}

// Deregister removes one instance.
func (c *Client) Deregister(ctx context.Context, id string) (WriteResponse, error) {
	var out WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ReplaceNode makes insts the whole set node owns and renews its lease.
func (c *Client) ReplaceNode(ctx context.Context, node string, ttl time.Duration, insts []registry.Instance) (WriteResponse, error) {
	if insts == nil {
		insts = []registry.Instance{}
	}
	var out WriteResponse
	_, err := c.do(ctx, http.MethodPut, "/v1/nodes/"+url.PathEscape(node), nil, NodeRequest{TTL: ttl.String(), Instances: insts}, &out)
	return out, err
}

// Heartbeat renews node's lease. A 404 (IsStatus(err, 404)) means the lease
// is gone and the node must ReplaceNode again.
func (c *Client) Heartbeat(ctx context.Context, node string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/heartbeat", nil, nil, nil)
	return err
}

// ReleaseNode ends node's lease and removes its instances.
func (c *Client) ReleaseNode(ctx context.Context, node string) (WriteResponse, error) {
	var out WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(node), nil, nil, &out)
	return out, err
}

// Services lists every service.
func (c *Client) Services(ctx context.Context) ([]registry.ServiceSummary, error) {
	var out []registry.ServiceSummary
	_, err := c.do(ctx, http.MethodGet, "/v1/services", nil, nil, &out)
	return out, err
}

// Service lists one service's instances. With index > 0 it is a blocking
// query: the server answers when the service changes after index, or when
// wait runs out.
func (c *Client) Service(ctx context.Context, name string, index int64, wait time.Duration) (ServiceResponse, error) {
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.FormatInt(index, 10))
		q.Set("wait", wait.String())
	}
	var out ServiceResponse
	h, err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(name), q, nil, &out)
	if h != nil {
		out.Stale = h.Get(StaleHeader) == "true"
	}
	return out, err
}

// Instances lists every instance, optionally only those of one node.
func (c *Client) Instances(ctx context.Context, node string) ([]registry.Instance, int64, error) {
	q := url.Values{}
	if node != "" {
		q.Set("node", node)
	}
	var out []registry.Instance
	h, err := c.do(ctx, http.MethodGet, "/v1/instances", q, nil, &out)
	if err != nil {
		return nil, 0, err
	}
	idx, _ := strconv.ParseInt(h.Get(IndexHeader), 10, 64)
	return out, idx, nil
}

// Leases lists the live node leases.
func (c *Client) Leases(ctx context.Context) ([]registry.Lease, error) {
	var out []registry.Lease
	_, err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, nil, &out)
	return out, err
}
