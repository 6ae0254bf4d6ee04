package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
)

// ECS introspection: in awsvpc network mode a task's containers share the
// network namespace of its pause container, where the ECS agent (through
// CNI) put the task's ENI; Docker shows neither an address nor ports for
// them. The ECS agent's introspection API on the host
// (http://localhost:51678) lists each task's containers with the ENI's
// addresses and their ports:
//
//	GET /v1/tasks?dockerid=<container id>
//	{"Arn": "arn:aws:ecs:...:task/...", "Family": "web", "Version": "3",
//	 "KnownStatus": "RUNNING", "Containers": [{"DockerId": "...",
//	 "Name": "web", "Ports": [{"ContainerPort": 8080, "Protocol": "tcp",
//	 "HostPort": 8080}], "Networks": [{"NetworkMode": "awsvpc",
//	 "IPv4Addresses": ["10.0.1.23"]}]}]}
//
// (the shape of TaskResponse in the ECS agent's agent/handlers/v1; an
// unknown container is a 404 with an empty task). The pause container
// itself is not listed: the ECS agent leaves internal containers out.

// Defaults and bounds of the ECS introspection client.
const (
	// DefaultECSIntrospection is where the ECS agent serves introspection
	// on a container instance.
	DefaultECSIntrospection = "http://localhost:51678"
	// DefaultECSIntrospectionTimeout bounds one request.
	DefaultECSIntrospectionTimeout = 2 * time.Second
	// ECSIntrospectionMaxBody bounds one answer (one task: a few KiB).
	ECSIntrospectionMaxBody = 1 << 20
	// ecsDownHold: after the endpoint failed to answer, other lookups fail
	// at once for this long instead of each waiting for its own timeout.
	ecsDownHold = 500 * time.Millisecond
)

// errNotECSTask: the container shares the network of a container that is
// not an ECS pause container.
var errNotECSTask = errors.New("not an ECS awsvpc task")

// ecsTaskResponse is the part of the ECS agent's v1 TaskResponse the
// agent reads.
type ecsTaskResponse struct {
	Arn           string         `json:"Arn"`
	DesiredStatus string         `json:"DesiredStatus"`
	KnownStatus   string         `json:"KnownStatus"`
	Family        string         `json:"Family"`
	Version       string         `json:"Version"`
	Containers    []ecsContainer `json:"Containers"`
}

// ecsContainer is one container of a TaskResponse.
type ecsContainer struct {
	DockerID string       `json:"DockerId"`
	Name     string       `json:"Name"`
	Ports    []ecsPort    `json:"Ports"`
	Networks []ecsNetwork `json:"Networks"`
}

// ecsPort is one port of a container (in awsvpc mode HostPort is the
// container port).
type ecsPort struct {
	ContainerPort uint16 `json:"ContainerPort"`
	Protocol      string `json:"Protocol"`
	HostPort      uint16 `json:"HostPort"`
}

// ecsNetwork is one network of a container: the task's ENI in awsvpc mode.
type ecsNetwork struct {
	NetworkMode   string   `json:"NetworkMode"`
	IPv4Addresses []string `json:"IPv4Addresses"`
	IPv6Addresses []string `json:"IPv6Addresses"`
}

// ecsTask is what the agent keeps of one awsvpc task: its ARN, its ENI's
// address and the ports of each of its containers (by Docker id).
type ecsTask struct {
	arn   string
	addr  netip.Addr
	ports map[string][]conventions.ContainerPort
}

// ecsIntrospection asks the ECS agent for awsvpc tasks' addresses and
// keeps them per task (by pause container) while the task runs. It is
// owned by the agent's loop, like the agent's registrations.
type ecsIntrospection struct {
	base    string
	hc      *http.Client
	timeout time.Duration

	tasks    map[string]*ecsTask // by the pause container's id, as in NetworkMode
	notPause map[string]bool     // network owners that are no pause container
	seen     map[string]bool     // owners looked up since the last full sync began
	failing  map[string]bool     // containers whose last lookup failed, for the logs
	downErr  error
	downAt   time.Time
	metrics  *ecsMetrics

	// What Degraded reports, read by other goroutines.
	waitMu   sync.Mutex
	waitN    int
	waitLast error
}

