// Package dockerfake is a fake Docker Engine API server on a unix socket,
// good enough that the real signpost agent, through the official moby
// client, runs against it unchanged.
//
// It serves what the agent asks of an engine, in the JSON shapes of the
// moby api module (github.com/moby/moby/api/types/...):
//
//   - GET/HEAD /_ping, with the headers a real engine sends (Api-Version,
//     Ostype, Server, Docker-Experimental, Builder-Version, Swarm), so that
//     the client's API version negotiation works;
//   - GET /version and GET /info;
//   - GET /containers/json, with the filters label=k, label=k=v,
//     status=<state>, id and name, and all=1;
//   - GET /containers/{id}/json (by id, id prefix or name; 404 with
//     Docker's JSON error body when unknown);
//   - POST /containers/{id}/stop (204; 304 when not running; 404);
//   - GET /events with since, until and filters (type, event, label,
//     container): newline-delimited JSON, flushed per event, replaying the
//     held events from since, then following.
//
// Every path may carry a version prefix (/v1.41/...). As a real engine, a
// version below Config.MinAPIVersion or above Config.APIVersion answers
// 400 with the daemon's message ("client version 1.41 is too old. Minimum
// supported API version is 1.44, ..."). Anything else answers 404
// {"message":"page not found"} and is counted (Unhandled) and logged, so
// that a test sees what a client asked that the fake does not serve.
//
// The shape of events follows the version of the request, as the engine's
// does: below API 1.52 an event carries the legacy top-level status, id and
// from beside Type, Action, Actor, scope, time and timeNano; from 1.52 on
// (Docker 29) only the latter.
//
// Tests script the engine with Start, Stop, Signal, SetHealth, Remove and
// Restart; all are safe for concurrent use.
//
// With Config.Podman the events are Podman 4.3's where they differ from
// Docker's (podman.go): its event filter, stop and remove events, and
// health_status events without the status, sent before the result.
//
// Bounds: the fake holds the last Config.MaxEvents events (default
// 10,000) for replay, and serves at most Config.MaxStreams event streams
// at once (default 64); one more answers 503 with a JSON message. A stream
// that falls further behind than MaxEvents skips what was dropped. The
// request log keeps counts per method and path only.
package dockerfake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
)

// Defaults of Config.
const (
	DefaultAPIVersion = "1.52"
	DefaultMaxEvents  = 10000
	DefaultMaxStreams = 64
)

// Config is the fake engine's configuration, plain data.
type Config struct {
	// APIVersion is the highest API version the engine serves and the one
	// it reports in /_ping (default DefaultAPIVersion).
	APIVersion string
	// MinAPIVersion is the lowest version it serves; empty takes what the
	// engine of APIVersion accepts by default: 1.44 from 1.52 on (Docker
	// 29), 1.24 from 1.44 on (Docker 25), 1.12 below.
	MinAPIVersion string
	// EngineVersion is the engine's own version (/version, the Server
	// header); empty takes a plausible one for APIVersion.
	EngineVersion string
	// Socket is the unix socket path; empty makes one in a new temporary
	// directory, removed by Close.
	Socket string
	// MaxEvents caps the events held for replay (default DefaultMaxEvents).
	MaxEvents int
	// MaxStreams caps the event streams served at once (default
	// DefaultMaxStreams).
	MaxStreams int
	// Log gets one line per request the fake does not serve (default:
	// discarded).
	Log *slog.Logger
	// Podman makes the engine's events differ from Docker's as Podman
	// 4.3's do (see podman.go): its event filter, stop and remove events,
	// and status-less health_status events sent before the result.
	Podman bool
}

// Container is a container a test starts.
type Container struct {
	// ID is the container id; empty makes a 64-hex one.
	ID string
	// Name is the name without the leading slash; empty takes one from ID.
	Name string
	// Image is the image name (default "busybox").
	Image  string
	Labels map[string]string
	Env    []string
	// Ports are the exposed ports ("8080/tcp", "53/udp").
	Ports []string
	// Bindings are the published host ports of container ports
	// (NetworkSettings.Ports and HostConfig.PortBindings).
	Bindings network.PortMap
	// NetworkMode is HostConfig.NetworkMode (default "bridge").
	NetworkMode string
	// Networks maps network names to the container's IPv4 or IPv6 address
	// there (default: bridge, 172.17.0.2).
	Networks map[string]netip.Addr
	// Health is the container's HEALTHCHECK status at start: "" (none),
	// "starting", "healthy" or "unhealthy".
	Health string
}

// state is one container as the engine keeps it.
type state struct {
	spec       Container
	running    bool
	status     container.ContainerState
	created    time.Time
	startedAt  time.Time
	finishedAt time.Time
	exitCode   int
	health     *container.Health
}

