// Package staleness tracks how long ago a server's store last answered a
// request that needs its quorum, says so (/healthz, a metric, a header on
// every API read), and decides what DNS does about it: answer as usual
// while current; answer from memory with a short TTL while stale; step
// aside (SERVFAIL for the zone) once stale for longer than MaxStale while
// a peer server that is current can be reached, so that clients that know
// both servers move to it. When no server is current (the store itself
// is down, or no peer answers), every server keeps answering its last
// known state.
package staleness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	// DefaultInterval is how often the store is probed.
	DefaultInterval = 250 * time.Millisecond
	// DefaultProbeTimeout bounds one probe.
	DefaultProbeTimeout = time.Second
	// DefaultStaleAfter is how long without contact makes a server stale.
	DefaultStaleAfter = 2 * time.Second
	// DefaultMaxStale is how long a server may be stale before it steps
	// aside for a current peer.
	DefaultMaxStale = 5 * time.Second
	// StaleTTL is the most TTL, in seconds, of DNS answers while stale.
	StaleTTL = 1
)

// State is what a server does about its store's last contact.
type State int

// The states, in order of staleness.
const (
	// Current: the store answered within StaleAfter.
	Current State = iota
	// Stale: no answer for longer than StaleAfter; DNS answers from
	// memory with a TTL of at most StaleTTL.
	Stale
	// SteppedAside: stale for longer than MaxStale and a peer is current;
	// DNS answers SERVFAIL for the zone.
	SteppedAside
)

