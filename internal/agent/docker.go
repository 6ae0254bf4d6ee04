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
}

// binding is one published host port.
type binding struct {
	HostIP   netip.Addr // zero or unspecified: every host address
	HostPort uint16
}

// event is one container event.
type event struct {
	Action string
	ID     string
	Attrs  map[string]string
	Time   time.Time
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
	// Events streams container events from since (replaying what the
	// engine still holds) until ctx ends or the stream fails.
	Events(ctx context.Context, since time.Time, labels map[string]string) (<-chan event, <-chan error)
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
	if ns := r.NetworkSettings; ns != nil {
		for p, bs := range ns.Ports {
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

// followedActions are the container events the agent acts on. The engine
// matches "health_status" against "health_status: healthy" and the like.
var followedActions = []string{"start", "restart", "unpause", "die", "stop", "kill", "pause", "destroy", "health_status"}

func (e *engine) Events(ctx context.Context, since time.Time, labels map[string]string) (<-chan event, <-chan error) {
	f := make(client.Filters).Add("type", string(events.ContainerEventType)).Add("event", followedActions...)
	res := e.c.Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: labelFilters(f, labels),
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
				ev := event{Action: string(m.Action), ID: m.Actor.ID, Attrs: m.Actor.Attributes, Time: time.Unix(0, m.TimeNano)}
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

// shortID is the 12-character form of a container id that docker ps shows.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
