package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Docker HEALTHCHECK statuses.
const (
	dockerStarting  = "starting"
	dockerHealthy   = "healthy"
	dockerUnhealthy = "unhealthy"
)

// checkSpec reads one port's check settings: the agent's default check,
// overridden by SERVICE_<port>_CHECK*. UDP ports get no check (both kinds
// probe TCP). Bad settings become notes naming the container and variable.
func (a *Agent) checkSpec(c container, p conventions.Port) (health.Spec, []note) {
	var notes []note
	if a.cfg.Health.Kind == "" { // an Agent built without New (unit tests)
		return health.Spec{Kind: health.None}, nil
	}
	settings := make(map[string]health.Setting, len(p.Check))
	for k, st := range p.Check {
		settings[k] = health.Setting{Var: st.Var, Value: st.Value}
	}
	spec, warns := health.ParseSpec(a.cfg.Health.Default(), settings)
	for _, w := range warns {
		notes = append(notes, note{key: "check:" + w.Var, msg: "bad health-check setting; using the default",
			attrs: []any{"container", c.Name, "variable", w.Var, "value", w.Value, "reason", w.Reason, "check", spec.String()}})
	}
	if p.Proto == "udp" && spec.Kind != health.None {
		_, http := p.Check["http"]
		_, tcp := p.Check["tcp"]
		if http || tcp {
			notes = append(notes, note{key: "check:udp:" + p.String(), msg: "health checks probe TCP; the udp port is registered without one",
				attrs: []any{"container", c.Name, "port", p.String()}})
		}
		spec.Kind = health.None
	}
	return spec, notes
}

// checks runs the agent's health checks, one goroutine per instance with
// a check, and tells the agent's loop when a status changed.
type checks struct {
	cfg     health.Config
	metrics *health.Metrics
	log     *slog.Logger
	// kick has a value when some status changed since the loop last
	// looked; the loop then writes what changed.
	kick chan struct{}
	// critical is called (from a check's goroutine) when an instance goes
	// critical.
	critical func(containerID, container string, in registry.Instance, tr health.Transition)

	mu   sync.Mutex
	ctx  context.Context
	wg   sync.WaitGroup
	byID map[string]*runningCheck
}

type runningCheck struct {
	chk    *health.Check
	cancel context.CancelFunc
}

func newChecks(cfg health.Config, m *health.Metrics, log *slog.Logger) *checks {
	return &checks{cfg: cfg, metrics: m, log: log, kick: make(chan struct{}, 1), byID: map[string]*runningCheck{}}
}

// start sets the context every check runs under.
func (cs *checks) start(ctx context.Context) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.ctx = ctx
}

