package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
)

// This file is the only one that speaks Docker's types: everything else in
// the agent works on the plain container and event structs below.

// container is what the agent needs to know of one container.
type container struct {
	ID      string
	Name    string
	Running bool
	Paused  bool
	Env     []string
	Labels  map[string]string
	// NetworkMode is "host", "none", "container:<id>", "bridge" or a
	// network name.
	NetworkMode string
	// Ports are the exposed and published ports.
	Ports []conventions.ContainerPort
	// Bindings are the published host ports of each container port.
	Bindings map[conventions.ContainerPort][]binding
	// Networks maps each network the container is on to its address there.
	Networks map[string]netip.Addr
	// DockerHealth is the status of the container's own HEALTHCHECK:
	// "starting", "healthy", "unhealthy", or "" when it has none.
	DockerHealth string
	// DockerHealthOutput is the output of its last HEALTHCHECK run.
	DockerHealthOutput string
	// DockerHealthAt is when that run ended.
	DockerHealthAt time.Time
	// StartedAt is when the container last started (zero if unknown).
	StartedAt time.Time
	// TaskAddr is, for a container of an ECS awsvpc task, its task's ENI
	// address, from ECS introspection (not Docker); registered with the
	// container port.
	TaskAddr netip.Addr
	// PortsFromConfig says the engine's inspect reported no published
	// ports, so Ports and Bindings come from what the container asked
	// for (HostConfig.PortBindings): an ephemeral host port is unknown.
	PortsFromConfig bool
}

// binding is one published host port.
type binding struct {
	HostIP   netip.Addr // zero or unspecified: every host address
	HostPort uint16
}

// event is one container event, in Docker's vocabulary whichever engine
// sent it (see normalize).
type event struct {
	Action string
	ID     string
	Attrs  map[string]string
	Time   time.Time
	// Health is the HEALTHCHECK status a health_status event reports
	// ("healthy", ...), or "" when it reports none (Podman 4's carries
	// no status: the container must be inspected).
	Health string
}

// errNotFound marks a container that no longer exists.
var errNotFound = errors.New("no such container")

// dockerAPI is the slice of the Docker Engine API the agent uses.
type dockerAPI interface {
	// Ping checks that the engine answers and negotiates the API version.
	Ping(ctx context.Context) (apiVersion string, err error)
	// Running lists the ids of the running containers that carry every
	// label in labels.
	Running(ctx context.Context, labels map[string]string) ([]string, error)
	// Inspect reads one container; errNotFound (wrapped) when it is gone.
	Inspect(ctx context.Context, id string) (container, error)
	// Events streams the container events the agent follows (see
	// followedActions), normalized, from since (replaying what the engine
	// still holds) until ctx ends or the stream fails. They are not
	// filtered by label: Podman cannot (see Events), so the agent does.
	Events(ctx context.Context, since time.Time) (<-chan event, <-chan error)
	// Stop stops a container (SIGTERM, then SIGKILL after timeout).
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Host says which engine this is, for logs.
	Host() string
	Close() error
}

// engine implements dockerAPI with the official Docker Go client.
type engine struct {
	c *client.Client
}

// newEngine returns a client of the engine at host ("unix:///var/run/docker.sock",
// "tcp://..."); empty means DOCKER_HOST or the default socket. The API
// version is negotiated with the engine on every Ping, so it follows an
// engine that is upgraded or downgraded under it.
func newEngine(host string) (*engine, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	return &engine{c: c}, nil
}

func (e *engine) Host() string { return e.c.DaemonHost() }

func (e *engine) Close() error { return e.c.Close() }

func (e *engine) Ping(ctx context.Context) (string, error) {
	p, err := e.c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true, ForceNegotiate: true})
	if err != nil {
		return "", fmt.Errorf("ping docker at %s: %w", e.Host(), err)
	}
	return e.c.ClientVersion() + " (engine " + p.APIVersion + ")", nil
}

func labelFilters(f client.Filters, labels map[string]string) client.Filters {
	for k, v := range labels {
		if v == "" {
			f.Add("label", k)
		} else {
			f.Add("label", k+"="+v)
		}
	}
	return f
}

func (e *engine) Running(ctx context.Context, labels map[string]string) ([]string, error) {
	res, err := e.c.ContainerList(ctx, client.ContainerListOptions{Filters: labelFilters(make(client.Filters), labels)})
	if err != nil {
		return nil, fmt.Errorf("list containers at %s: %w", e.Host(), err)
	}
	ids := make([]string, 0, len(res.Items))
	for _, it := range res.Items {
		ids = append(ids, it.ID)
	}
	return ids, nil
}

