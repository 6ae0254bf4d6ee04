package apiclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxServers bounds how many servers one client takes.
const MaxServers = 16

// DefaultAttemptTimeout is Client.AttemptTimeout's default.
const DefaultAttemptTimeout = 5 * time.Second

// Backoff of a server that failed: the first retry (a probe, or its turn
// in the order) after about backoffMin, doubling to backoffMax, each
// jittered down to half.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 5 * time.Second
)

// probeEvery is how often a server that is not the current one is
// probed even while it seems up, so that the client's report of it is
// never older than that (plus a request's interval).
const probeEvery = 5 * time.Second

// States of a server in ServerStatus.
const (
	// StateUnknown: nothing was sent to the server yet.
	StateUnknown = "unknown"
	// StateUp: the server answered its last request or probe.
	StateUp = "up"
	// StateDown: its last request or probe failed (no answer in time, a
	// refused connection, a 5xx).
	StateDown = "down"
)

// ServerStatus is what the client knows of one of its servers.
type ServerStatus struct {
	// URL is the server's base URL as given.
	URL string `json:"url"`
	// State is StateUnknown, StateUp or StateDown.
	State string `json:"state"`
	// Current is set on the server requests go to first (sticky).
	Current bool `json:"current"`
	// Preferred is set on the first server listed, which the client
	// goes back to when it answers again.
	Preferred bool `json:"preferred"`
	// Since is when State last changed (zero while unknown).
	Since time.Time `json:"since,omitzero"`
	// LastError is the last failure's message, kept after recovery.
	LastError string `json:"last_error,omitempty"`
	// Failures counts the failures in a row (0 when up).
	Failures int `json:"failures,omitempty"`
}

// server is one of a client's servers and what the client knows of it;
// the fields after base are guarded by Client.mu.
type server struct {
	base     *url.URL
	name     string
	state    string
	since    time.Time
	lastErr  string
	failures int
	retryAt  time.Time // no probe before; sorted after the servers ready
	checked  time.Time // last request or probe that ended
	probing  bool
}

// ParseServers reads a list of server URLs: each value may itself be a
// comma-separated list (a repeated flag, an environment variable).
// Every URL is checked (http or https, a host, a port in 1-65535 when
// given); a bad one, one given twice, an empty list or more than
// MaxServers is an error naming it.
func ParseServers(values ...string) ([]string, error) {
	var out []string
	seen := map[string]string{}
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			u, err := parseBase(s)
			if err != nil {
				return nil, err
			}
			key := strings.ToLower(u.Scheme + "://" + u.Host + u.Path)
			if first, ok := seen[key]; ok {
				return nil, fmt.Errorf("server URL %q: the same server as %q, given twice", s, first)
			}
			seen[key] = s
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("server URLs %q: none given, want http://host:port[,http://host:port...]", strings.Join(values, ","))
	}
	if len(out) > MaxServers {
		return nil, fmt.Errorf("server URLs %q: %d servers, at most %d", strings.Join(values, ","), len(out), MaxServers)
	}
	return out, nil
}

// parseBase checks one server URL.
func parseBase(base string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server URL %q: want http://host:port", base)
	}
	// "host:" would go to port 80 without a word.
	if p, err := strconv.Atoi(u.Port()); strings.HasSuffix(u.Host, ":") || (u.Port() != "" && (err != nil || p < 1 || p > 65535)) {
		return nil, fmt.Errorf("server URL %q: port %q: want 1-65535", base, u.Port())
	}
	return u, nil
}

// Servers reports what the client knows of each server, in the order
// given.
func (c *Client) Servers() []ServerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ServerStatus, len(c.servers))
	for i, s := range c.servers {
		out[i] = ServerStatus{URL: s.name, State: s.state, Current: i == c.current, Preferred: i == 0,
			Since: s.since, LastError: s.lastErr, Failures: s.failures}
	}
	return out
}

// Current is the URL of the server requests go to first.
func (c *Client) Current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[c.current].name
}

// Failovers counts the times requests moved to another server because
// the current one failed (going back to the preferred server is not
// counted).
func (c *Client) Failovers() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failovers
}

