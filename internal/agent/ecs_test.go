package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/dockerfake"
	"github.com/signpost-dns/signpost/internal/registry"
)

// These tests run the real agent against internal/dockerfake with
// containers labelled as the Amazon ECS agent labels them, and an
// httptest stand-in for the ECS agent's introspection API serving the
// documented shape of GET /v1/tasks?dockerid=ID (agent/handlers/v1 of
// the ECS agent: a TaskResponse; 404 with an empty one when unknown).

const testTaskARN = "arn:aws:ecs:eu-west-1:123456789012:task/signpost/0f3c7ad8e1b94c5aa3f2d6c1e0b9a877"

// ecsLabels are the labels ECS puts on a task's container.
func ecsLabels(t *testing.T, container string) map[string]string {
	return map[string]string{
		fakeLabel:                      t.Name(),
		agent.LabelECSTaskARN:          testTaskARN,
		agent.LabelECSCluster:          "signpost",
		agent.LabelECSContainerName:    container,
		agent.LabelECSTaskFamily:       "web",
		agent.LabelECSTaskRevision:     "7",
		"com.amazonaws.ecs.other":      "not published",
		"com.example.unrelated.label":  "not published",
		"com.amazonaws.ecs.task-arn-x": "not published",
	}
}

// fakeIntrospection serves GET /v1/tasks?dockerid=ID from tasks, the
// JSON of one task by container id; 503 while down.
type fakeIntrospection struct {
	srv *httptest.Server

	mu       sync.Mutex
	tasks    map[string]string
	down     bool
	requests int
}