func (e *engine) Inspect(ctx context.Context, id string) (container, error) {
	res, err := e.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return container{}, fmt.Errorf("inspect container %s: %w: %w", shortID(id), errNotFound, err)
		}
		return container{}, fmt.Errorf("inspect container %s: %w", shortID(id), err)
	}
	r := res.Container
	c := container{
		ID:       r.ID,
		Name:     strings.TrimPrefix(r.Name, "/"),
		Bindings: map[conventions.ContainerPort][]binding{},
		Networks: map[string]netip.Addr{},
	}
	if r.State != nil {
		c.Running, c.Paused = r.State.Running, r.State.Paused
		if t, err := time.Parse(time.RFC3339Nano, r.State.StartedAt); err == nil {
			c.StartedAt = t
		}
		if h := r.State.Health; h != nil && h.Status != "" && h.Status != "none" {
			c.DockerHealth = string(h.Status)
			if n := len(h.Log); n > 0 && h.Log[n-1] != nil {
				c.DockerHealthOutput = strings.TrimSpace(h.Log[n-1].Output)
				c.DockerHealthAt = h.Log[n-1].End
			}
		}
	}
	if r.Config != nil {
		c.Env, c.Labels = r.Config.Env, r.Config.Labels
		for p := range r.Config.ExposedPorts {
			c.Ports = append(c.Ports, conventions.ContainerPort{Port: p.Num(), Proto: string(p.Proto())})
		}
	}
	if r.HostConfig != nil {
		c.NetworkMode = string(r.HostConfig.NetworkMode)
	}
	ports := network.PortMap(nil)
	if ns := r.NetworkSettings; ns != nil {
		ports = ns.Ports
	}
	if len(ports) == 0 && r.HostConfig != nil && len(r.HostConfig.PortBindings) > 0 && c.NetworkMode != "host" {
		// Podman 2.0 answered inspect with null NetworkSettings.Ports
		// (containers/podman#6803): what was asked for is all there is to
		// go by. A fixed host port is known; an ephemeral one is not
		// (instances says so).
		ports, c.PortsFromConfig = r.HostConfig.PortBindings, true
	}
	for p, bs := range ports {
		cp := conventions.ContainerPort{Port: p.Num(), Proto: string(p.Proto())}
		c.Ports = append(c.Ports, cp)
		for _, b := range bs {
			hp, err := strconv.ParseUint(b.HostPort, 10, 16)
			if err != nil || hp == 0 {
				continue
			}
			c.Bindings[cp] = append(c.Bindings[cp], binding{HostIP: b.HostIP.Unmap(), HostPort: uint16(hp)})
		}
	}
	if ns := r.NetworkSettings; ns != nil {
		for name, ep := range ns.Networks {
			if ep == nil {
				continue
			}
			switch {
			case ep.IPAddress.IsValid():
				c.Networks[name] = ep.IPAddress.Unmap()
			case ep.GlobalIPv6Address.IsValid():
				c.Networks[name] = ep.GlobalIPv6Address
			}
		}
	}
	sort.Slice(c.Ports, func(i, j int) bool {
		if c.Ports[i].Port != c.Ports[j].Port {
			return c.Ports[i].Port < c.Ports[j].Port
		}
		return c.Ports[i].Proto < c.Ports[j].Proto
	})
	return c, nil
}

func (e *engine) Stop(ctx context.Context, id string, timeout time.Duration) error {
	secs := int(timeout.Round(time.Second) / time.Second)
	if _, err := e.c.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stop container %s: %w", shortID(id), err)
	}
	return nil
}

// followedActions are the container events the agent asks the engine
// for, in one "event" filter whose values Docker and Podman both OR
// (Podman before 3.2 ANDed them, containers/podman#10507, and could never
// match two events: the agent needs 3.2 or later). Docker matches
// "health_status" against "health_status: healthy" and the like. The
// Podman names: its filter matches "died", not "die", though its stream
// says die (containers/podman#16857; before 3.2 it said died too,
// #10168), and it says "remove" where Docker says destroy. An engine
// ignores a name it never sends.
var followedActions = []string{"start", "restart", "unpause", "die", "died", "stop", "kill", "pause", "destroy", "remove", "health_status"}

// Events asks for container events of the followed actions, without the
// agent's labels: Podman's event filter does not match a label given as a
// bare key (containers/podman#26702), and before 4.3 its died events
// carried no labels at all (#15617), so a label filter would lose them.
// The agent matches labels itself (Agent.follows).
func (e *engine) Events(ctx context.Context, since time.Time) (<-chan event, <-chan error) {
	f := make(client.Filters).Add("type", string(events.ContainerEventType)).Add("event", followedActions...)
	res := e.c.Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: f,
	})
	out := make(chan event)
	errc := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case m, ok := <-res.Messages:
				if !ok {
					errc <- fmt.Errorf("docker event stream at %s closed", e.Host())
					return
				}
				ev := normalize(event{Action: string(m.Action), ID: m.Actor.ID, Attrs: m.Actor.Attributes, Time: time.Unix(0, m.TimeNano)})
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			case err := <-res.Err:
				if err == nil {
					err = errors.New("closed")
				}
				errc <- fmt.Errorf("docker event stream at %s: %w", e.Host(), err)
				return
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	return out, errc
}

// normalize puts an event in Docker's words: Podman's "died" is die and
// its "remove" destroy; a health_status event's status comes from Docker's
// action ("health_status: unhealthy") or Podman 5's attribute
// (health_status=unhealthy), and is empty from Podman 4, which sends the
// bare action with no status, once per check (containers/podman#24003).
func normalize(ev event) event {
	switch ev.Action {
	case "died":
		ev.Action = "die"
	case "remove":
		ev.Action = "destroy"
	}
	if rest, ok := strings.CutPrefix(ev.Action, "health_status"); ok {
		ev.Health = strings.TrimSpace(strings.TrimPrefix(rest, ":"))
		if ev.Health == "" {
			ev.Health = ev.Attrs["health_status"]
		}
		ev.Action = "health_status"
	}
	return ev
}

// labelsMatch reports whether a container's labels carry every one of
// want (an empty value matches any value), as the engine's label filter
// would.
func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		got, ok := have[k]
		if !ok || (v != "" && got != v) {
			return false
		}
	}
	return true
}

// shortID is the 12-character form of a container id that docker ps shows.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