// order is the order of one request's attempts: the current server, then
// the others as listed, then those waiting out a backoff, soonest ready
// first. It also starts a probe of every server (but the current) whose
// backoff is over, so that the preferred server is taken back as soon as
// it answers, without waiting for the current one to fail, and of every
// other one not heard from for probeEvery, so that Servers reports a
// server that died while unused.
func (c *Client) order() []*server {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	ready := make([]*server, 0, len(c.servers))
	var waiting []*server
	add := func(i int) {
		s := c.servers[i]
		if s.state == StateDown && now.Before(s.retryAt) {
			waiting = append(waiting, s)
			return
		}
		ready = append(ready, s)
		if i != c.current && !s.probing && (s.state == StateDown || now.Sub(s.checked) >= probeEvery) {
			s.probing = true
			go c.probe(s)
		}
	}
	add(c.current)
	for i := range c.servers {
		if i != c.current {
			add(i)
		}
	}
	slices.SortStableFunc(waiting, func(a, b *server) int { return a.retryAt.Compare(b.retryAt) })
	return append(ready, waiting...)
}

// probe asks a server that failed for its /healthz; a 200 makes it up,
// and the current server again if it is the preferred one.
func (c *Client) probe(s *server) {
	ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout(context.Background()))
	defer cancel()
	err := c.probeOnce(ctx, s)
	c.mu.Lock()
	defer c.mu.Unlock()
	s.probing = false
	if err != nil {
		c.markDownLocked(s, err)
		return
	}
	c.markUpLocked(s)
	if s == c.servers[0] {
		c.current = 0
	}
}

func (c *Client) probeOnce(ctx context.Context, s *server) error {
	u := *s.base
	u.Path += "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u.String(), err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u.String(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &Error{Status: resp.StatusCode, Method: http.MethodGet, URL: u.String(), ErrorResponse: ErrorResponse{Error: "not healthy"}}
	}
	return nil
}

// answered records that s answered (a 2xx or a 4xx): it is up, and the
// current server unless the current one is up (a probe took the
// preferred server back while this request went elsewhere).
func (c *Client) answered(s *server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.markUpLocked(s)
	if cur := c.servers[c.current]; cur != s && cur.state != StateUp {
		if cur.state == StateDown {
			c.failovers++
		}
		c.current = slices.Index(c.servers, s)
	}
}

// failed records that s failed a request.
func (c *Client) failed(s *server, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.markDownLocked(s, err)
}

func (c *Client) markUpLocked(s *server) {
	s.checked = time.Now()
	if s.state != StateUp {
		s.state, s.since = StateUp, time.Now()
	}
	s.failures = 0
	s.retryAt = time.Time{}
}

func (c *Client) markDownLocked(s *server, err error) {
	now := time.Now()
	s.checked = now
	if s.state != StateDown {
		s.state, s.since = StateDown, now
	}
	s.lastErr = err.Error()
	s.failures++
	d := backoffMin << min(s.failures-1, 10)
	d = min(d, backoffMax)
	s.retryAt = now.Add(d/2 + rand.N(d/2+1))
}

// attemptTimeout is how long one attempt may take while another server
// is left to try: AttemptTimeout (default DefaultAttemptTimeout), and at
// most half of what is left of ctx's deadline, so that the next server
// always has as long as the one that did not answer.
func (c *Client) attemptTimeout(ctx context.Context) time.Duration {
	d := c.AttemptTimeout
	if d <= 0 {
		d = DefaultAttemptTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	return d
}

// failsOver reports whether err is a failure of the server rather than
// of the request: no answer (refused, reset, timed out) or a 5xx. A 4xx
// is the caller's and would be the same elsewhere.
func failsOver(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 500
	}
	return err != nil
}

// notSent reports whether err shows the request never reached the
// server (the connection was refused or could not be made), so it cannot
// have been applied.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// allFailed is the error of a request every server failed.
type allFailed struct{ errs []error }

func (e *allFailed) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("all %d servers failed: %s", len(e.errs), strings.Join(msgs, "; "))
}

func (e *allFailed) Unwrap() []error { return e.errs }
