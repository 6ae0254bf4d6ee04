package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend"
	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/buildinfo"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/server"
)

func init() {
	commands["agent"] = command{"follow Docker on this host and keep its containers registered", runAgent}
}

// agentOptions are the agent's flags, shared by `agent` and `up`.
type agentOptions struct {
	cfg     agent.Config
	backend string
	labels  stringList
	check   string
	metrics string
	// sharedTTL is the server's --lease-ttl, which `up` shares with its agent.
	sharedTTL *flag.Flag
	// route53 builds the Route 53 backend's configuration; nil when the
	// command has no Route 53 flags (`up` runs the server backend only).
	route53  func(*slog.Logger) route53backend.Config
	hostname string
	// agent is the running agent, for --metrics' /healthz (nil before).
	agent atomic.Pointer[agent.Agent]
}

// addRoute53Flags adds the flags of --backend route53 (`signpost agent`
// only: `up` has its own server, and its --zone is that server's).
func (o *agentOptions) addRoute53Flags(fs *flag.FlagSet) {
	o.route53 = route53Flags(fs)
	fs.StringVar(&o.hostname, "hostname", "", "route53: this host's name: the SRV target, the SetIdentifier prefix of every record it owns, and (first label) its A record (default: --node)")
}

// agentFlags registers the agent's own flags (not --server and
// --token-file, which `up` does not take) on fs.
func agentFlags(fs *flag.FlagSet) *agentOptions {
	o := &agentOptions{}
	host, _ := os.Hostname()
	fs.StringVar(&o.backend, "backend", "server", "where registrations go: server (the signpost server API), or route53 (a Route 53 hosted zone; signpost agent only, not up)")
	fs.StringVar(&o.cfg.Docker, "docker", os.Getenv("DOCKER_HOST"), "Docker engine address (default: DOCKER_HOST, else unix:///var/run/docker.sock)")
	fs.StringVar(&o.cfg.Node, "node", host, "this host's node name in the registry")
	fs.StringVar(&o.cfg.AdvertiseIP, "advertise-ip", "", `address registered for published ports: an IP, "ec2" for the EC2 metadata service's local-ipv4, or empty to detect it from the default-route interface`)
	if o.sharedTTL = fs.Lookup("lease-ttl"); o.sharedTTL == nil {
		fs.DurationVar(&o.cfg.LeaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "node lease TTL: if the agent dies, its records go after this long; heartbeats go every TTL/3")
	}
	fs.DurationVar(&o.cfg.Resync, "resync", agent.DefaultResync, "period of the full resync with Docker that repairs anything missed")
	fs.BoolVar(&o.cfg.DeregisterOnExit, "deregister-on-exit", false, "on a graceful stop, remove this node's records at once (default: leave them until the lease runs out, so a restarted agent takes them over with no gap)")
	fs.StringVar(&o.cfg.AddressMode, "address-mode", agent.ModeHost, `"host": the host's address and the published port; "container": the container's address on --network and the container port (per container: label signpost.address-mode)`)
	fs.StringVar(&o.cfg.Zone, "node-zone", "", `this host's locality zone, e.g. its AWS availability zone "us-east-1a" (a DNS label), published as the metadata "zone" of every instance it registers; servers with --locality answer askers in that zone with these first (default: none)`)
	fs.StringVar(&o.cfg.Network, "network", "", "network whose container address container mode registers (default: the container's only network; per container: label signpost.network)")
	fs.Var(&o.labels, "only-label", "follow only containers with this label, KEY or KEY=VALUE (repeatable)")
	fs.StringVar(&o.check, "check", string(health.DefaultKind), "default health check of a tcp port whose container names none (SERVICE_<port>_CHECK_HTTP=/path, _CHECK_TCP=true, _CHECK=none): tcp (a connect), http (GET /health, 2xx passes) or none")
	fs.DurationVar(&o.cfg.Health.Interval, "check-interval", health.DefaultInterval, "default interval between checks (per port: SERVICE_<port>_CHECK_INTERVAL)")
	fs.DurationVar(&o.cfg.Health.Timeout, "check-timeout", health.DefaultTimeout, "default timeout of one check, at most the interval (per port: SERVICE_<port>_CHECK_TIMEOUT)")
	fs.IntVar(&o.cfg.Health.Failures, "check-failures", health.DefaultFailures, "failures in a row that make an instance critical (out of DNS)")
	fs.IntVar(&o.cfg.Health.Passes, "check-passes", health.DefaultPasses, "passes in a row that bring a critical instance back")
	fs.DurationVar(&o.cfg.Health.StartPeriod, "check-start-period", health.DefaultStartPeriod, "after a container starts, how long its check is retried every 250ms without counting failures")
	fs.BoolVar(&o.cfg.StopUnhealthy, "stop-unhealthy", false, "stop a container when one of its instances goes critical (its check failed --check-failures times in a row, or its Docker HEALTHCHECK says unhealthy)")
	fs.BoolVar(&o.cfg.ECSMetadata, "ecs-metadata", true, "publish the ECS agent's labels of a task's containers as metadata: ecs_task_arn, ecs_task_family, ecs_task_revision, ecs_cluster, ecs_container_name (a value that breaks a registry limit is left out, with a warning)")
	fs.StringVar(&o.cfg.ECSIntrospection, "ecs-introspection", "", `ECS agent introspection endpoint asked for the address of the containers of awsvpc tasks: `+agent.DefaultECSIntrospection+` on an ECS container instance (the agent needs host networking to reach it); empty: off, and those containers are not registered`)
	fs.StringVar(&o.metrics, "metrics", "", "address to serve the agent's Prometheus metrics on, at /metrics, and its health at /healthz (e.g. 127.0.0.1:9153; empty: off)")
	return o
}