// ensure runs spec against in's address: a new check when there is none,
// or when the spec or address changed; none when spec is None. A new
// check starts in the carried health when carry is not nil (what the
// backend held when the agent started), pending otherwise.
func (cs *checks) ensure(in registry.Instance, spec health.Spec, containerID, name string, carry *registry.Health) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	addr := netip.AddrPortFrom(in.Address, in.Port)
	if rc, ok := cs.byID[in.ID]; ok {
		if spec.Kind != health.None && rc.chk.Spec() == spec && rc.chk.Addr() == addr {
			return
		}
		rc.cancel()
		delete(cs.byID, in.ID)
	}
	if spec.Kind == health.None || cs.ctx == nil {
		return
	}
	log := cs.log.With("container", name, "service", in.Service, "instance", in.ID, "address", addr.String(), "check", spec.String())
	chk := health.NewCheck(cs.cfg, spec, addr, cs.metrics, func(tr health.Transition) {
		switch {
		case tr.From == tr.To && tr.To == health.Pending:
			// Usual while a container starts; if it persists, the
			// transition to critical says so at WARN.
			log.Debug("first health check failed; the instance stays pending (not served) until one passes", "output", tr.Result.Output)
		case tr.From == tr.To && tr.Result.OK:
			log.Info("first health check since the agent started passed; carried health kept", "status", tr.To, "output", tr.Result.Output)
		case tr.From == tr.To:
			log.Info("first health check since the agent started failed; carried health kept until the thresholds say otherwise",
				"status", tr.To, "output", tr.Result.Output, "failures_in_a_row", tr.Failures, "failures_to_critical", cs.cfg.Failures)
		case tr.To == health.Critical:
			log.Warn("health transition", "from", tr.From, "to", tr.To, "output", tr.Result.Output, "failures_in_a_row", tr.Failures)
		default:
			log.Info("health transition", "from", tr.From, "to", tr.To, "output", tr.Result.Output, "failures_in_a_row", tr.Failures)
		}
		select {
		case cs.kick <- struct{}{}:
		default:
		}
		// Critical now, by a failure: a transition, or the first probe of
		// a check carried over as critical failing again. A carried
		// critical check whose first probe passes is recovering.
		if tr.To == health.Critical && !tr.Result.OK && cs.critical != nil {
			cs.critical(containerID, name, in, tr)
		}
	})
	if carry != nil && chk.Resume(carry.Status, health.Result{OK: carry.Status == health.Passing, Output: carry.Output, At: carry.CheckedAt}) {
		log.Debug("health carried over from the backend", "status", carry.Status, "checked_at", carry.CheckedAt)
	}
	ctx, cancel := context.WithCancel(cs.ctx)
	cs.byID[in.ID] = &runningCheck{chk: chk, cancel: cancel}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		chk.Run(ctx)
	}()
	log.Debug("health check started")
}

// remove stops the check of one instance.
func (cs *checks) remove(id string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if rc, ok := cs.byID[id]; ok {
		rc.cancel()
		delete(cs.byID, id)
	}
}

// retain stops every check whose instance is not in keep.
func (cs *checks) retain(keep map[string]bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for id, rc := range cs.byID {
		if !keep[id] {
			rc.cancel()
			delete(cs.byID, id)
		}
	}
}

// stop ends every check and waits for them.
func (cs *checks) stop() {
	cs.retain(nil)
	cs.wg.Wait()
}

// state is the health of one instance's own check; false when it has none.
func (cs *checks) state(id string) (registry.Health, bool) {
	cs.mu.Lock()
	rc, ok := cs.byID[id]
	cs.mu.Unlock()
	if !ok {
		return registry.Health{}, false
	}
	st, r := rc.chk.State()
	return registry.Health{Status: st, CheckedAt: r.At, Output: r.Output}, true
}

// effectiveHealth combines an instance's own check with its container's
// Docker HEALTHCHECK:
//
//   - Docker "unhealthy" makes the instance critical, whatever signpost's
//     own check says (Docker applied its own retries already).
//   - Docker "starting" holds an instance back (pending) only when it has
//     no check of its own; with one, the first pass of signpost's check is
//     enough, so that registration stays fast.
//   - Otherwise the instance's own check decides; without one it passes.
func (a *Agent) effectiveHealth(in registry.Instance, cid string) registry.Health {
	h, has := a.checks.state(in.ID)
	if !has {
		h = registry.Health{Status: registry.HealthPassing}
	}
	dh := a.dockerHealth[cid]
	switch dh.status {
	case dockerUnhealthy:
		return registry.Health{Status: registry.HealthCritical, CheckedAt: dh.at, Output: boundOutput("docker HEALTHCHECK unhealthy: " + dh.output)}
	case dockerStarting:
		if !has {
			return registry.Health{Status: registry.HealthPending, CheckedAt: dh.at, Output: "docker HEALTHCHECK starting"}
		}
	}
	return h
}

// dockerHealthState is what the agent last saw of a container's HEALTHCHECK.
type dockerHealthState struct {
	status, output string
	at             time.Time
}

