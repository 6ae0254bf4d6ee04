// Package check is the health sweep for registries without leases (Route 53
// above all): it reads every registered endpoint, probes its health path,
// and after N failures in a row removes it; an endpoint whose target no
// longer resolves is removed too. It replaces the original design's
// five-minute health-check Lambda, and runs once (from cron or a systemd
// timer, with its state in a file) or in a loop.
package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Endpoint is one registered instance as the sweep sees it.
type Endpoint struct {
	// Key identifies the endpoint across sweeps (an instance ID, or a
	// Route 53 record set's name and SetIdentifier).
	Key     string `json:"key"`
	Service string `json:"service"`
	// Target is the host name the record points at, for messages.
	Target string `json:"target"`
	// Address is the target's address; invalid when the target does not
	// resolve, which is a reason to remove the endpoint at once.
	Address netip.Addr `json:"address"`
	Port    uint16     `json:"port"`
	// ResolveErr, with no Address, says the target could not be looked up
	// for a passing reason (a resolver time-out): that counts as one failed
	// check, not as a target that is gone.
	ResolveErr error `json:"-"`
}

// Source is a registry the sweep reads and prunes.
type Source interface {
	// Name says which registry this is, for logs.
	Name() string
	// Endpoints lists every registered endpoint.
	Endpoints(ctx context.Context) ([]Endpoint, error)
	// Remove deletes one endpoint from the registry.
	Remove(ctx context.Context, ep Endpoint) error
}

// Config tunes the sweep. Zero values take the defaults named.
type Config struct {
	// Path probed with HTTP GET (default /health); a 2xx answer passes.
	Path string
	// Timeout of one probe (default 2s).
	Timeout time.Duration
	// Failures in a row before an endpoint is removed (default 3).
	Failures int
	// Concurrency of probes (default 32).
	Concurrency int
	// StateFile keeps failure counts between runs of a one-shot sweep.
	StateFile string
	// DryRun reports what would be removed without removing it. It reads
	// StateFile but never writes it.
	DryRun bool
	Log    *slog.Logger
	// Registerer gets the sweep's metrics (optional).
	Registerer prometheus.Registerer
}

// Result is what one sweep found and did.
type Result struct {
	Checked    int
	Passed     int
	Failed     int
	Unresolved int
	// Removed are the endpoints the sweep removed (none in a dry run).
	Removed []Endpoint
	// WouldRemove are, in a dry run, the endpoints a real sweep would
	// have removed.
	WouldRemove []Endpoint
}

// Report writes the sweep's summary line, then one line per endpoint
// removed (or, in a dry run, that would have been).
func (r Result) Report(w io.Writer) error {
	verb, list := "removed", r.Removed
	if r.WouldRemove != nil {
		verb, list = "would remove", r.WouldRemove
	}
	if _, err := fmt.Fprintf(w, "checked %d: %d passed, %d failed, %d unresolved, %d %s\n", r.Checked, r.Passed, r.Failed, r.Unresolved, len(list), verb); err != nil {
		return err
	}
	for _, ep := range list {
		if _, err := fmt.Fprintf(w, "%s %s (%s, target %s)\n", verb, ep.Key, ep.Service, ep.Target); err != nil {
			return err
		}
	}
	return nil
}

// Sweeper runs sweeps over one source, keeping failure counts between them.
type Sweeper struct {
	src    Source
	cfg    Config
	log    *slog.Logger
	client *http.Client

	mu       sync.Mutex
	failures map[string]int

	probes   *prometheus.CounterVec
	removals prometheus.Counter
}

// New returns a sweeper for src.
func New(src Source, cfg Config) (*Sweeper, error) {
	if cfg.Path == "" {
		cfg.Path = "/health"
	}
	if cfg.Path[0] != '/' {
		return nil, fmt.Errorf("health path %q: must start with /", cfg.Path)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Failures <= 0 {
		cfg.Failures = 3
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Sweeper{
		src: src, cfg: cfg, log: cfg.Log,
		client: &http.Client{
			Timeout: cfg.Timeout,
			// A health endpoint answers for itself: never follow a
			// redirect elsewhere, never use a proxy.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: cfg.Timeout}).DialContext},
		},
		failures: map[string]int{},
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_check_probes_total", Help: "Health probes by the sweep, by result.",
		}, []string{"result"}),
		removals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "signpost_check_removals_total", Help: "Endpoints the sweep removed.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.probes, s.removals} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register check metrics: %w", err)
			}
		}
	}
	if err := s.loadState(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sweeper) loadState() error {
	if s.cfg.StateFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read check state %q: %w", s.cfg.StateFile, err)
	}
	if err := json.Unmarshal(b, &s.failures); err != nil {
		return fmt.Errorf("check state %q: bad JSON (delete it to start over): %w", s.cfg.StateFile, err)
	}
	return nil
}

func (s *Sweeper) saveState() error {
	if s.cfg.StateFile == "" {
		return nil
	}
	s.mu.Lock()
	b, err := json.MarshalIndent(s.failures, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode check state: %w", err)
	}
	tmp := s.cfg.StateFile + ".tmp"
	if err := os.MkdirAll(filepath.Dir(s.cfg.StateFile), 0o750); err != nil {
		return fmt.Errorf("write check state %q: %w", s.cfg.StateFile, err)
	}
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write check state %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.cfg.StateFile); err != nil {
		return fmt.Errorf("write check state %q: %w", s.cfg.StateFile, err)
	}
	return nil
}

