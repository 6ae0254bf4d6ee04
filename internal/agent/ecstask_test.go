package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
)

func TestECSIntrospectionEndpoint(t *testing.T) {
	for _, ok := range []string{"http://localhost:51678", "http://localhost:51678/", " http://127.0.0.1:51678 ", "https://ecs.internal"} {
		if err := CheckECSIntrospection(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"localhost:51678", "ftp://localhost", "http://", "http://localhost:51678/v1/tasks", "http://localhost?x=1", "http://u:p@localhost"} {
		err := CheckECSIntrospection(bad)
		if err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("%q: %v; want an error naming it", bad, err)
		}
	}
}

const (
	appID  = "79c796ed2a7f864f485c76f83f3165488097279d296a7c05bd5201a1c69b2920"
	sideID = "bf25c5c5b2d4dba68846c7236e75b6915e1e778d31611e3c6a06831e39814a15"
	arn    = "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec"
)

// answer is the documented TaskResponse of a two-container awsvpc task.
const answer = `{
    "Arn": "` + arn + `",
    "Containers": [
        {"DockerId": "` + sideID + `", "DockerName": "ecs-nginx-2-envoy-9ac0808dd0afa495f001", "Name": "envoy",
         "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.1.23"]}]},
        {"DockerId": "` + appID + `", "DockerName": "ecs-nginx-2-nginx-9ac0808dd0afa495f001", "Name": "nginx",
         "Ports": [{"ContainerPort": 80, "Protocol": "tcp", "HostPort": 80}, {"ContainerPort": 53, "Protocol": "udp", "HostPort": 53}],
         "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.1.23"], "IPv6Addresses": ["2001:db8::17"]}]}
    ],
    "DesiredStatus": "RUNNING",
    "Family": "nginx",
    "KnownStatus": "RUNNING",
    "Version": "2"
}`

func TestECSTaskAnswers(t *testing.T) {
	app := container{ID: appID, Name: "nginx", Labels: map[string]string{LabelECSTaskARN: arn}}
	for _, tc := range []struct {
		name   string
		status int
		body   string
		c      container
		addr   string
		ports  []conventions.ContainerPort
		err    string
	}{
		{name: "documented", body: answer, c: app, addr: "10.0.1.23",
			ports: []conventions.ContainerPort{{Port: 80, Proto: "tcp"}, {Port: 53, Proto: "udp"}}},
		{name: "ipv6 only", c: app, addr: "2001:db8::17",
			body: `{"Arn":"` + arn + `","Containers":[{"DockerId":"` + appID + `","Networks":[{"NetworkMode":"awsvpc","IPv6Addresses":["2001:db8::17"]}]}]}`},
		{name: "unknown container", status: http.StatusNotFound, body: `{"Arn":"","KnownStatus":"NONE","Family":"","Version":"","Containers":null}`, c: app,
			err: "404 Not Found: the ECS agent knows no task of this container (yet)"},
		{name: "empty task", body: `{"Arn":"","Containers":null}`, c: app, err: "knows no task"},
		{name: "another task", body: answer, c: container{ID: appID, Labels: map[string]string{LabelECSTaskARN: "arn:aws:ecs:us-west-2:012345678910:task/default/other"}},
			err: "task " + arn + ", but the container's label com.amazonaws.ecs.task-arn says arn:aws:ecs:us-west-2:012345678910:task/default/other"},
		{name: "container not listed", body: answer, c: container{ID: strings.Repeat("a", 64)}, err: "does not list container aaaaaaaaaaaa"},
		{name: "bridge task", c: app, err: "lists no awsvpc address yet",
			body: `{"Arn":"` + arn + `","KnownStatus":"PENDING","Containers":[{"DockerId":"` + appID + `","Ports":[{"ContainerPort":80,"Protocol":"tcp","HostPort":32768}]}]}`},
		{name: "not json", body: `<html>`, c: app, err: "not a task"},
		{name: "too large", body: `{"Arn":"` + strings.Repeat("x", ECSIntrospectionMaxBody) + `"}`, c: app, err: "answer larger than 1048576 bytes"},
		{name: "server error", status: http.StatusInternalServerError, body: "{}", c: app, err: "500 Internal Server Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				if r.URL.Path != "/v1/tasks" || r.URL.Query().Get("dockerid") != tc.c.ID {
					http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
					return
				}
				if tc.status != 0 {
					w.WriteHeader(tc.status)
				}
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			e, err := newECSIntrospection(srv.URL, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			task, err := e.fetch(context.Background(), tc.c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), srv.URL+"/v1/tasks?dockerid=") {
					t.Fatalf("err %v; want one naming the URL and %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if task.arn != arn || task.addr != netip.MustParseAddr(tc.addr) {
				t.Errorf("task %s at %s; want %s at %s", task.arn, task.addr, arn, tc.addr)
			}
			if got := task.ports[tc.c.ID]; tc.ports != nil && !equalPorts(got, tc.ports) {
				t.Errorf("ports %v; want %v", got, tc.ports)
			}
		})
	}
}

