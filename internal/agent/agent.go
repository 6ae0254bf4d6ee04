// Package agent is signpost's agent: one per container host, it follows
// the Docker engine and keeps the host's registrations in a backend true as
// containers start and stop.
//
// Lifecycle: Run waits for Docker (with backoff and a clear message), lists
// the running containers, replaces the node's whole registration set in
// one Sync, then follows container events from the time of that list, so
// that nothing falls in the gap. start/restart/unpause register a
// container (after inspecting its current state); die/stop/kill/pause/
// destroy deregister it. On any event-stream error (Docker restarting,
// say) it reconnects with backoff and resyncs. A periodic resync repairs
// anything missed, heartbeats keep the node's lease alive, and a backend
// that lost the node's state (backend.ErrResync) gets a full Sync.
//
// Podman's Docker-compatible API (podman system service) works too: the
// engine's events are read in Docker's words (docker.go: normalize), labels
// are matched by the agent rather than by the engine's event filter, and a
// health_status event without a status is followed up by inspection
// (health_events.go).
//
// On a graceful stop the agent leaves its records by default: they live
// until the node's lease runs out (Config.LeaseTTL), so a restarted agent
// takes them over without DNS ever going empty. Config.DeregisterOnExit
// removes them at once instead, as the original agent did.
//
// # Health checks
//
// Every registered tcp port gets a check (package health), probing the
// address the agent registered (host IP and host port, or container IP and
// port in container mode): by default a TCP connect every 2s
// (Config.Health.Kind; --check), or what the container asks for with
// SERVICE_<port>_CHECK_HTTP=/path (GET, 2xx passes, redirects not
// followed, no proxy), SERVICE_<port>_CHECK_TCP=true or
// SERVICE_<port>_CHECK=none, and _CHECK_INTERVAL / _CHECK_TIMEOUT. A bad
// value is logged once, naming the container and the variable, and the
// default is used. udp ports get no check.
//
// The default is tcp, not http: the original design probed /health on
// every record, but a service without /health would then never be served.
// A connect check is true of any TCP service and still keeps a container
// out of DNS until it listens, and takes it out when it stops listening.
// (It reads for 25ms after connecting, so that Docker's userland proxy,
// which accepts and then closes when nothing listens behind it, does not
// pass.) Choose http fleet-wide (--check=http) only when every service
// serves /health.
//
// An instance with a check is registered pending and served only after
// its first pass; the first probe runs at once and is retried every 250ms
// during the start period (10s), so registration stays fast. A restarted
// agent first asks its backend what it still holds for the node
// (Backend.Known): an instance it holds unchanged (same id, address and
// port), of a container that has not restarted since that health was
// checked, starts its new check in the carried status (passing or
// critical) instead of pending, so that a restart never takes a healthy
// instance out of DNS. After that,
// Failures (3) failures in a row make it critical, Passes (2) passes make
// it passing again: a flapping instance does not bounce. A container's own
// Docker HEALTHCHECK counts too: "unhealthy" makes its instances critical
// whatever signpost's check says, and "starting" holds them back only when
// they have no check of their own.
//
// Health travels to the backend with the instance: the agent writes it
// (Register) on each transition and after a check's first result, not on
// every probe. Health.CheckedAt is the time of the probe that caused the
// write; the periodic full resync (Config.Resync, 60s) carries the latest
// probe time, so CheckedAt is never older than that while the agent runs.
// Writes go through the agent's single loop, so that a late result can
// never bring back an instance that was deregistered meanwhile.
//
// With Config.StopUnhealthy (--stop-unhealthy) the agent stops (docker
// stop, 10s grace) a container when one of its instances goes critical, as
// the original design's Lambda stopped the task, and logs why. Docker's
// restart policy does not restart a container stopped this way; an
// orchestrator replaces it.
//
// # Amazon ECS
//
// With Config.ECSMetadata (--ecs-metadata, on by default in the CLI) the
// labels the ECS agent puts on a task's containers become metadata of
// their instances: ecs_task_arn, ecs_task_family, ecs_task_revision,
// ecs_cluster and ecs_container_name (from com.amazonaws.ecs.task-arn,
// ...task-definition-family, ...task-definition-version, ...cluster and
// ...container-name). Each must fit the registry's limits (a
// "key=value" of at most 255 bytes, one TXT string; 4,096 bytes and 64
// keys in all): one that does not is left out whole, never truncated,
// with a warning naming the container and the label.
//
// In awsvpc network mode a task's containers share the network of its
// pause container (com.amazonaws.ecs.container-name=~internal~ecs~pause,
// never registered), where the task's ENI lives: Docker shows them
// NetworkMode container:<pause id>, no address and no ports. With
// Config.ECSIntrospection (--ecs-introspection http://localhost:51678)
// the agent asks the ECS agent's introspection API
// (GET /v1/tasks?dockerid=<id>, 2s timeout, 1 MiB answer at most) for the
// task's ENI address and the container's ports, and registers each
// service port there with the container port (in awsvpc mode the host
// port is the container port); the health check probes that address. The
// answer is kept per task (by pause container) while the task runs. While
// the endpoint fails, or knows no address for the task yet, the
// container is not registered at all, never with another address: the
// agent warns once per container, naming it and the URL, and retries
// with backoff (1s up to 30s) until the endpoint answers.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Defaults of Config.
const (
	DefaultLeaseTTL = 10 * time.Second
	DefaultResync   = 60 * time.Second
)