// probe reports nil when the endpoint's health path answers 2xx.
func (s *Sweeper) probe(ctx context.Context, ep Endpoint) error {
	url := "http://" + net.JoinHostPort(ep.Address.String(), strconv.Itoa(int(ep.Port))) + s.cfg.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "signpost-check")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// Sweep probes every endpoint once and removes those that failed
// Failures times in a row or whose target does not resolve.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	eps, err := s.src.Endpoints(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("list endpoints of %s: %w", s.src.Name(), err)
	}
	eps = append([]Endpoint(nil), eps...) // the source's slice is not ours to sort
	sort.Slice(eps, func(i, j int) bool { return eps[i].Key < eps[j].Key })
	var res Result
	res.Checked = len(eps)
	type outcome struct {
		ep  Endpoint
		err error
	}
	outs := make([]outcome, len(eps))
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, ep := range eps {
		outs[i].ep = ep
		if !ep.Address.IsValid() {
			outs[i].err = ep.ResolveErr
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			outs[i].err = s.probe(ctx, ep)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	seen := map[string]bool{}
	var remove []outcome
	s.mu.Lock()
	for _, o := range outs {
		seen[o.ep.Key] = true
		switch {
		case !o.ep.Address.IsValid() && o.err == nil:
			res.Unresolved++
			s.probes.WithLabelValues("unresolved").Inc()
			remove = append(remove, outcome{o.ep, fmt.Errorf("target %s does not resolve", o.ep.Target)})
		case o.err == nil:
			res.Passed++
			s.probes.WithLabelValues("pass").Inc()
			if n := s.failures[o.ep.Key]; n > 0 {
				s.log.Info("health check passing again", "endpoint", o.ep.Key, "service", o.ep.Service, "after_failures", n)
			}
			delete(s.failures, o.ep.Key)
		default:
			res.Failed++
			s.probes.WithLabelValues("fail").Inc()
			s.failures[o.ep.Key]++
			n := s.failures[o.ep.Key]
			s.log.Warn("health check failed", "endpoint", o.ep.Key, "service", o.ep.Service, "failures", n, "of", s.cfg.Failures, "err", o.err)
			if n >= s.cfg.Failures {
				remove = append(remove, o)
			}
		}
	}
	// Forget endpoints that are gone.
	for k := range s.failures {
		if !seen[k] {
			delete(s.failures, k)
		}
	}
	s.mu.Unlock()
	var errs []error
	if s.cfg.DryRun {
		res.WouldRemove = []Endpoint{}
	}
	for _, o := range remove {
		if s.cfg.DryRun {
			s.log.Warn("would remove endpoint (dry run)", "endpoint", o.ep.Key, "service", o.ep.Service, "target", o.ep.Target, "reason", o.err)
			res.WouldRemove = append(res.WouldRemove, o.ep)
			continue
		}
		if err := s.src.Remove(ctx, o.ep); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", o.ep.Key, s.src.Name(), err))
			continue
		}
		s.removals.Inc()
		s.log.Warn("removed endpoint", "endpoint", o.ep.Key, "service", o.ep.Service, "target", o.ep.Target, "reason", o.err)
		res.Removed = append(res.Removed, o.ep)
		s.mu.Lock()
		delete(s.failures, o.ep.Key)
		s.mu.Unlock()
	}
	// A dry run reads the state file but never writes it: previews that
	// share the real sweep's file must not count failures a later real
	// run would act on. A dry run in a loop counts in memory.
	if !s.cfg.DryRun {
		if err := s.saveState(); err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

// Sweeps runs n sweeps, interval apart (the first at once), calls report
// with each one's result, and returns the errors of all of them joined.
// With Failures <= n, an endpoint that fails throughout one run is
// removed in that run, counted in memory: a scheduled task that may run
// on any host of a cluster needs no state file, whose counts would be
// those of whichever host ran it last.
func (s *Sweeper) Sweeps(ctx context.Context, interval time.Duration, n int, report func(Result)) error {
	if n < 1 {
		return fmt.Errorf("sweeps %d: want at least 1", n)
	}
	var errs []error
	for i := 1; i <= n; i++ {
		if i > 1 {
			t := time.NewTimer(interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(append(errs, ctx.Err())...)
			case <-t.C:
			}
		}
		res, err := s.Sweep(ctx)
		if report != nil {
			report(res)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sweep %d of %d: %w", i, n, err))
		}
	}
	return errors.Join(errs...)
}

// Run sweeps every interval until ctx is done. A failed sweep is logged
// and the next one goes ahead.
func (s *Sweeper) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.log.Error("health sweep", "source", s.src.Name(), "err", err)
		} else if s.cfg.DryRun {
			s.log.Info("health sweep done (dry run: nothing removed)", "source", s.src.Name(), "checked", res.Checked, "passed", res.Passed, "failed", res.Failed, "unresolved", res.Unresolved, "would_remove", len(res.WouldRemove))
		} else {
			s.log.Info("health sweep done", "source", s.src.Name(), "checked", res.Checked, "passed", res.Passed, "failed", res.Failed, "unresolved", res.Unresolved, "removed", len(res.Removed))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