// config finishes the agent's configuration.
func (o *agentOptions) config(log *slog.Logger) (agent.Config, error) {
	cfg := o.cfg
	cfg.Log = log
	if o.sharedTTL != nil {
		if g, ok := o.sharedTTL.Value.(flag.Getter); ok {
			cfg.LeaseTTL, _ = g.Get().(time.Duration)
		}
	}
	if o.backend == "server" && cfg.LeaseTTL < time.Second {
		return cfg, usagef("--lease-ttl %s: want at least 1s", cfg.LeaseTTL)
	}
	if cfg.AddressMode != agent.ModeHost && cfg.AddressMode != agent.ModeContainer {
		return cfg, usagef("--address-mode %q: want %q or %q", cfg.AddressMode, agent.ModeHost, agent.ModeContainer)
	}
	if cfg.ECSIntrospection != "" {
		if err := agent.CheckECSIntrospection(cfg.ECSIntrospection); err != nil {
			return cfg, usagef("--ecs-introspection: %v", err)
		}
	}
	k, err := health.ParseKind(o.check)
	if err != nil {
		return cfg, usagef("--check: %v", err)
	}
	cfg.Health.Kind = k
	if _, err := cfg.Health.WithDefaults(); err != nil {
		return cfg, usagef("--check-*: %v", err)
	}
	switch {
	case o.backend == "server":
	case o.backend == "route53" && o.route53 != nil:
	case o.route53 != nil:
		return cfg, usagef("--backend %q: want server or route53", o.backend)
	default:
		return cfg, usagef("--backend %q: want server (route53 is `signpost agent --backend route53`)", o.backend)
	}
	if cfg.ECSIntrospection != "" && o.backend == "route53" {
		// The original layout's SRV records point at the host's name, so
		// a task's own ENI address could not be published.
		return cfg, usagef("--ecs-introspection with --backend route53: the Route 53 layout points every SRV record at the host's name, never at an awsvpc task's own address (use --backend server)")
	}
	if cfg.Node == "" {
		return cfg, fmt.Errorf("--node: empty, and the hostname is unknown")
	}
	for _, l := range o.labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return cfg, usagef("--only-label %q: want KEY or KEY=VALUE", l)
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[k] = v
	}
	return cfg, nil
}

// parseLogged adds the log flags to fs, parses args and returns the logger.
func parseLogged(fs *flag.FlagSet, args []string) (*slog.Logger, error) {
	mkLog := logFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return mkLog()
}

// serverBackend is the backend that writes to the signpost servers at
// urls (the first preferred, failing over to the others).
func serverBackend(urls []string, token, node string, ttl time.Duration) (backend.Backend, error) {
	c, err := apiclient.NewServers(urls, token)
	if err != nil {
		return nil, err
	}
	return serverbackend.New(c, node, ttl)
}