func equalPorts(a, b []conventions.ContainerPort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestECSIntrospectionBounded: a request that hangs ends at the timeout,
// naming the URL; other lookups right after fail at once without asking
// (ecsDownHold) instead of each waiting as long; after the hold, the
// endpoint is asked again.
func TestECSIntrospectionBounded(t *testing.T) {
	var asked atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	e, err := newECSIntrospection(srv.URL, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c := container{ID: appID}
	start := time.Now()
	_, err = e.fetch(context.Background(), c)
	if took := time.Since(start); err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), srv.URL) || took > time.Second {
		t.Fatalf("after %s: %v; want the timeout, naming the URL", took, err)
	}
	start = time.Now()
	if _, err2 := e.fetch(context.Background(), c); err2 == nil || time.Since(start) > 50*time.Millisecond || asked.Load() != 1 {
		t.Errorf("within the hold: %v after %s, %d requests; want the same failure at once, unasked", err2, time.Since(start), asked.Load())
	}
	time.Sleep(ecsDownHold)
	if _, err := e.fetch(context.Background(), c); err == nil || asked.Load() != 2 {
		t.Errorf("after the hold: %v, %d requests; want a second request", err, asked.Load())
	}
}

// inspectOnly is a dockerAPI that can only inspect.
type inspectOnly struct {
	dockerAPI
	containers map[string]container
	inspected  int
}

func (d *inspectOnly) Inspect(_ context.Context, id string) (container, error) {
	d.inspected++
	c, ok := d.containers[id]
	if !ok {
		return container{}, errNotFound
	}
	return c, nil
}

// TestECSResolveCaches: the task is asked for once, for its first
// container, and served from the cache for it and the others while a
// full sync meets them; a container sharing another network than a pause
// container's is no ECS task; a full sync that meets none forgets them.
func TestECSResolveCaches(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	e, err := newECSIntrospection(srv.URL, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pause := "5ca1ab1e" + strings.Repeat("0", 56)
	d := &inspectOnly{containers: map[string]container{
		pause: {ID: pause, Running: true, Labels: map[string]string{LabelECSContainerName: ECSPauseContainerName}},
		"db":  {ID: "db", Running: true},
	}}
	app := container{ID: appID, NetworkMode: "container:" + pause}
	side := container{ID: sideID, NetworkMode: "container:" + pause}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		e.beginSync()
		for _, c := range []container{app, side} {
			addr, _, err := e.resolve(ctx, d, c)
			if err != nil || addr != netip.MustParseAddr("10.0.1.23") {
				t.Fatalf("round %d, %s: %s, %v", i, shortID(c.ID), addr, err)
			}
		}
		e.prune(map[string]bool{appID: true, sideID: true})
	}
	if asked.Load() != 1 || d.inspected != 1 {
		t.Errorf("asked %d times, inspected the pause container %d times; want once each", asked.Load(), d.inspected)
	}
	if _, _, err := e.resolve(ctx, d, container{ID: "web", NetworkMode: "container:db"}); !errors.Is(err, errNotECSTask) {
		t.Errorf("sharing a plain container's network: %v; want errNotECSTask", err)
	}
	e.beginSync()
	e.prune(nil)
	if len(e.tasks) != 0 || len(e.notPause) != 0 {
		t.Errorf("after a sync that met none: tasks %v, not pause %v; want nothing kept", e.tasks, e.notPause)
	}
}
