// Package health runs the agent's local health checks: it probes an
// address (HTTP GET or TCP connect), counts passes and failures in a row,
// and says when an instance moves between pending, passing and critical.
// It knows nothing of Docker or of the registry's storage: the agent hands
// it a Spec and an address, and gets transitions back.
//
// The state machine (Tracker):
//
//   - A check starts pending: the instance is registered but not served.
//     The first probe runs at once; while pending and failing it is retried
//     after 50ms, 100ms, 200ms, then every QuickRetry until StartPeriod has
//     passed, so that a container
//     that takes a moment to listen is served a few hundred milliseconds
//     after it does. The first pass makes it passing.
//   - Failures during StartPeriod do not count. After it, Failures failures
//     in a row make a pending or passing check critical.
//   - A critical check needs Passes passes in a row to be passing again.
//
// A pass/fail alternation therefore never reaches critical with
// Failures >= 2, and a flapping instance does not bounce in and out of DNS.
package health

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Kind is what a check does.
type Kind string

// Kinds of check.
const (
	// HTTP is a GET of Spec.Path; a 2xx answer passes, redirects are not
	// followed (so a 3xx fails) and no proxy is used.
	HTTP Kind = "http"
	// TCP passes when a TCP connection opens.
	TCP Kind = "tcp"
	// None runs no check: the instance is passing from the start.
	None Kind = "none"
)

// ParseKind reads a kind from a flag or a variable.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case HTTP, TCP, None:
		return k, nil
	}
	return "", fmt.Errorf("check kind %q: want http, tcp or none", s)
}

// Statuses a check reports; they are the registry's health statuses.
const (
	Pending  = "pending"
	Passing  = "passing"
	Critical = "critical"
)

// Defaults of Config.
const (
	DefaultKind        = TCP
	DefaultPath        = "/health"
	DefaultInterval    = 2 * time.Second
	DefaultTimeout     = time.Second
	DefaultFailures    = 3
	DefaultPasses      = 2
	DefaultStartPeriod = 10 * time.Second
	// QuickRetry is the wait between probes of a pending check during its
	// start period.
	QuickRetry = 250 * time.Millisecond
	// MinInterval is the shortest interval a variable may set.
	MinInterval = 100 * time.Millisecond
	// MaxOutput bounds the output a check reports (the registry takes 1024 bytes).
	MaxOutput = 256
)

// Spec is one port's check: what to probe and how often.
type Spec struct {
	Kind Kind
	// Path is the HTTP check's path (default /health).
	Path     string
	Interval time.Duration
	Timeout  time.Duration
}

// String describes the check in one line of a log.
func (s Spec) String() string {
	switch s.Kind {
	case HTTP:
		return fmt.Sprintf("http %s every %s (timeout %s)", s.Path, s.Interval, s.Timeout)
	case TCP:
		return fmt.Sprintf("tcp every %s (timeout %s)", s.Interval, s.Timeout)
	}
	return string(s.Kind)
}

// Config is the agent-wide health-check configuration: the default check
// of a port that names none, and the thresholds. Zero values take the
// defaults above.
type Config struct {
	// Kind is the check of a port whose container names none (default tcp).
	Kind     Kind
	Interval time.Duration
	Timeout  time.Duration
	// Failures in a row that make a check critical (default 3).
	Failures int
	// Passes in a row that make a critical check passing again (default 2).
	Passes int
	// StartPeriod is how long a new check retries quickly and does not
	// count failures (default 10s).
	StartPeriod time.Duration
}

// WithDefaults fills the zero fields and checks the rest.
func (c Config) WithDefaults() (Config, error) {
	if c.Kind == "" {
		c.Kind = DefaultKind
	}
	if _, err := ParseKind(string(c.Kind)); err != nil {
		return c, err
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.Passes == 0 {
		c.Passes = DefaultPasses
	}
	if c.StartPeriod == 0 {
		c.StartPeriod = DefaultStartPeriod
	}
	switch {
	case c.Interval < MinInterval:
		return c, fmt.Errorf("check interval %s: want at least %s", c.Interval, MinInterval)
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return c, fmt.Errorf("check timeout %s: want more than 0 and at most the interval %s", c.Timeout, c.Interval)
	case c.Failures < 1:
		return c, fmt.Errorf("check failures %d: want at least 1", c.Failures)
	case c.Passes < 1:
		return c, fmt.Errorf("check passes %d: want at least 1", c.Passes)
	case c.StartPeriod < 0:
		return c, fmt.Errorf("check start period %s: want 0 or more", c.StartPeriod)
	}
	return c, nil
}

// Default is the Spec of a port whose container names no check.
func (c Config) Default() Spec {
	return Spec{Kind: c.Kind, Path: DefaultPath, Interval: c.Interval, Timeout: c.Timeout}
}

// Bound cuts s to MaxOutput bytes on a rune boundary and removes control
// characters, which the registry refuses.
func Bound(s string) string {
	s = strings.Map(func(r rune) rune {
		// C0, DEL, C1, bidirectional controls and line separators: the
		// registry refuses them all.
		if unicode.IsControl(r) || unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) <= MaxOutput {
		return s
	}
	cut := MaxOutput - 3
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}