// Config is the agent's configuration, plain data.
type Config struct {
	// Node names this host in the registry (default: the hostname).
	Node string
	// Docker is the engine's address ("unix:///var/run/docker.sock",
	// "tcp://host:2376"); empty means DOCKER_HOST or the default socket.
	Docker string
	// AdvertiseIP is the host address registered in host mode: an IP,
	// "ec2" for the EC2 metadata service, or empty to detect it.
	AdvertiseIP string
	// IMDSEndpoint replaces the EC2 metadata service address (tests).
	IMDSEndpoint string
	// LeaseTTL is the node's lease; heartbeats go every LeaseTTL/3.
	LeaseTTL time.Duration
	// Resync is the period of the full resync that repairs anything
	// missed (default 60s).
	Resync time.Duration
	// DeregisterOnExit removes every record of the node on a graceful
	// stop; by default they stay until the lease runs out.
	DeregisterOnExit bool
	// AddressMode is ModeHost (default) or ModeContainer; a container's
	// signpost.address-mode label overrides it.
	AddressMode string
	// Network is the network whose address container mode registers;
	// empty means the container's only network. A container's
	// signpost.network label overrides it.
	Network string
	// Labels limits the agent to containers carrying every one of these
	// labels (an empty value matches any value).
	Labels map[string]string
	// MaxBackoff caps the wait between attempts to reach Docker or the
	// backend (default 10s).
	MaxBackoff time.Duration
	// Health is the default check of a port and the thresholds; zero
	// fields take health's defaults (a TCP connect every 2s, 1s timeout,
	// critical after 3 failures in a row, passing again after 2 passes).
	Health health.Config
	// StopUnhealthy stops a container when one of its instances goes
	// critical (its own check failed Health.Failures times in a row, or
	// its Docker HEALTHCHECK says unhealthy).
	StopUnhealthy bool
	// WithServer says the agent runs in one process with its server
	// (signpost up), which stops with it: on exit the agent does not say
	// that its records stay until the lease runs out; up says what stays.
	WithServer bool
	// ECSMetadata publishes the ECS agent's labels of a task's container
	// (com.amazonaws.ecs.task-arn, ...) as its instances' metadata
	// (ecs_task_arn, ecs_task_family, ecs_task_revision, ecs_cluster,
	// ecs_container_name); one that breaks a registry limit is left out
	// with a warning.
	ECSMetadata bool
	// ECSIntrospection is the ECS agent's introspection endpoint
	// (DefaultECSIntrospection, http://localhost:51678), asked for the
	// address of the containers of awsvpc tasks; empty: off, and those
	// containers are not registered.
	ECSIntrospection string
	// ECSIntrospectionTimeout bounds one introspection request (default
	// DefaultECSIntrospectionTimeout).
	ECSIntrospectionTimeout time.Duration
	// Zone is this host's locality zone (an availability zone, "us-east-1a";
	// a DNS label), published as the metadata key "zone"
	// (registry.MetaZone) of every instance the agent registers, in place
	// of a container's own; empty: none. The DNS server's --locality
	// answers askers in a zone with its instances first.
	Zone string
	// Metrics, when set, gets the health metrics.
	Metrics prometheus.Registerer
	Log     *slog.Logger
}