func runAgent(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("agent", "[flags]")
	opts := agentFlags(fs)
	opts.addRoute53Flags(fs)
	srv := serverFlag(fs)
	tokenFile := fs.String("token-file", credentialToken(), "file holding the API bearer token"+tokenFileHelp)
	log, err := parseLogged(fs, args)
	if err != nil {
		return err
	}
	cfg, err := opts.config(log)
	if err != nil {
		return err
	}
	var be backend.Backend
	var r53 *route53backend.Backend
	switch opts.backend {
	case "route53":
		if r53, err = opts.route53Backend(ctx, cfg, log); err != nil {
			return err
		}
		be = r53
	default:
		token := ""
		if *tokenFile != "" {
			if token, err = server.ReadToken(*tokenFile); err != nil {
				return err
			}
		}
		urls, err := srv.URLs()
		if err != nil {
			return usagef("--server: %v", err)
		}
		if be, err = serverBackend(urls, token, cfg.Node, cfg.LeaseTTL); err != nil {
			return err
		}
	}
	if r53 != nil {
		// Write what is queued before exiting; the records stay (Route 53
		// has no leases) unless --deregister-on-exit removed them.
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if cerr := r53.Close(cctx); cerr != nil {
				log.Error("route53: changes queued at exit were not all written; the next agent's resync repairs them", "zone", r53.Zone().Name(), "err", cerr)
			}
		}()
	}
	if cfg.Metrics, err = opts.serveMetrics(ctx, log); err != nil {
		return err
	}
	a, err := agent.New(cfg, be)
	if err != nil {
		return err
	}
	opts.agent.Store(a)
	return a.Run(ctx)
}

// route53Backend builds the Route 53 backend of `agent --backend route53`:
// the hostname defaults to the node name, the host record's address to
// --advertise-ip when that is an IP (otherwise the address the agent
// detects, from the first instance registered).
func (o *agentOptions) route53Backend(ctx context.Context, cfg agent.Config, log *slog.Logger) (*route53backend.Backend, error) {
	rcfg := o.route53(log.With("backend", "route53"))
	rcfg.Hostname = o.hostname
	if rcfg.Hostname == "" {
		rcfg.Hostname = cfg.Node
	}
	if ip, err := netip.ParseAddr(strings.TrimSpace(cfg.AdvertiseIP)); err == nil {
		rcfg.HostAddress = ip
	}
	b, err := route53backend.New(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("--backend route53 (zone %q, zone id %q, host %q): %w", rcfg.Zone, rcfg.ZoneID, rcfg.Hostname, err)
	}
	return b, nil
}

// healthz answers the agent's health: 200 "ok"; 200 "degraded" with a
// warning while some of its servers fail and another carries its writes;
// or 503 and why (Docker does not answer, or no server does). With the
// server backend it lists the servers: state, current, since, last error.
func (o *agentOptions) healthz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"status": "ok"}
	status := http.StatusOK
	if a := o.agent.Load(); a == nil {
		body["status"], status = "starting", http.StatusServiceUnavailable
	} else {
		if err := a.Health(); err != nil {
			body["status"], body["error"], status = "degraded", err.Error(), http.StatusServiceUnavailable
		} else if err := a.Degraded(); err != nil {
			body["status"], body["warning"] = "degraded", err.Error()
		}
		if l, ok := a.Links(); ok {
			body["servers"], body["failovers"] = l.Servers, l.Failovers
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// serveMetrics serves the agent's metrics on --metrics until ctx ends
// (and its health at /healthz), and
// returns the registry to fill; nil when --metrics is empty. The listener
// is bound before it returns, so that a taken port fails the command.
func (o *agentOptions) serveMetrics(ctx context.Context, log *slog.Logger) (prometheus.Registerer, error) {
	if o.metrics == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	if err := buildinfo.Register(reg); err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	l, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return nil, fmt.Errorf("--metrics %q: %w", o.metrics, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", o.healthz)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("agent metrics listener failed", "addr", o.metrics, "err", err)
		}
	}()
	log.Info("serving agent metrics", "addr", "http://"+l.Addr().String()+"/metrics")
	return reg, nil
}