func newFakeIntrospection(t *testing.T) *fakeIntrospection {
	f := &fakeIntrospection{tasks: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests++
		if f.down {
			http.Error(w, "ECS agent restarting", http.StatusServiceUnavailable)
			return
		}
		id := r.URL.Query().Get("dockerid")
		if r.URL.Path != "/v1/tasks" || id == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		body, ok := f.tasks[id]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			body = `{"Arn":"","KnownStatus":"NONE","Family":"","Version":"","Containers":null}`
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// addTask serves an awsvpc task whose ENI has addr, with its containers
// (id, name and container port; port 0 for none).
func (f *fakeIntrospection) addTask(arn string, addr string, containers ...ecsContainer) {
	var cs []string
	for _, c := range containers {
		ports := ""
		if c.port != 0 {
			ports = fmt.Sprintf(`"Ports":[{"ContainerPort":%d,"Protocol":"tcp","HostPort":%d}],`, c.port, c.port)
		}
		cs = append(cs, fmt.Sprintf(`{"DockerId":%q,"DockerName":"ecs-web-7-%s-e8bfddf9b488dff36c00","Name":%q,%s"Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":[%q]}]}`,
			c.id, c.name, c.name, ports, addr))
	}
	body := fmt.Sprintf(`{"Arn":%q,"DesiredStatus":"RUNNING","KnownStatus":"RUNNING","Family":"web","Version":"7","Containers":[%s]}`, arn, strings.Join(cs, ","))
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range containers {
		f.tasks[c.id] = body
	}
}

type ecsContainer struct {
	id, name string
	port     uint16
}

func (f *fakeIntrospection) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeIntrospection) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// instances lists what the server holds for node.
func (s *fakeStack) instances(node string) []registry.Instance {
	s.t.Helper()
	c, err := apiclient.New(s.srv.URL(), "")
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, _, err := c.Instances(ctx, node)
	if err != nil {
		s.t.Fatal(err)
	}
	return list
}

// waitInstances waits until the server holds exactly n instances for node.
func (s *fakeStack) waitInstances(node string, n int) []registry.Instance {
	s.t.Helper()
	var list []registry.Instance
	waitFor(s.t, fmt.Sprintf("%d instances of node %s", n, node), func() (bool, string) {
		list = s.instances(node)
		return len(list) == n, fmt.Sprint(list)
	})
	return list
}

// TestECSLabelsAsMetadata: a bridge-mode ECS task's container gets its
// task ARN, family, revision, cluster and container name as metadata
// beside its own; a label too long for a TXT string is left out whole,
// with a warning naming it, and the instance is registered without it.
func TestECSLabelsAsMetadata(t *testing.T) {
	s := newFakeStack(t, dockerfake.DefaultAPIVersion)
	start := func(name string, labels map[string]string, hostPort uint16) {
		t.Helper()
		if _, err := s.engine.Start(dockerfake.Container{
			Name:     name,
			Labels:   labels,
			Env:      []string{"SERVICE_8080_NAME=" + name, "SERVICE_8080_VERSION=2", "SERVICE_ECS_CLUSTER=mine"},
			Ports:    []string{"8080/tcp"},
			Bindings: network.PortMap{network.MustParsePort("8080/tcp"): {{HostIP: netip.IPv4Unspecified(), HostPort: fmt.Sprint(hostPort)}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	start("web", ecsLabels(t, "web"), listener(t))
	long := ecsLabels(t, "long")
	long[agent.LabelECSCluster] = strings.Repeat("c", 250) // "ecs_cluster=" + 250 bytes: 262 > 255
	start("long", long, listener(t))
	s.runAgent("node-ecs", func(c *agent.Config) { c.ECSMetadata = true })

	byName := map[string]registry.Instance{}
	for _, in := range s.waitInstances("node-ecs", 2) {
		byName[in.Service] = in
	}
	want := map[string]string{
		agent.MetaECSTaskARN:       testTaskARN,
		agent.MetaECSTaskFamily:    "web",
		agent.MetaECSTaskRevision:  "7",
		agent.MetaECSCluster:       "signpost", // the label wins over SERVICE_ECS_CLUSTER
		agent.MetaECSContainerName: "web",
		"version":                  "2",
	}
	if got := byName["web"].Meta; !sameMeta(got, want) {
		t.Errorf("web's metadata: %v; want %v", got, want)
	}
	want[agent.MetaECSContainerName] = "long"
	want[agent.MetaECSCluster] = "mine" // the label left out: the container's own stays
	if got := byName["long"].Meta; !sameMeta(got, want) {
		t.Errorf("long's metadata: %v; want %v (no ecs_cluster from the label)", got, want)
	}
	s.waitLog("level=WARN", "ECS label not published", "container=long", "label="+agent.LabelECSCluster, "bytes=262")
	for line := range strings.SplitSeq(s.log.String(), "\n") {
		if strings.Contains(line, "ECS label not published") && strings.Contains(line, "container=web ") {
			t.Errorf("a warning about web's labels, which all fit: %s", line)
		}
	}
}

// sameMeta compares metadata, leaving out the agent's internal keys.
func sameMeta(got, want map[string]string) bool {
	n := 0
	for k, v := range got {
		if strings.HasPrefix(k, "signpost.") {
			continue
		}
		if want[k] != v {
			return false
		}
		n++
	}
	return n == len(want)
}

// startAWSVPCTask starts an awsvpc task as ECS does: the pause container
// (network mode none: CNI puts the ENI in its namespace, Docker shows no
// address), then the app container and a sidecar sharing its network,
// with no address and no ports of their own. The pause container carries
// a SERVICE_ variable and a port, so that registering it would show. It
// returns the app's and the sidecar's ids.
func (s *fakeStack) startAWSVPCTask(appPort uint16) (pause, app, sidecar string) {
	s.t.Helper()
	start := func(name, ecsName, networkMode string, env, ports []string) string {
		s.t.Helper()
		id, err := s.engine.Start(dockerfake.Container{Name: name, Labels: ecsLabels(s.t, ecsName), Env: env, Ports: ports,
			NetworkMode: networkMode, Networks: map[string]netip.Addr{}})
		if err != nil {
			s.t.Fatal(err)
		}
		return id
	}
	service := fmt.Sprintf("SERVICE_%d_NAME=web", appPort)
	pause = start("ecs-web-7-internalecspause-a2b4e6f8c0d1e3f5a7b9", agent.ECSPauseContainerName, "none",
		[]string{service}, []string{fmt.Sprintf("%d/tcp", appPort)})
	app = start("ecs-web-7-web-e8bfddf9b488dff36c00", "web", "container:"+pause, []string{service, "WEB_PASSWORD=hunter2"}, nil)
	sidecar = start("ecs-web-7-log-router-9ac0808dd0afa495f001", "log-router", "container:"+pause, nil, nil)
	return pause, app, sidecar
}

// awsvpcAgent runs the agent with ECS introspection at f, and returns
// it and its metrics.
func (s *fakeStack) awsvpcAgent(node string, f *fakeIntrospection) (*agent.Agent, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	a := s.runAgent(node, func(c *agent.Config) {
		c.ECSMetadata = true
		c.ECSIntrospection = f.srv.URL
		c.ECSIntrospectionTimeout = 500 * time.Millisecond
		c.Resync = time.Second
		c.Metrics = reg
	})
	return a, reg
}

// metric is the value of the series name{label="value"} in reg (label
// "" for a series without labels), or -1 when there is none.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == label && lp.GetValue() == value)
			}
			switch {
			case mf.GetName() != name || !match:
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			default:
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestECSAWSVPCTask: with --ecs-introspection the app container of an
// awsvpc task is registered once, with its task's ENI address (here
// 127.0.0.2, not the host's 127.0.0.1) and the container port, checked
// there; the pause container is never registered; the task is asked for
// once and kept while it runs, not asked again at every resync; when the
// task stops it goes.
func TestECSAWSVPCTask(t *testing.T) {
	s := newFakeStack(t, dockerfake.DefaultAPIVersion)
	f := newFakeIntrospection(t)
	port := listenerOn(t, "127.0.0.2")
	pause, app, sidecar := s.startAWSVPCTask(port)
	f.addTask(testTaskARN, "127.0.0.2", ecsContainer{app, "web", port}, ecsContainer{sidecar, "log-router", 0})
	a, _ := s.awsvpcAgent("node-awsvpc", f)

	s.waitSRV("web", port)
	recs, _, err := lookup(s.srv.DNSAddr(), "web")
	if err != nil || len(recs) != 1 || recs[0].Addr != "127.0.0.2" {
		t.Fatalf("web SRV %v, %v: want one record at the ENI address 127.0.0.2", recs, err)
	}
	list := s.instances("node-awsvpc")
	if len(list) != 1 || list[0].Address.String() != "127.0.0.2" || list[0].Port != port || list[0].Meta[agent.MetaECSTaskARN] != testTaskARN ||
		!strings.HasPrefix(list[0].ID, app[:12]) {
		t.Fatalf("instances %v: want one, the app container's, at 127.0.0.2:%d with its task's metadata", list, port)
	}
	s.waitLog("ECS pause container", "never registered", "task="+testTaskARN)

	// Two periodic resyncs later the task was asked for once in all.
	asked := f.count()
	s.waitLog("synced", "why=periodic", "instances=1")
	n := strings.Count(s.log.String(), "why=periodic")
	waitFor(t, "two more periodic resyncs", func() (bool, string) {
		return strings.Count(s.log.String(), "why=periodic") >= n+2, "not yet"
	})
	if got := f.count(); asked != 1 || got != 1 {
		t.Errorf("introspection asked %d times before the resyncs and %d after: want 1 (once per task)", asked, got)
	}
	if err := a.Degraded(); err != nil {
		t.Errorf("Degraded: %v", err)
	}

	for _, id := range []string{app, sidecar, pause} {
		if err := s.engine.Stop(id); err != nil {
			t.Fatal(err)
		}
	}
	s.waitSRV("web")
	if strings.Contains(s.log.String(), "hunter2") {
		t.Error("a container's other environment variable reached the logs")
	}
}

// TestECSAWSVPCIntrospectionDown: while the introspection endpoint does
// not answer, the awsvpc container is not registered (not with the
// host's address, nor any other), the agent warns naming the container
// and the URL, and registers it with the ENI address once the endpoint
// answers again, without a new Docker event.
func TestECSAWSVPCIntrospectionDown(t *testing.T) {
	s := newFakeStack(t, dockerfake.DefaultAPIVersion)
	f := newFakeIntrospection(t)
	f.setDown(true)
	port := listenerOn(t, "127.0.0.2")
	_, app, sidecar := s.startAWSVPCTask(port)
	f.addTask(testTaskARN, "127.0.0.2", ecsContainer{app, "web", port}, ecsContainer{sidecar, "log-router", 0})
	a, reg := s.awsvpcAgent("node-down", f)

	s.waitLog("level=WARN", "awsvpc container not registered", "container=ecs-web-7-web-e8bfddf9b488dff36c00",
		`url="`+f.srv.URL+"/v1/tasks?dockerid="+app+`"`, "503 Service Unavailable")
	waitFor(t, "two failed lookups (a retry)", func() (bool, string) { return f.count() >= 2, fmt.Sprint(f.count()) })
	if list := s.instances("node-down"); len(list) != 0 {
		t.Fatalf("registered while the task's address is unknown: %v", list)
	}
	if w, e := metric(t, reg, "signpost_agent_ecs_waiting_containers", "", ""), metric(t, reg, "signpost_agent_ecs_introspection_requests_total", "result", "error"); w != 1 || e < 2 {
		t.Errorf("while down: %v containers waiting, %v failed requests; want 1 and at least 2", w, e)
	}
	if err := a.Degraded(); err == nil || !strings.Contains(err.Error(), "1 awsvpc container(s) not registered") || !strings.Contains(err.Error(), "503") {
		t.Errorf("Degraded while down: %v; want the waiting container and the endpoint's error", err)
	}
	f.setDown(false)
	s.waitSRV("web", port)
	if list := s.instances("node-down"); len(list) != 1 || list[0].Address.String() != "127.0.0.2" {
		t.Fatalf("instances %v: want one at the ENI address", list)
	}
	s.waitLog("level=INFO", "awsvpc task address found after failed lookups", "address=127.0.0.2")
	if w, ok := metric(t, reg, "signpost_agent_ecs_waiting_containers", "", ""), metric(t, reg, "signpost_agent_ecs_introspection_requests_total", "result", "ok"); w != 0 || ok != 1 {
		t.Errorf("after: %v containers waiting, %v answered requests; want 0 and 1", w, ok)
	}
	if err := a.Degraded(); err != nil {
		t.Errorf("Degraded after: %v", err)
	}
}

// TestECSAWSVPCWithoutIntrospection: without --ecs-introspection an
// awsvpc container is not registered (Docker shows it no address), and
// the agent says why, once, instead of a warning about missing ports.
func TestECSAWSVPCWithoutIntrospection(t *testing.T) {
	s := newFakeStack(t, dockerfake.DefaultAPIVersion)
	s.startAWSVPCTask(8080)
	s.runAgent("node-off", func(c *agent.Config) { c.ECSMetadata = true })
	s.waitLog("container of an ECS awsvpc task", "container=ecs-web-7-web-e8bfddf9b488dff36c00", "--ecs-introspection")
	s.waitLog("synced", "instances=0")
	if strings.Contains(s.log.String(), "has no port") {
		t.Error("a warning about the awsvpc container's ports")
	}
}