// Agent follows one Docker engine and writes to one backend.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	be     backend.Backend
	docker dockerAPI
	hostIP netip.Addr

	// Owned by the goroutine that runs follow: what the backend holds for
	// each container id, and what was already said about each container.
	regs  map[string][]registry.Instance
	noted map[string]map[string]bool
	dirty bool // a backend write failed: resync soon
	// learned is set once the backend said what it holds for this node
	// (Backend.Known), before the first sync.
	learned bool
	resync  chan struct{}
	synced  chan struct{} // closed after the first successful Sync
	// dockerHealth is each container's HEALTHCHECK status as last
	// inspected; owned by the loop like regs.
	dockerHealth map[string]dockerHealthState
	// healthRecheck brings back to the loop a health_status event whose
	// result the engine had not recorded yet (recheckHealth).
	healthRecheck chan healthRecheck

	checks  *checks
	metrics *health.Metrics

	// ecs asks ECS introspection for awsvpc tasks' addresses (nil: off);
	// owned by the loop. ecsWaiting says a container waits for its
	// task's address: the loop retries with backoff.
	ecs        *ecsIntrospection
	ecsWaiting bool

	healthMu    sync.Mutex
	dockerErr   error // Docker's last ping failed; nil when it answers
	dockerSince time.Time

	stopMu   sync.Mutex
	runCtx   context.Context
	stopping map[string]bool // containers being stopped for failing
	stopWG   sync.WaitGroup
}