// setWaiting publishes how many containers wait for their task's address
// (len(failing)), and why the last one does (nil to keep the last).
func (e *ecsIntrospection) setWaiting(last error) {
	e.metrics.waiting.Set(float64(len(e.failing)))
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	e.waitN = len(e.failing)
	if last != nil {
		e.waitLast = last
	}
}

// degraded says how many containers wait for their task's address, and
// why the last one does; nil when none does.
func (e *ecsIntrospection) degraded() error {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	if e.waitN == 0 {
		return nil
	}
	return fmt.Errorf("%d awsvpc container(s) not registered: their task's address is unknown (ECS introspection at %s): %w", e.waitN, e.base, e.waitLast)
}

// newECSIntrospection checks base (an http or https URL with a host and
// nothing after it) and returns a client of it.
func newECSIntrospection(base string, timeout time.Duration) (*ecsIntrospection, error) {
	m, err := newECSMetrics(nil)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimSuffix(strings.TrimSpace(base), "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("ECS introspection endpoint %q: want http://host:port, as %s", base, DefaultECSIntrospection)
	}
	if timeout <= 0 {
		timeout = DefaultECSIntrospectionTimeout
	}
	return &ecsIntrospection{
		base:    u.Scheme + "://" + u.Host,
		timeout: timeout,
		hc: &http.Client{
			Transport: &http.Transport{Proxy: nil, MaxIdleConns: 2, IdleConnTimeout: 30 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		tasks:    map[string]*ecsTask{},
		notPause: map[string]bool{},
		seen:     map[string]bool{},
		failing:  map[string]bool{},
		metrics:  m,
	}, nil
}

// CheckECSIntrospection reports whether endpoint is a usable
// Config.ECSIntrospection: an http or https URL with a host and nothing
// after it.
func CheckECSIntrospection(endpoint string) error {
	_, err := newECSIntrospection(endpoint, 0)
	return err
}

// taskURL is the request for the task of container id.
func (e *ecsIntrospection) taskURL(id string) string {
	return e.base + "/v1/tasks?dockerid=" + url.QueryEscape(id)
}

// resolve returns the address and ports of a container that shares the
// network of an ECS pause container (its NetworkMode container:<pause>),
// from the cache or from the ECS agent. errNotECSTask (wrapped) when the
// network's owner is no pause container; any other error means "not yet":
// the caller registers nothing for the container and retries later.
func (e *ecsIntrospection) resolve(ctx context.Context, d dockerAPI, c container) (netip.Addr, []conventions.ContainerPort, error) {
	owner := strings.TrimPrefix(c.NetworkMode, "container:")
	e.seen[owner] = true
	if e.notPause[owner] {
		return netip.Addr{}, nil, errNotECSTask
	}
	t := e.tasks[owner]
	if t == nil {
		oc, err := d.Inspect(ctx, owner)
		if err != nil {
			return netip.Addr{}, nil, fmt.Errorf("inspect %s, whose network it shares: %w", shortID(owner), err)
		}
		if !isECSPause(oc.Labels) {
			e.notPause[owner] = true
			return netip.Addr{}, nil, errNotECSTask
		}
		if !oc.Running {
			return netip.Addr{}, nil, fmt.Errorf("its task's pause container %s is not running", oc.Name)
		}
	} else if ps, ok := t.ports[c.ID]; ok {
		return t.addr, ps, nil
	}
	nt, err := e.fetch(ctx, c)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	if t != nil && t.arn == nt.arn && t.addr == nt.addr {
		for id, ps := range t.ports {
			if _, ok := nt.ports[id]; !ok {
				nt.ports[id] = ps
			}
		}
	}
	e.tasks[owner] = nt
	return nt.addr, nt.ports[c.ID], nil
}

// fetch asks the ECS agent for the task of container c.
func (e *ecsIntrospection) fetch(ctx context.Context, c container) (*ecsTask, error) {
	u := e.taskURL(c.ID)
	if e.downErr != nil && time.Since(e.downAt) < ecsDownHold {
		return nil, e.downErr
	}
	body, err := e.get(ctx, u)
	switch {
	case errors.Is(err, errECSNotFound):
		e.metrics.requests.WithLabelValues("not_found").Inc()
		return nil, err
	case err != nil:
		e.metrics.requests.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			e.downErr, e.downAt = err, time.Now()
		}
		return nil, err
	}
	e.metrics.requests.WithLabelValues("ok").Inc()
	e.downErr = nil
	var r ecsTaskResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("GET %s: not a task: %w", u, err)
	}
	return r.task(c, u)
}

