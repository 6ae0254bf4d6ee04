package dockerfake_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/signpost-dns/signpost/internal/dockerfake"
)

// engines are the engine versions every test runs against.
var engines = []struct{ api, min string }{
	{"1.41", "1.12"}, // Docker 20.10
	{"1.52", "1.44"}, // Docker 29
}

func start(t *testing.T, api string) *dockerfake.Server {
	t.Helper()
	s, err := dockerfake.New(dockerfake.Config{APIVersion: api})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func newClient(t *testing.T, s *dockerfake.Server, opts ...client.Opt) *client.Client {
	t.Helper()
	c, err := client.New(append([]client.Opt{client.WithHost(s.Addr())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawGet does one GET on the fake's socket and returns the response.
func rawGet(t *testing.T, s *dockerfake.Server, path string) *http.Response {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket())
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	resp, err := hc.Get("http://docker" + path)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestPingNegotiatesEachVersion(t *testing.T) {
	for _, e := range engines {
		t.Run(e.api, func(t *testing.T) {
			s := start(t, e.api)
			c := newClient(t, s)
			p, err := c.Ping(context.Background(), client.PingOptions{NegotiateAPIVersion: true})
			if err != nil {
				t.Fatal(err)
			}
			if p.APIVersion != e.api || p.OSType != "linux" || p.BuilderVersion != "2" || p.SwarmStatus == nil {
				t.Errorf("ping = %+v, want API %s, linux, builder 2, a swarm status", p, e.api)
			}
			if got := c.ClientVersion(); got != e.api {
				t.Errorf("negotiated %s, want %s", got, e.api)
			}
			v, err := c.ServerVersion(context.Background(), client.ServerVersionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v.APIVersion != e.api || v.MinAPIVersion != e.min {
				t.Errorf("version = %s (min %s), want %s (min %s)", v.APIVersion, v.MinAPIVersion, e.api, e.min)
			}
			if _, err := c.Info(context.Background(), client.InfoOptions{}); err != nil {
				t.Errorf("info: %v", err)
			}
			if !slices.Contains(slices.Collect(mapKeys(s.Requests())), "GET /v"+e.api+"/version") {
				t.Errorf("requests %v: no versioned GET /version", s.Requests())
			}
		})
	}
}

func mapKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestDocker29RefusesOldAPI: a client fixed at 1.41 gets Docker 29's 400;
// a client fixed above the engine's version gets "too new".
func TestDocker29RefusesOldAPI(t *testing.T) {
	s := start(t, "1.52")
	for _, tc := range []struct{ v, want string }{
		{"1.41", "client version 1.41 is too old. Minimum supported API version is 1.44"},
		{"1.53", "client version 1.53 is too new. Maximum supported API version is 1.52"},
	} {
		c := newClient(t, s, client.WithAPIVersion(tc.v))
		_, err := c.ContainerList(context.Background(), client.ContainerListOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !cerrdefs.IsInvalidArgument(err) {
			t.Errorf("list at %s: %v, want an invalid-argument error with %q", tc.v, err, tc.want)
		}
	}
	// The unversioned ping still answers, so negotiation finds 1.52.
	c := newClient(t, s)
	if _, err := c.Ping(context.Background(), client.PingOptions{NegotiateAPIVersion: true}); err != nil || c.ClientVersion() != "1.52" {
		t.Errorf("negotiated %s, %v; want 1.52", c.ClientVersion(), err)
	}
}

func webContainer(id string, labels map[string]string) dockerfake.Container {
	return dockerfake.Container{
		ID:       id,
		Name:     "web-" + id,
		Labels:   labels,
		Env:      []string{"SERVICE_8080_NAME=web", "SECRET=x"},
		Ports:    []string{"8080/tcp", "53/udp"},
		Bindings: network.PortMap{network.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: "32768"}}},
		Networks: map[string]netip.Addr{"bridge": netip.MustParseAddr("172.17.0.5")},
	}
}

func TestListFilters(t *testing.T) {
	for _, e := range engines {
		t.Run(e.api, func(t *testing.T) {
			s := start(t, e.api)
			for id, l := range map[string]map[string]string{
				"a1": {"team": "blue", "tier": "web"},
				"b2": {"team": "red"},
				"c3": {"tier": "db"},
			} {
				if _, err := s.Start(webContainer(id, l)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Stop("c3"); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, s)
			for _, tc := range []struct {
				name string
				opts client.ContainerListOptions
				want []string
			}{
				{"running", client.ContainerListOptions{}, []string{"a1", "b2"}},
				{"all", client.ContainerListOptions{All: true}, []string{"a1", "b2", "c3"}},
				{"label key", client.ContainerListOptions{Filters: make(client.Filters).Add("label", "team")}, []string{"a1", "b2"}},
				{"label value", client.ContainerListOptions{Filters: make(client.Filters).Add("label", "team=blue")}, []string{"a1"}},
				{"labels all", client.ContainerListOptions{Filters: make(client.Filters).Add("label", "team=blue", "tier=db")}, nil},
				{"status exited", client.ContainerListOptions{Filters: make(client.Filters).Add("status", "exited")}, []string{"c3"}},
				{"status running", client.ContainerListOptions{Filters: make(client.Filters).Add("status", "running").Add("label", "tier")}, []string{"a1"}},
			} {
				res, err := c.ContainerList(context.Background(), tc.opts)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				var got []string
				for _, it := range res.Items {
					got = append(got, it.ID)
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
				}
			}
			if _, err := c.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).Add("bogus", "x")}); !cerrdefs.IsInvalidArgument(err) {
				t.Errorf("unknown filter: %v, want invalid argument", err)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	for _, e := range engines {
		t.Run(e.api, func(t *testing.T) {
			s := start(t, e.api)
			spec := webContainer("0123456789abcdef", map[string]string{"team": "blue"})
			spec.Health = "starting"
			id, err := s.Start(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetHealth(id, "healthy", "ok\n"); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, s)
			for _, ref := range []string{id, "0123", spec.Name} {
				res, err := c.ContainerInspect(context.Background(), ref, client.ContainerInspectOptions{})
				if err != nil {
					t.Fatalf("inspect %s: %v", ref, err)
				}
				r := res.Container
				if r.ID != id || r.Name != "/"+spec.Name || !r.State.Running || r.State.Status != "running" {
					t.Errorf("inspect %s: id %s name %s state %+v", ref, r.ID, r.Name, r.State)
				}
				if _, err := time.Parse(time.RFC3339Nano, r.State.StartedAt); err != nil {
					t.Errorf("StartedAt %q: %v", r.State.StartedAt, err)
				}
				if h := r.State.Health; h == nil || h.Status != "healthy" || len(h.Log) != 1 || h.Log[0].Output != "ok\n" {
					t.Errorf("health %+v", h)
				}
				if r.Config.Labels["team"] != "blue" || !slices.Contains(r.Config.Env, "SERVICE_8080_NAME=web") || len(r.Config.ExposedPorts) != 2 {
					t.Errorf("config %+v", r.Config)
				}
				p := network.MustParsePort("8080/tcp")
				if b := r.NetworkSettings.Ports[p]; len(b) != 1 || b[0].HostPort != "32768" || string(r.HostConfig.NetworkMode) != "bridge" || len(r.HostConfig.PortBindings[p]) != 1 {
					t.Errorf("ports %v, host config %+v", r.NetworkSettings.Ports, r.HostConfig)
				}
				if ep := r.NetworkSettings.Networks["bridge"]; ep == nil || ep.IPAddress != netip.MustParseAddr("172.17.0.5") {
					t.Errorf("networks %v", r.NetworkSettings.Networks)
				}
			}
			_, err = c.ContainerInspect(context.Background(), "nope", client.ContainerInspectOptions{})
			if !cerrdefs.IsNotFound(err) || !strings.Contains(err.Error(), "No such container: nope") {
				t.Errorf("unknown container: %v, want not found", err)
			}
			resp := rawGet(t, s, "/v"+e.api+"/containers/nope/json")
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != 404 || body["message"] != "No such container: nope" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("raw 404: %d %v %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
			}
			// docker stop through the client: stop events, not running.
			if _, err := c.ContainerStop(context.Background(), id, client.ContainerStopOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := s.Running(); len(got) != 0 {
				t.Errorf("running after stop: %v", got)
			}
		})
	}
}

// collect reads n events from the client's stream.
func collect(t *testing.T, res client.EventsResult, n int) []events.Message {
	t.Helper()
	var out []events.Message
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case m := <-res.Messages:
			out = append(out, m)
		case err := <-res.Err:
			t.Fatalf("after %d events: %v", len(out), err)
		case <-timeout:
			t.Fatalf("after %d events: timed out", len(out))
		}
	}
	return out
}

func actions(ms []events.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Action))
	}
	return out
}

func TestEventsFollowAndFilter(t *testing.T) {
	for _, e := range engines {
		t.Run(e.api, func(t *testing.T) {
			s := start(t, e.api)
			c := newClient(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := make(client.Filters).Add("type", "container").Add("event", "start", "die", "stop", "health_status", "destroy").Add("label", "team=blue")
			res := c.Events(ctx, client.EventsListOptions{Filters: f})
			// The response is flushed at once: the stream counts as open.
			waitStreams(t, s, 1)
			if _, err := s.Start(webContainer("red", map[string]string{"team": "red"})); err != nil {
				t.Fatal(err)
			}
			id, err := s.Start(webContainer("blue", map[string]string{"team": "blue"}))
			if err != nil {
				t.Fatal(err)
			}
			for _, step := range []func() error{
				func() error { return s.SetHealth(id, "unhealthy", "connection refused") },
				func() error { return s.Stop(id) },
				func() error { return s.Remove(id) },
			} {
				if err := step(); err != nil {
					t.Fatal(err)
				}
			}
			got := collect(t, res, 5)
			want := []string{"start", "health_status: unhealthy", "die", "stop", "destroy"}
			if !slices.Equal(actions(got), want) {
				t.Errorf("actions %v, want %v", actions(got), want)
			}
			for _, m := range got {
				if m.Actor.ID != id || m.Type != events.ContainerEventType || m.Actor.Attributes["team"] != "blue" || m.Actor.Attributes["name"] != "web-blue" || m.TimeNano == 0 || m.Time != m.TimeNano/1e9 {
					t.Errorf("event %+v", m)
				}
			}
		})
	}
}

func waitStreams(t *testing.T, s *dockerfake.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Streams() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d event streams open, want %d", s.Streams(), n)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// TestEventsShapePerVersion reads the raw stream: before 1.52 an event
// carries the legacy status, id and from; from 1.52 it does not.
func TestEventsShapePerVersion(t *testing.T) {
	for _, e := range engines {
		t.Run(e.api, func(t *testing.T) {
			s := start(t, e.api)
			before := time.Now().Add(-time.Second)
			id, err := s.Start(webContainer("shape", nil))
			if err != nil {
				t.Fatal(err)
			}
			q := fmt.Sprintf("since=%d.%09d&until=%d", before.Unix(), before.Nanosecond(), time.Now().Add(time.Second).Unix())
			resp := rawGet(t, s, "/v"+e.api+"/events?"+q)
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			var lines []map[string]any
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				lines = append(lines, m)
			}
			if len(lines) != 2 || lines[0]["Action"] != "create" || lines[1]["Action"] != "start" {
				t.Fatalf("events %v, want create and start", lines)
			}
			for _, m := range lines {
				for _, k := range []string{"Type", "Action", "Actor", "scope", "time", "timeNano"} {
					if _, ok := m[k]; !ok {
						t.Errorf("event %v has no %s", m, k)
					}
				}
				_, hasStatus := m["status"]
				_, hasID := m["id"]
				_, hasFrom := m["from"]
				legacy := e.api == "1.41"
				if hasStatus != legacy || hasID != legacy || hasFrom != legacy {
					t.Errorf("API %s: event %v: legacy status/id/from present %v %v %v, want %v", e.api, m, hasStatus, hasID, hasFrom, legacy)
				}
				if legacy && (m["status"] != m["Action"] || m["id"] != id || m["from"] != "busybox") {
					t.Errorf("legacy fields of %v", m)
				}
			}
		})
	}
}

// TestEventsReplaySince: a stream from since replays the held events
// after it and follows; until ends it.
func TestEventsReplaySince(t *testing.T) {
	s := start(t, "1.52")
	if _, err := s.Start(webContainer("old", nil)); err != nil {
		t.Fatal(err)
	}
	mid := time.Now()
	time.Sleep(2 * time.Millisecond) // events after mid have later stamps
	id, err := s.Start(webContainer("new", nil))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := c.Events(ctx, client.EventsListOptions{Since: fmt.Sprintf("%d.%09d", mid.Unix(), mid.Nanosecond())})
	got := collect(t, res, 2)
	if !slices.Equal(actions(got), []string{"create", "start"}) || got[0].Actor.ID != id {
		t.Errorf("replay %v of %s", actions(got), got[0].Actor.ID)
	}
	if err := s.Stop(id); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, res, 3); !slices.Equal(actions(got), []string{"kill", "die", "stop"}) {
		t.Errorf("follow %v", actions(got))
	}
	// until in the past: the replay, then the end of the stream.
	res = c.Events(ctx, client.EventsListOptions{Since: "0.000000001", Until: fmt.Sprintf("%d.%09d", mid.Unix(), mid.Nanosecond())})
	if got := collect(t, res, 2); !slices.Equal(actions(got), []string{"create", "start"}) {
		t.Errorf("until: %v", actions(got))
	}
	select {
	case err := <-res.Err:
		if err == nil || !strings.Contains(err.Error(), "EOF") {
			t.Errorf("until: stream ended with %v, want EOF", err)
		}
	case m := <-res.Messages:
		t.Errorf("until: more after until: %+v", m)
	case <-time.After(5 * time.Second):
		t.Error("until: stream did not end")
	}
}

// TestBounds: held events are capped, and so are event streams.
func TestBounds(t *testing.T) {
	s, err := dockerfake.New(dockerfake.Config{MaxEvents: 10, MaxStreams: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 5 {
		if _, err := s.Start(webContainer(fmt.Sprint(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.Events()); n != 10 {
		t.Errorf("%d events held, want 10", n)
	}
	c := newClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Events(ctx, client.EventsListOptions{})
	c.Events(ctx, client.EventsListOptions{})
	waitStreams(t, s, 2)
	res := c.Events(ctx, client.EventsListOptions{})
	select {
	case err := <-res.Err:
		if err == nil || !strings.Contains(err.Error(), "2 event streams open") {
			t.Errorf("third stream: %v, want the cap's 503", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("third stream was served")
	}
	cancel()
	waitStreams(t, s, 0)
}

// TestUnhandledCounted: what the fake does not serve answers 404 and is
// counted.
func TestUnhandledCounted(t *testing.T) {
	s := start(t, "1.41")
	c := newClient(t, s)
	_, err := c.ImageList(context.Background(), client.ImageListOptions{})
	if err == nil || !strings.Contains(err.Error(), "page not found") {
		t.Errorf("image list: %v, want page not found", err)
	}
	if u := s.Unhandled(); u["GET /v1.41/images/json"] != 1 || len(u) != 1 {
		t.Errorf("unhandled %v", u)
	}
}

// TestRestartEndsStreams: an engine restart (here an upgrade to 1.52) ends
// the event streams and changes what ping reports.
func TestRestartEndsStreams(t *testing.T) {
	s := start(t, "1.41")
	c := newClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := c.Events(ctx, client.EventsListOptions{})
	waitStreams(t, s, 1)
	if err := s.Restart("1.52", "", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res.Err:
		if err == nil {
			t.Error("stream ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream outlived the restart")
	}
	p, err := c.Ping(ctx, client.PingOptions{})
	if err != nil || p.APIVersion != "1.52" {
		t.Errorf("ping after restart: %+v, %v", p, err)
	}
}

// TestPodmanEvents: the Podman flavour's filter matches die events by
// "died" only, and a bare label key only as a label of empty value; stop
// sends die alone, a signal a kill without the signal, a removal remove;
// a HEALTHCHECK result a bare health_status, recorded PodmanHealthLag
// later.
func TestPodmanEvents(t *testing.T) {
	s, err := dockerfake.New(dockerfake.Config{APIVersion: "1.41", Podman: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := newClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow := func(f client.Filters) client.EventsResult {
		return c.Events(ctx, client.EventsListOptions{Filters: f})
	}
	died := follow(make(client.Filters).Add("type", "container").Add("event", "start", "died", "kill", "remove", "health_status").Add("label", "team=blue"))
	die := follow(make(client.Filters).Add("event", "die", "start"))
	bare := follow(make(client.Filters).Add("label", "team"))
	waitStreams(t, s, 3)
	id, err := s.Start(webContainer("blue", map[string]string{"team": "blue"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetHealth(id, "unhealthy", "connection refused"); err != nil {
		t.Fatal(err)
	}
	inspect := func() string {
		r, err := c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(r.Container.State.Health.Status)
	}
	if h := inspect(); h != "starting" {
		t.Errorf("health %q at once, want the result recorded only after PodmanHealthLag", h)
	}
	deadline := time.Now().Add(5 * time.Second)
	for inspect() != "unhealthy" {
		if time.Now().After(deadline) {
			t.Fatal("the HEALTHCHECK result was never recorded")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	for _, step := range []func() error{
		func() error { return s.Signal(id, "HUP") },
		func() error { return s.Stop(id) },
		func() error { return s.Remove(id) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	got := collect(t, died, 5)
	want := []string{"start", "health_status", "kill", "die", "remove"}
	if !slices.Equal(actions(got), want) {
		t.Errorf("actions %v, want %v", actions(got), want)
	}
	if sig, ok := got[2].Actor.Attributes["signal"]; ok {
		t.Errorf("kill names signal %q; Podman's names none", sig)
	}
	// Barriers: a second start, and a container whose label team is empty.
	if _, err := s.Start(webContainer("plain", map[string]string{"team": ""})); err != nil {
		t.Fatal(err)
	}
	if got := actions(collect(t, die, 2)); !slices.Equal(got, []string{"start", "start"}) {
		t.Errorf("event=die,start: %v, want the starts alone", got)
	}
	if got := collect(t, bare, 1); got[0].Actor.Attributes["name"] != "web-plain" {
		t.Errorf("label=team: first event %s of %s, want the container whose label is empty", got[0].Action, got[0].Actor.Attributes["name"])
	}
}