// Server is a fake Docker engine.
type Server struct {
	cfg     Config
	dir     string // temporary directory to remove, if any
	ln      net.Listener
	hs      *http.Server
	log     *slog.Logger
	closed  chan struct{}
	closeMu sync.Once
	wg      sync.WaitGroup

	mu         sync.Mutex
	apiVersion string
	minVersion string
	engineVer  string
	containers map[string]*state
	order      []string // ids in creation order
	held       []events.Message
	firstSeq   uint64        // sequence number of held[0]
	changed    chan struct{} // closed and replaced on every event
	restarted  chan struct{} // closed and replaced by Restart
	streams    int
	requests   map[string]int
	unhandled  map[string]int
	lastTime   int64
}

// New starts a fake engine listening on a unix socket.
func New(cfg Config) (*Server, error) {
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultAPIVersion
	}
	if !validVersion(cfg.APIVersion) {
		return nil, fmt.Errorf("dockerfake: API version %q: want major.minor", cfg.APIVersion)
	}
	if cfg.MinAPIVersion != "" && !validVersion(cfg.MinAPIVersion) {
		return nil, fmt.Errorf("dockerfake: minimum API version %q: want major.minor", cfg.MinAPIVersion)
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Log,
		closed:     make(chan struct{}),
		containers: map[string]*state{},
		changed:    make(chan struct{}),
		restarted:  make(chan struct{}),
		requests:   map[string]int{},
		unhandled:  map[string]int{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.setVersions(cfg.APIVersion, cfg.MinAPIVersion, cfg.EngineVersion)
	sock := cfg.Socket
	if sock == "" {
		dir, err := os.MkdirTemp("", "dockerfake")
		if err != nil {
			return nil, fmt.Errorf("dockerfake: socket directory: %w", err)
		}
		s.dir = dir
		sock = filepath.Join(dir, "docker.sock")
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
		return nil, fmt.Errorf("dockerfake: listen on %s: %w", sock, err)
	}
	s.ln = ln
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.hs.Serve(ln)
	}()
	return s, nil
}

// setVersions sets the versions the engine reports; s.mu held or not yet
// shared.
func (s *Server) setVersions(apiVersion, minVersion, engineVersion string) {
	if minVersion == "" {
		switch {
		case !versionLess(apiVersion, "1.52"):
			minVersion = "1.44"
		case !versionLess(apiVersion, "1.44"):
			minVersion = "1.24"
		default:
			minVersion = "1.12"
		}
	}
	if engineVersion == "" {
		engineVersion = engineVersionFor(apiVersion)
	}
	s.apiVersion, s.minVersion, s.engineVer = apiVersion, minVersion, engineVersion
}

// engineVersionFor is a plausible engine release for an API version.
func engineVersionFor(v string) string {
	known := map[string]string{
		"1.40": "19.03.15", "1.41": "20.10.24", "1.42": "23.0.6", "1.43": "24.0.9",
		"1.44": "25.0.5", "1.45": "26.1.4", "1.46": "27.1.2", "1.47": "27.5.1",
		"1.48": "28.0.4", "1.49": "28.1.1", "1.50": "28.3.3", "1.51": "28.5.1",
		"1.52": "29.0.0",
	}
	if e, ok := known[v]; ok {
		return e
	}
	return "29.0.0"
}

// Addr is the engine's address for a Docker client: "unix:///path".
func (s *Server) Addr() string { return "unix://" + s.ln.Addr().String() }

// Socket is the path of the engine's unix socket.
func (s *Server) Socket() string { return s.ln.Addr().String() }

// APIVersion is the API version the engine reports now.
func (s *Server) APIVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiVersion
}

// Close stops the engine: event streams end, the socket goes.
func (s *Server) Close() error {
	var err error
	s.closeMu.Do(func() {
		close(s.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err = s.hs.Shutdown(ctx); err != nil {
			err = errors.Join(err, s.hs.Close())
		}
		s.wg.Wait()
		if s.dir != "" {
			err = errors.Join(err, os.RemoveAll(s.dir))
		}
	})
	return err
}

// Restart simulates an engine restart, as for an upgrade or a downgrade:
// every event stream ends, and the engine then reports apiVersion
// (minVersion and engineVersion empty take their defaults for it). The
// containers and held events stay.
func (s *Server) Restart(apiVersion, minVersion, engineVersion string) error {
	if !validVersion(apiVersion) || (minVersion != "" && !validVersion(minVersion)) {
		return fmt.Errorf("dockerfake: restart at API %q (minimum %q): want major.minor", apiVersion, minVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setVersions(apiVersion, minVersion, engineVersion)
	close(s.restarted)
	s.restarted = make(chan struct{})
	return nil
}

// Requests counts the requests the engine got, by "METHOD /path" (the
// path as sent, with its version prefix, without the query).
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.requests)
}

// Unhandled counts the requests the engine answered 404 "page not found",
// by "METHOD /path".
func (s *Server) Unhandled() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.unhandled)
}

// Streams is the number of event streams open now.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams
}

// Events is a copy of the events the engine holds, oldest first.
func (s *Server) Events() []events.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.held)
}

// Running lists the ids of the running containers, in creation order.
func (s *Server) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, id := range s.order {
		if s.containers[id].running {
			ids = append(ids, id)
		}
	}
	return ids
}