// noteDockerHealth records a container's HEALTHCHECK status, and logs and
// counts a change (stopping the container on "unhealthy" with
// --stop-unhealthy).
func (a *Agent) noteDockerHealth(ctx context.Context, c container, insts []registry.Instance) {
	old := a.dockerHealth[c.ID]
	if c.DockerHealth == "" {
		delete(a.dockerHealth, c.ID)
		return
	}
	a.dockerHealth[c.ID] = dockerHealthState{status: c.DockerHealth, output: c.DockerHealthOutput, at: c.DockerHealthAt}
	if old.status == c.DockerHealth || len(insts) == 0 {
		return
	}
	from, to := dockerStatus(old.status), dockerStatus(c.DockerHealth)
	lvl := slog.LevelInfo
	if c.DockerHealth == dockerUnhealthy {
		lvl = slog.LevelWarn
	}
	a.log.Log(ctx, lvl, "docker health transition", "container", c.Name, "docker_health", c.DockerHealth, "from", from, "to", to, "output", boundOutput(c.DockerHealthOutput))
	if from != to && old.status != "" {
		a.metrics.Transition(from, to)
	}
	if c.DockerHealth == dockerUnhealthy {
		a.stopUnhealthy(c.ID, c.Name, "its Docker HEALTHCHECK reports unhealthy: "+boundOutput(c.DockerHealthOutput))
	}
}

// dockerStatus maps a HEALTHCHECK status to a registry status.
func dockerStatus(s string) string {
	switch s {
	case dockerHealthy:
		return registry.HealthPassing
	case dockerUnhealthy:
		return registry.HealthCritical
	}
	return registry.HealthPending
}

// applyHealth writes every instance whose health status changed since it
// was last written (and one whose check gave its first result). It runs on the loop's goroutine, which owns a.regs, so
// that a check's result can never bring back an instance that was
// deregistered meanwhile.
func (a *Agent) applyHealth(ctx context.Context) {
	for cid, insts := range a.regs {
		for i, in := range insts {
			h := a.effectiveHealth(in, cid)
			// A transition, or the first result of a check (so that the
			// API says why a pending instance is pending).
			first := in.Health.CheckedAt.IsZero() && !h.CheckedAt.IsZero()
			if h.Status == in.Health.Status && !first {
				continue
			}
			old := in.Health.Status
			in.Health = h
			if err := a.be.Register(ctx, in); err != nil {
				a.writeFailed(ctx, err, "register health", shortID(cid), in)
				if isResync(err) {
					return
				}
				continue
			}
			insts[i] = in
			a.log.Debug("health written", "container", shortID(cid), "instance", in.ID, "service", in.Service, "from", old, "to", h.Status)
		}
	}
}

// stopUnhealthy stops a container that went critical, when the agent was
// asked to (--stop-unhealthy), once per container life.
func (a *Agent) stopUnhealthy(cid, name, reason string) {
	if !a.cfg.StopUnhealthy {
		return
	}
	a.stopMu.Lock()
	if a.stopping[cid] || a.runCtx == nil {
		a.stopMu.Unlock()
		return
	}
	a.stopping[cid] = true
	ctx := a.runCtx
	a.stopWG.Add(1)
	a.stopMu.Unlock()
	a.log.Warn("stopping unhealthy container (--stop-unhealthy)", "container", name, "id", shortID(cid), "reason", reason)
	go func() {
		defer a.stopWG.Done()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := a.docker.Stop(sctx, cid, 10*time.Second)
		a.metrics.Stopped(err)
		if err != nil {
			a.log.Error("could not stop unhealthy container", "container", name, "id", shortID(cid), "err", err)
			a.stopMu.Lock()
			delete(a.stopping, cid) // the next transition tries again
			a.stopMu.Unlock()
			return
		}
		a.log.Warn("stopped unhealthy container", "container", name, "id", shortID(cid), "reason", reason)
	}()
}

// stopped forgets a container's stop once it died, so that a restarted
// container is stopped again if it fails again.
func (a *Agent) stopped(cid string) {
	a.stopMu.Lock()
	delete(a.stopping, cid)
	a.stopMu.Unlock()
}

func boundOutput(s string) string { return health.Bound(s) }