// errECSNotFound: the ECS agent does not know the container (yet).
var errECSNotFound = errors.New("the ECS agent knows no task of this container (yet)")

// get fetches u within the timeout and the body bound.
func (e *ecsIntrospection) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would name the URL a second time
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, ECSIntrospectionMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read the answer: %w", u, err)
	}
	if len(body) > ECSIntrospectionMaxBody {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", u, ECSIntrospectionMaxBody)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %s: %w", u, resp.Status, errECSNotFound)
	}
	return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
}

// task reads the address and ports out of the answer for container c,
// fetched from u.
func (r *ecsTaskResponse) task(c container, u string) (*ecsTask, error) {
	if r.Arn == "" {
		return nil, fmt.Errorf("GET %s: %w", u, errECSNotFound)
	}
	if want := c.Labels[LabelECSTaskARN]; want != "" && want != r.Arn {
		return nil, fmt.Errorf("GET %s: task %s, but the container's label %s says %s", u, r.Arn, LabelECSTaskARN, want)
	}
	t := &ecsTask{arn: r.Arn, ports: map[string][]conventions.ContainerPort{}}
	own := false
	for _, rc := range r.Containers {
		if rc.DockerID == "" {
			continue
		}
		var ps []conventions.ContainerPort
		for _, p := range rc.Ports {
			proto := strings.ToLower(p.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			if p.ContainerPort != 0 {
				ps = append(ps, conventions.ContainerPort{Port: p.ContainerPort, Proto: proto})
			}
		}
		t.ports[rc.DockerID] = ps
		mine := rc.DockerID == c.ID || strings.HasPrefix(c.ID, rc.DockerID)
		own = own || mine
		if a := awsvpcAddr(rc.Networks); a.IsValid() && (mine || !t.addr.IsValid()) {
			t.addr = a
		}
		if mine && rc.DockerID != c.ID {
			t.ports[c.ID] = ps
		}
	}
	if !own {
		return nil, fmt.Errorf("GET %s: task %s does not list container %s", u, r.Arn, shortID(c.ID))
	}
	if !t.addr.IsValid() {
		return nil, fmt.Errorf("GET %s: task %s (%s) lists no awsvpc address yet", u, r.Arn, r.KnownStatus)
	}
	return t, nil
}

// awsvpcAddr is the first usable address of the awsvpc network in nets:
// IPv4 first, then IPv6.
func awsvpcAddr(nets []ecsNetwork) netip.Addr {
	for _, n := range nets {
		if n.NetworkMode != "" && !strings.EqualFold(n.NetworkMode, "awsvpc") {
			continue
		}
		for _, list := range [][]string{n.IPv4Addresses, n.IPv6Addresses} {
			for _, s := range list {
				if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && !a.IsUnspecified() {
					return a.Unmap()
				}
			}
		}
	}
	return netip.Addr{}
}

// beginSync starts a full sync: owners not looked up until prune are
// forgotten then.
func (e *ecsIntrospection) beginSync() { clear(e.seen) }

// prune forgets the tasks, owners and failing containers that the full
// sync did not meet: their containers stopped.
func (e *ecsIntrospection) prune(live map[string]bool) {
	for k := range e.tasks {
		if !e.seen[k] {
			delete(e.tasks, k)
		}
	}
	for k := range e.notPause {
		if !e.seen[k] {
			delete(e.notPause, k)
		}
	}
	for id := range e.failing {
		if !live[id] {
			delete(e.failing, id)
		}
	}
	e.setWaiting(nil)
}
