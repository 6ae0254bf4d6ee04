package health

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// Transition is a change of a check's status (or, with From == To, the
// first probe's result).
type Transition struct {
	From, To string
	// Result is the probe that made the change.
	Result Result
	// Failures is the number of failures in a row that counted.
	Failures int
}

// Check probes one address on its spec's schedule and reports transitions.
type Check struct {
	cfg      Config
	spec     Spec
	addr     netip.AddrPort
	prober   Prober
	metrics  *Metrics
	onChange func(Transition)

	mu sync.Mutex
	tr *Tracker
}

// NewCheck returns a pending check of addr. cfg must have its defaults
// filled (Config.WithDefaults); m may be nil; onChange is called from the
// check's goroutine on every transition, and once after the first probe
// even when it changed nothing (From == To: a failing start, so that the
// agent can publish why the instance is pending). It must not block for
// long.
func NewCheck(cfg Config, spec Spec, addr netip.AddrPort, m *Metrics, onChange func(Transition)) *Check {
	return &Check{cfg: cfg, spec: spec, addr: addr, metrics: m, onChange: onChange, tr: NewTracker(cfg, time.Now())}
}

// Spec is what the check probes.
func (c *Check) Spec() Spec { return c.spec }

// Addr is the address the check probes.
func (c *Check) Addr() netip.AddrPort { return c.addr }

// State returns the current status and the last probe's result (zero
// before the first probe).
func (c *Check) State() (string, Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.Status(), c.tr.Last()
}

// Run probes at once, then after 50ms, 100ms, 200ms and every QuickRetry
// while the check starts, and every spec.Interval after, until ctx ends.
func (c *Check) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	first := true
	quick := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := c.prober.Probe(ctx, c.spec, c.addr)
		if ctx.Err() != nil {
			return
		}
		c.metrics.checked(c.spec.Kind, r.OK)
		c.mu.Lock()
		from, changed := c.tr.Observe(r)
		to, fails, starting := c.tr.Status(), c.tr.FailRun(), c.tr.Starting(time.Now())
		c.mu.Unlock()
		if changed {
			c.metrics.transition(from, to)
		}
		if (changed || first) && c.onChange != nil {
			c.onChange(Transition{From: from, To: to, Result: r, Failures: fails})
		}
		first = false
		next := c.spec.Interval
		if starting {
			// 50ms, 100ms, 200ms, then every QuickRetry: a container
			// that listens a moment after its start event is served
			// within tens of milliseconds of listening.
			next = min(QuickRetry, 50*time.Millisecond<<min(quick, 3), next)
			quick++
		}
		t.Reset(next)
	}
}