// New checks cfg and returns an agent writing to be. It does not touch
// the network; Run does.
func New(cfg Config, be backend.Backend) (*Agent, error) {
	if be == nil {
		return nil, errors.New("agent: no backend")
	}
	if cfg.Node == "" {
		return nil, errors.New("agent: empty node name")
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("agent: lease TTL %s: want at least 1s", cfg.LeaseTTL)
	}
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Resync < time.Second {
		return nil, fmt.Errorf("agent: resync period %s: want at least 1s", cfg.Resync)
	}
	if cfg.Zone != "" {
		if err := registry.CheckZone(cfg.Zone); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	switch cfg.AddressMode = strings.ToLower(cfg.AddressMode); cfg.AddressMode {
	case "":
		cfg.AddressMode = ModeHost
	case ModeHost, ModeContainer:
	default:
		return nil, fmt.Errorf("agent: address mode %q: want %q or %q", cfg.AddressMode, ModeHost, ModeContainer)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	hc, err := cfg.Health.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cfg.Health = hc
	m, err := health.NewMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if lr, ok := be.(backend.LinkReporter); ok && cfg.Metrics != nil {
		if err := cfg.Metrics.Register(newLinkCollector(lr)); err != nil {
			return nil, fmt.Errorf("agent: register server link metrics: %w", err)
		}
	}
	var ecs *ecsIntrospection
	if cfg.ECSIntrospection != "" {
		if ecs, err = newECSIntrospection(cfg.ECSIntrospection, cfg.ECSIntrospectionTimeout); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if ecs.metrics, err = newECSMetrics(cfg.Metrics); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	d, err := newEngine(cfg.Docker)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:           cfg,
		log:           cfg.Log.With("node", cfg.Node, "backend", be.Name()),
		be:            be,
		docker:        d,
		regs:          map[string][]registry.Instance{},
		noted:         map[string]map[string]bool{},
		resync:        make(chan struct{}, 1),
		synced:        make(chan struct{}),
		dockerHealth:  map[string]dockerHealthState{},
		healthRecheck: make(chan healthRecheck, 64),
		metrics:       m,
		stopping:      map[string]bool{},
		ecs:           ecs,
	}
	a.checks = newChecks(hc, m, a.log)
	a.checks.critical = func(cid, name string, in registry.Instance, tr health.Transition) {
		a.stopUnhealthy(cid, name, fmt.Sprintf("instance %s (%s) failed its check %d times in a row: %s", in.ID, in.Service, tr.Failures, tr.Result.Output))
	}
	return a, nil
}

// Run follows Docker until ctx ends. It returns an error only when it
// cannot start (the advertise address cannot be found, or the backend
// refuses its credentials at the first sync: backend.ErrAuth);
// everything after that is retried.
func (a *Agent) Run(ctx context.Context) error {
	defer a.docker.Close()
	if a.cfg.AddressMode == ModeHost || a.cfg.AdvertiseIP != "" {
		ip, err := ResolveAdvertiseIP(ctx, a.cfg.AdvertiseIP, a.cfg.IMDSEndpoint)
		if err != nil {
			return err
		}
		a.hostIP = ip
	}
	a.log.Info("signpost agent starting", "docker", a.docker.Host(), "advertise_ip", a.hostIP.String(),
		"address_mode", a.cfg.AddressMode, "lease_ttl", a.cfg.LeaseTTL, "resync", a.cfg.Resync, "deregister_on_exit", a.cfg.DeregisterOnExit,
		"check", a.cfg.Health.Default().String(), "check_failures", a.cfg.Health.Failures, "check_passes", a.cfg.Health.Passes,
		"stop_unhealthy", a.cfg.StopUnhealthy, "ecs_metadata", a.cfg.ECSMetadata, "ecs_introspection", a.cfg.ECSIntrospection)
	a.checks.start(ctx)
	a.stopMu.Lock()
	a.runCtx = ctx
	a.stopMu.Unlock()
	defer func() {
		a.checks.stop()
		a.stopMu.Lock()
		a.runCtx = nil // no stop starts after this
		a.stopMu.Unlock()
		a.stopWG.Wait() // before the Docker client closes
	}()

	hbDone := make(chan struct{})
	hbCtx, hbCancel := context.WithCancel(ctx)
	defer hbCancel()
	go func() { defer close(hbDone); a.heartbeats(hbCtx) }()

	bo := newBackoff(200*time.Millisecond, a.cfg.MaxBackoff)
	for ctx.Err() == nil {
		if err := a.waitDocker(ctx); err != nil {
			break
		}
		started := time.Now()
		err := a.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, backend.ErrAuth) {
			// A missing or wrong token: no retry can fix it.
			hbCancel()
			<-hbDone
			return fmt.Errorf("agent: %w", err)
		}
		if time.Since(started) > time.Minute {
			bo.reset()
		}
		d := bo.next()
		a.log.Warn("lost Docker; reconnecting, then resyncing", "docker", a.docker.Host(), "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			break
		}
	}
	<-hbDone
	if a.cfg.DeregisterOnExit {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.be.Release(rctx); err != nil {
			a.log.Error("could not remove this node's records on exit; they go when its lease runs out", "err", err, "lease_ttl", a.cfg.LeaseTTL)
		} else {
			a.log.Info("removed this node's records on exit")
		}
	} else if !a.cfg.WithServer {
		a.log.Info("agent stopped; this node's records stay until its lease runs out unless an agent takes them over", "lease_ttl", a.cfg.LeaseTTL)
	}
	return nil
}

// waitDocker pings the engine until it answers, with backoff.
func (a *Agent) waitDocker(ctx context.Context) error {
	bo := newBackoff(200*time.Millisecond, a.cfg.MaxBackoff)
	var warned time.Time
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := a.docker.Ping(pctx)
		cancel()
		if err == nil {
			a.setDockerErr(nil)
			a.log.Info("connected to Docker", "docker", a.docker.Host(), "api_version", v)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.setDockerErr(err)
		d := bo.next()
		lvl := slog.LevelDebug
		if time.Since(warned) >= DockerWarnEvery {
			lvl, warned = slog.LevelWarn, time.Now() // at a steady pace, whatever the backoff
		}
		a.log.Log(ctx, lvl, "waiting for Docker to answer", "docker", a.docker.Host(), "attempt", attempt, "retry_in", d.Round(time.Millisecond), "err", err)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// hasSynced reports whether a Sync ever succeeded.
func (a *Agent) hasSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

// DockerWarnEvery is how often the agent warns while Docker does not answer.
const DockerWarnEvery = 30 * time.Second

// setDockerErr records whether Docker answers, for Health.
func (a *Agent) setDockerErr(err error) {
	a.healthMu.Lock()
	defer a.healthMu.Unlock()
	switch {
	case err == nil:
		a.dockerErr, a.dockerSince = nil, time.Time{}
	case a.dockerErr == nil:
		a.dockerErr, a.dockerSince = err, time.Now()
	default:
		a.dockerErr = err
	}
}

// Health says whether the agent does its job: nil, or why not (Docker
// does not answer, and since when; or no server of the backend answers).
// Health endpoints report it. Some servers failing while another answers
// is not a failure: Degraded says it.
func (a *Agent) Health() error {
	a.healthMu.Lock()
	dockerErr, since := a.dockerErr, a.dockerSince
	a.healthMu.Unlock()
	if dockerErr != nil {
		return fmt.Errorf("docker at %s unreachable since %s: %w", a.docker.Host(), since.UTC().Format(time.RFC3339), dockerErr)
	}
	failing, _ := a.linksHealth()
	return failing
}

// dockerError marks an error that came from Docker (and so ends the session).
type dockerError struct{ err error }

func (e dockerError) Error() string { return e.err.Error() }
func (e dockerError) Unwrap() error { return e.err }

// follow is one session with Docker: a full sync, then events until the
// stream fails.
func (a *Agent) follow(ctx context.Context) error {
	// Events are asked from a moment before the list, so that whatever
	// happens while listing is replayed; replays are harmless because
	// every start is checked against the container's current state.
	since := time.Now().Add(-time.Second)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := a.fullSync(ctx, "start"); err != nil {
		var de dockerError
		if errors.As(err, &de) || (errors.Is(err, backend.ErrAuth) && !a.hasSynced()) {
			return err
		}
	}
	msgs, errs := a.docker.Events(ctx, since)
	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	retry := newBackoff(time.Second, 30*time.Second)
	var retryC <-chan time.Time
	ecsRetry := newBackoff(time.Second, 30*time.Second)
	var ecsRetryC <-chan time.Time
	for {
		if a.dirty && retryC == nil {
			retryC = time.After(retry.next())
		}
		if a.ecsWaiting && ecsRetryC == nil {
			ecsRetryC = time.After(ecsRetry.next())
		}
		var why string
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-msgs:
			if !ok {
				return <-errs
			}
			a.handle(ctx, ev)
			continue
		case err := <-errs:
			return err
		case <-tick.C:
			why = "periodic"
		case <-a.checks.kick:
			a.applyHealth(ctx)
			continue
		case r := <-a.healthRecheck:
			a.recheckHealth(ctx, r)
			continue
		case <-a.resync:
			why = "backend asked"
		case <-retryC:
			why = "retry after a failed write"
		case <-ecsRetryC:
			why, ecsRetryC = "retry: an awsvpc task's address was unknown", nil
		}
		retryC = nil
		err := a.fullSync(ctx, why)
		if !a.ecsWaiting {
			ecsRetry.reset()
		}
		if err != nil {
			var de dockerError
			if errors.As(err, &de) {
				return err
			}
		} else {
			retry.reset()
		}
	}
}

// fullSync lists and inspects every running container and replaces the
// node's whole set with what they register.
func (a *Agent) fullSync(ctx context.Context, why string) error {
	ids, err := a.docker.Running(ctx, a.cfg.Labels)
	if err != nil {
		return dockerError{err}
	}
	a.ecsWaiting = false // computed again below
	if a.ecs != nil {
		a.ecs.beginSync()
	}
	regs := map[string][]registry.Instance{}
	var all []registry.Instance
	live := map[string]bool{}
	type computed struct {
		c     container
		insts []registry.Instance
		specs []health.Spec
	}
	var found []computed
	for _, id := range ids {
		c, err := a.docker.Inspect(ctx, id)
		if errors.Is(err, errNotFound) {
			a.log.Info("container vanished before it could be inspected; skipped", "container", shortID(id))
			continue
		}
		if err != nil {
			return dockerError{err}
		}
		live[c.ID] = true
		if !c.Running || c.Paused {
			continue
		}
		insts, specs := a.compute(ctx, c)
		if len(insts) > 0 {
			found = append(found, computed{c, insts, specs})
			all = append(all, insts...) // health comes below
		}
	}
	if a.ecs != nil {
		a.ecs.prune(live)
	}
	var carry map[string]registry.Health
	if !a.learned {
		// The agent's first sync: learn what the backend still holds for
		// this node, so that a restart does not take running, healthy
		// instances out while their first check runs.
		known, err := a.be.Known(ctx, all)
		if err != nil {
			a.dirty = true
			a.log.Warn("could not read what the backend holds for this node; retrying before the first sync", "why", why, "err", err)
			return err
		}
		carry, a.learned = known, true
	}
	carried := 0
	for _, f := range found {
		for i := range f.insts {
			h := a.carried(f.c, f.insts[i], carry)
			if h != nil {
				carried++
			}
			a.checks.ensure(f.insts[i], f.specs[i], f.c.ID, f.c.Name, h)
			f.insts[i].Health = a.effectiveHealth(f.insts[i], f.c.ID)
		}
		regs[f.c.ID] = f.insts
	}
	all = all[:0]
	for _, f := range found {
		all = append(all, f.insts...)
	}
	if carry != nil {
		a.log.Info("health carried over from the backend: these instances stay served while their first check runs; the others wait for a pass",
			"carried", carried, "instances", len(all), "known_to_backend", len(carry))
	}
	for id := range a.noted {
		if !live[id] {
			delete(a.noted, id)
		}
	}
	keep := map[string]bool{}
	for _, in := range all {
		keep[in.ID] = true
	}
	a.checks.retain(keep)
	for id := range a.dockerHealth {
		if _, ok := regs[id]; !ok {
			delete(a.dockerHealth, id)
		}
	}
	start := time.Now()
	if err := a.be.Sync(ctx, all); err != nil {
		a.dirty = true
		if !errors.Is(err, backend.ErrAuth) || a.hasSynced() { // else Run stops and says why
			a.log.Warn("sync failed; retrying", "why", why, "instances", len(all), "err", err)
		}
		return err
	}
	a.logSyncChanges(regs, why)
	a.regs, a.dirty = regs, false
	select {
	case <-a.synced:
	default:
		close(a.synced)
	}
	a.log.Info("synced", "why", why, "containers", len(ids), "instances", len(all), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// carried returns the health to carry into a new check of in, from what
// the backend held at the agent's start (carry), or nil: none when the
// backend did not hold it unchanged, when it was not passing or critical,
// or when the container started after that health was last checked (it
// restarted while the agent was down, so it waits for its first pass).
func (a *Agent) carried(c container, in registry.Instance, carry map[string]registry.Health) *registry.Health {
	h, ok := carry[in.ID]
	if !ok || (h.Status != registry.HealthPassing && h.Status != registry.HealthCritical) {
		return nil
	}
	if !h.CheckedAt.IsZero() && c.StartedAt.After(h.CheckedAt) {
		return nil
	}
	return &h
}

// compute returns what a running container registers and the check of
// each instance, and logs the notes about it that were not logged before.
// The caller starts the checks (checks.ensure) and sets each instance's
// health.
func (a *Agent) compute(ctx context.Context, c container) ([]registry.Instance, []health.Spec) {
	if a.ecs != nil && strings.HasPrefix(c.NetworkMode, "container:") && !isECSPause(c.Labels) &&
		conventions.Any(conventions.Input{Env: c.Env, Labels: c.Labels}) {
		var known bool
		if c, known = a.awsvpc(ctx, c); !known {
			return nil, nil
		}
	}
	insts, specs, notes := a.instances(c)
	a.noteDockerHealth(ctx, c, insts)
	seen := a.noted[c.ID]
	for _, n := range notes {
		if seen[n.key] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
			a.noted[c.ID] = seen
		}
		seen[n.key] = true
		lvl := slog.LevelWarn
		if n.info {
			lvl = slog.LevelInfo
		}
		a.log.Log(ctx, lvl, n.msg, n.attrs...)
	}
	return insts, specs
}

// handle acts on one container event.
func (a *Agent) handle(ctx context.Context, ev event) {
	if !a.follows(ev) {
		return
	}
	switch ev.Action {
	case "start", "restart", "unpause":
		a.refresh(ctx, ev.ID, ev.Action)
	case "kill":
		sig, ok := ev.Attrs["signal"]
		if !ok {
			// Podman's kill events name no signal: a reload (HUP) must not
			// take the container out, and a kill that ends it is followed
			// by its die.
			return
		}
		if !terminating(sig) {
			return // HUP, USR1 and the like reload; the container keeps serving
		}
		a.drop(ctx, ev.ID, ev.Action)
	case "die", "stop", "pause":
		a.drop(ctx, ev.ID, ev.Action)
	case "destroy":
		a.drop(ctx, ev.ID, ev.Action)
		delete(a.noted, ev.ID)
	case "health_status":
		a.healthEvent(ctx, ev)
	}
}

// follows reports whether an event concerns a container the agent
// follows: one it registered or took note of, or one whose labels (the
// event's attributes, which carry them on Docker and Podman) match the
// agent's. An unknown container's stop is nothing to act on, so a die
// event without labels (Podman before 4.3, containers/podman#15617) loses
// nothing.
func (a *Agent) follows(ev event) bool {
	if _, ok := a.regs[ev.ID]; ok {
		return true
	}
	if _, ok := a.noted[ev.ID]; ok {
		return true
	}
	return labelsMatch(ev.Attrs, a.cfg.Labels)
}

// terminating reports whether a kill signal ends the container (or may).
func terminating(sig string) bool {
	switch strings.TrimPrefix(strings.ToUpper(sig), "SIG") {
	case "1", "HUP", "10", "USR1", "12", "USR2", "28", "WINCH", "18", "CONT":
		return false
	}
	return true
}

// refresh registers a container as it is now: what it registers comes or
// is updated, what it no longer registers goes.
func (a *Agent) refresh(ctx context.Context, id, action string) {
	if c, ok := a.inspect(ctx, id, action); ok {
		a.update(ctx, c, action)
	}
}

// inspect reads a container for an event; false when it could not (the
// container is gone, and dropped, or the engine failed: a resync follows).
func (a *Agent) inspect(ctx context.Context, id, action string) (container, bool) {
	c, err := a.docker.Inspect(ctx, id)
	if errors.Is(err, errNotFound) {
		a.log.Info("container vanished before it could be inspected; skipped", "container", shortID(id), "event", action)
		a.drop(ctx, id, action)
		return container{}, false
	}
	if err != nil {
		a.log.Warn("inspect failed; the next resync repairs it", "container", shortID(id), "event", action, "err", err)
		a.dirty = true
		return container{}, false
	}
	return c, true
}

// update registers an inspected container as it is now.
func (a *Agent) update(ctx context.Context, c container, action string) {
	id := c.ID
	var insts []registry.Instance
	if c.Running && !c.Paused {
		var specs []health.Spec
		insts, specs = a.compute(ctx, c)
		for i := range insts {
			a.checks.ensure(insts[i], specs[i], c.ID, c.Name, nil)
			insts[i].Health = a.effectiveHealth(insts[i], c.ID)
		}
	}
	keep := map[string]bool{}
	for _, in := range insts {
		keep[in.ID] = true
	}
	old := a.regs[id]
	var left []registry.Instance
	for _, in := range old {
		if keep[in.ID] {
			continue
		}
		a.checks.remove(in.ID)
		if err := a.be.Deregister(ctx, in); err != nil {
			a.writeFailed(ctx, err, "deregister", c.Name, in)
			left = append(left, in)
			continue
		}
		a.logChange("instance deregistered", in, "event "+action)
	}
	had := map[string]bool{}
	for _, in := range old {
		had[in.ID] = true
	}
	done := left
	for _, in := range insts {
		if err := a.be.Register(ctx, in); err != nil {
			a.writeFailed(ctx, err, "register", c.Name, in)
			if isResync(err) {
				return // the full sync that follows registers everything
			}
			continue
		}
		done = append(done, in)
		if !had[in.ID] {
			a.logChange("instance registered", in, "event "+action)
		} else {
			a.log.Debug("registered", "container", c.Name, "service", in.Service, "id", in.ID, "address", in.Address, "port", in.Port, "health", in.Health.Status, "event", action)
		}
	}
	if len(done) == 0 {
		delete(a.regs, id)
	} else {
		a.regs[id] = done
	}
}

// logSyncChanges logs what a full sync registered or removed compared
// with what the agent held before it.
func (a *Agent) logSyncChanges(regs map[string][]registry.Instance, why string) {
	before := map[string]registry.Instance{}
	for _, list := range a.regs {
		for _, in := range list {
			before[in.ID] = in
		}
	}
	for _, list := range regs {
		for _, in := range list {
			if _, ok := before[in.ID]; !ok {
				a.logChange("instance registered", in, "sync: "+why)
			}
			delete(before, in.ID)
		}
	}
	for _, in := range before {
		a.logChange("instance deregistered", in, "sync: "+why+": its container no longer runs or registers it")
	}
}

// logChange logs one registration or deregistration at INFO: the
// container, the service, the address:port and why.
func (a *Agent) logChange(msg string, in registry.Instance, why string) {
	a.log.Info(msg, "container", in.Container, "service", in.Service, "address", netip.AddrPortFrom(in.Address, in.Port).String(),
		"id", in.ID, "health", in.Health.Status, "why", why)
}

// drop deregisters everything a container registered.
func (a *Agent) drop(ctx context.Context, id, action string) {
	old := a.regs[id]
	for _, in := range old {
		a.checks.remove(in.ID)
	}
	delete(a.dockerHealth, id)
	a.stopped(id)
	if len(old) == 0 {
		return
	}
	var left []registry.Instance
	for _, in := range old {
		if err := a.be.Deregister(ctx, in); err != nil {
			a.writeFailed(ctx, err, "deregister", in.Container, in)
			left = append(left, in)
			continue
		}
		a.logChange("instance deregistered", in, "event "+action)
	}
	if len(left) == 0 {
		delete(a.regs, id)
	} else {
		a.regs[id] = left
	}
}

// writeFailed logs a failed backend write and arranges the repair: a full
// sync at once when the backend lost the node, a retried one otherwise.
func (a *Agent) writeFailed(ctx context.Context, err error, op, container string, in registry.Instance) {
	if errors.Is(err, backend.ErrResync) {
		a.log.Info("backend lost this node's registrations; resyncing", "op", op, "container", container, "id", in.ID)
		a.requestResync()
		return
	}
	a.dirty = true
	a.log.Warn("backend write failed; will resync", "op", op, "container", container, "service", in.Service, "id", in.ID, "err", err)
}

func isResync(err error) bool { return errors.Is(err, backend.ErrResync) }

func (a *Agent) requestResync() {
	select {
	case a.resync <- struct{}{}:
	default:
	}
}

// heartbeats renew the node's lease every LeaseTTL/3 once the first Sync
// has made one.
func (a *Agent) heartbeats(ctx context.Context) {
	select {
	case <-a.synced:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(a.cfg.LeaseTTL / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, a.cfg.LeaseTTL/3)
		err := a.be.Heartbeat(hctx)
		cancel()
		switch {
		case err == nil:
			if failing {
				a.log.Info("heartbeats reach the backend again")
			}
			failing = false
		case errors.Is(err, backend.ErrResync):
			a.log.Warn("node lease lost; resyncing", "err", err)
			a.requestResync()
		case ctx.Err() != nil:
			return
		default:
			if !failing {
				a.log.Warn("heartbeat failed; the lease expires after its TTL unless one gets through", "lease_ttl", a.cfg.LeaseTTL, "err", err)
			}
			failing = true
		}
	}
}

// backoff is an exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur *= 2
	if b.cur > b.max {
		b.cur = b.max
	}
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.cur = b.min }

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