func (s State) String() string {
	switch s {
	case Current:
		return "current"
	case Stale:
		return "stale"
	case SteppedAside:
		return "stepped_aside"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Config configures a Monitor. Plain data; zero fields take the defaults.
type Config struct {
	// Probe asks the store something that needs its quorum (a
	// linearizable read): nil means the store answered. Required.
	Probe func(ctx context.Context) error
	// Interval is how often a probe starts (default DefaultInterval).
	// Probes overlap when one hangs: at most ProbeTimeout/Interval+1 are
	// in flight, so that a store that answers again is seen within an
	// interval, not after the timeout of a probe sent into the cut.
	Interval time.Duration
	// ProbeTimeout bounds each probe (default DefaultProbeTimeout).
	ProbeTimeout time.Duration
	// StaleAfter is how long without contact makes the server stale
	// (default DefaultStaleAfter).
	StaleAfter time.Duration
	// MaxStale is how long the server may be stale before it steps aside
	// for a current peer (default DefaultMaxStale; at least StaleAfter).
	MaxStale time.Duration
	// Peers, when set, are the other servers of the same store; without
	// it the server never steps aside.
	Peers PeerConfig
	// OnProbe, when set, gets every probe's result that is newer than the
	// last one given (the server records it for /healthz).
	OnProbe func(err error)
	// OnState, when set, is called on every change of state, in order,
	// never concurrently (the server changes its DNS answers).
	OnState func(State)
	// Registerer gets the metrics (default: none kept).
	Registerer prometheus.Registerer
	// Log gets the monitor's logs (default slog.Default()).
	Log *slog.Logger
}

// Monitor probes the store and keeps the state. Its methods are safe for
// concurrent use.
type Monitor struct {
	cfg   Config
	start time.Time
	peers *peerSet

	last  atomic.Int64 // Unix nanoseconds of the last contact (0: none yet)
	state atomic.Int32 // the state the last evaluation chose
	// shown is the state OnState last applied: what State, /healthz, the
	// headers and the metric report, so that nothing says "stale" before
	// DNS answers with the stale TTL.
	shown atomic.Int32

	mu      sync.Mutex
	applied uint64 // sequence of the newest probe result given to OnProbe
	lastErr error

	flip chan struct{} // the state changed: OnState has something to do
}

// New returns a monitor for cfg; Run starts it.
func New(cfg Config) (*Monitor, error) {
	if cfg.Probe == nil {
		return nil, errors.New("staleness monitor: no probe")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = DefaultMaxStale
	}
	if cfg.MaxStale < cfg.StaleAfter {
		return nil, fmt.Errorf("max stale %s: less than the stale threshold %s", cfg.MaxStale, cfg.StaleAfter)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Monitor{cfg: cfg, start: time.Now(), flip: make(chan struct{}, 1)}
	m.last.Store(m.start.UnixNano()) // a server starts with a loaded index
	m.peers = newPeerSet(cfg.Peers, cfg.Log)
	if err := m.register(cfg.Registerer); err != nil {
		return nil, err
	}
	return m, nil
}

// SetSelf names this server, to be left out of the peers read from the
// store. Call it before Run.
func (m *Monitor) SetSelf(id string) {
	m.peers.mu.Lock()
	m.peers.cfg.Self = id
	m.peers.mu.Unlock()
}

// Interval is the probe interval.
func (m *Monitor) Interval() time.Duration { return m.cfg.Interval }

// MaxStale is how long the server may be stale before stepping aside.
func (m *Monitor) MaxStale() time.Duration { return m.cfg.MaxStale }

// LastContact is when the store last answered a probe (the time the probe
// was sent: what the server holds is at least that recent).
func (m *Monitor) LastContact() time.Time { return time.Unix(0, m.last.Load()) }

// Age is how long ago the last contact was.
func (m *Monitor) Age() time.Duration { return time.Since(m.LastContact()) }

// State is the state now, reported once OnState has applied it (so that
// nothing says "stale" while DNS still answers at the normal TTL).
func (m *Monitor) State() State { return State(m.shown.Load()) }

// Contact records that the store answered a request sent at t.
func (m *Monitor) Contact(t time.Time) {
	n := t.UnixNano()
	for {
		old := m.last.Load()
		if n <= old || m.last.CompareAndSwap(old, n) {
			return
		}
	}
}

// Run probes the store and updates the state until ctx is done.
func (m *Monitor) Run(ctx context.Context) {
	maxInFlight := int(m.cfg.ProbeTimeout/m.cfg.Interval) + 1
	inflight := make(chan struct{}, maxInFlight)
	var seq uint64
	var wg sync.WaitGroup
	defer wg.Wait()
	go m.peers.run(ctx, m)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.notify(ctx)
	}()
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case inflight <- struct{}{}:
			seq++
			wg.Add(1)
			go func(seq uint64) {
				defer wg.Done()
				defer func() { <-inflight }()
				m.probe(ctx, seq)
			}(seq)
		default: // every slot hangs: wait for one
		}
		m.evaluate()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Monitor) probe(ctx context.Context, seq uint64) {
	sent := time.Now()
	pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
	err := m.cfg.Probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		m.Contact(sent)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq <= m.applied {
		return // a newer probe has answered
	}
	m.applied = seq
	switch {
	case err != nil && m.lastErr == nil:
		m.cfg.Log.Warn("store out of reach: answering from memory, refusing writes", "err", err)
	case err == nil && m.lastErr != nil:
		m.cfg.Log.Info("store reachable again", "out_of_reach_for", time.Since(m.LastContact()).Round(time.Millisecond))
	}
	m.lastErr = err
	if m.cfg.OnProbe != nil {
		m.cfg.OnProbe(err)
	}
	if err == nil {
		m.evaluateLocked()
	}
}

// evaluate moves the state to what the age of the last contact and the
// peers say.
func (m *Monitor) evaluate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evaluateLocked()
}

func (m *Monitor) evaluateLocked() {
	age := m.Age()
	next := Current
	switch {
	case age > m.cfg.MaxStale && m.peers.someCurrent():
		next = SteppedAside
	case age > m.cfg.StaleAfter:
		next = Stale
	}
	prev := State(m.state.Swap(int32(next)))
	if prev == next {
		return
	}
	lvl := slog.LevelWarn
	if next == Current {
		lvl = slog.LevelInfo
	}
	m.cfg.Log.Log(context.Background(), lvl, "store contact: "+next.String(), "was", prev, "last_contact", m.LastContact().UTC().Format(time.RFC3339Nano), "age", age.Round(time.Millisecond))
	select {
	case m.flip <- struct{}{}:
	default:
	}
}

// notify calls OnState with each new state, off the probes' path (it
// repacks DNS answers).
func (m *Monitor) notify(ctx context.Context) {
	told := Current
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.flip:
		}
		if st := State(m.state.Load()); st != told {
			if m.cfg.OnState != nil {
				m.cfg.OnState(st)
			}
			m.shown.Store(int32(st))
			told = st
		}
	}
}
