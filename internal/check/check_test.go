package check_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/signpost-dns/signpost/internal/check"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

func hostPort(t *testing.T, rawURL string) (netip.Addr, uint16) {
	t.Helper()
	ap, err := netip.ParseAddrPort(rawURL[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr(), ap.Port()
}

// closedPort returns a loopback port nobody listens on.
func closedPort(t *testing.T) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return uint16(p)
}

func TestSweepAgainstServer(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	c := srv.Client(t)

	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"OK"}`))
	}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database down", http.StatusInternalServerError)
	}))
	defer sick.Close()

	reg := func(id string, addr netip.Addr, port uint16, node string) {
		t.Helper()
		in := registry.Instance{ID: id, Service: "calc", Address: addr, Port: port}
		if node != "" {
			if _, err := c.ReplaceNode(ctx, node, 60e9, []registry.Instance{in}); err != nil {
				t.Fatal(err)
			}
			return
		}
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	ha, hp := hostPort(t, healthy.URL)
	sa, sp := hostPort(t, sick.URL)
	reg("ok-1", ha, hp, "")
	reg("sick-1", sa, sp, "")
	reg("dead-1", netip.MustParseAddr("127.0.0.1"), closedPort(t), "")
	reg("agent-1", sa, sp, "host-a") // an agent's: left to the agent

	state := filepath.Join(t.TempDir(), "state.json")
	for round := 1; round <= 3; round++ {
		// A new sweeper each round, as cron would run it: the failure
		// counts come from the state file.
		sw, err := check.New(&check.ServerSource{Client: c}, check.Config{Failures: 3, StateFile: state})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sw.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Checked != 3 || res.Passed != 1 || res.Failed != 2 {
			t.Fatalf("round %d: %+v", round, res)
		}
		if round < 3 && len(res.Removed) != 0 {
			t.Fatalf("round %d removed %v before 3 failures in a row", round, res.Removed)
		}
		if round == 3 && len(res.Removed) != 2 {
			t.Fatalf("round 3 removed %v, want sick-1 and dead-1", res.Removed)
		}
	}
	all, _, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, in := range all {
		got[in.ID] = true
	}
	if !got["ok-1"] || !got["agent-1"] || got["sick-1"] || got["dead-1"] {
		t.Fatalf("after three sweeps: %v", got)
	}
}

// fakeSource is a registry in memory, for the parts of the sweep that do
// not depend on the backend.
type fakeSource struct {
	eps     []check.Endpoint
	removed []string
	failRm  bool
}

func (f *fakeSource) Name() string { return "fake" }
func (f *fakeSource) Endpoints(context.Context) ([]check.Endpoint, error) {
	return f.eps, nil
}
func (f *fakeSource) Remove(_ context.Context, ep check.Endpoint) error {
	if f.failRm {
		return errors.New("throttled")
	}
	f.removed = append(f.removed, ep.Key)
	return nil
}

func TestSweepUnresolvedAndRecovery(t *testing.T) {
	flap := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if flap {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	a, p := hostPort(t, srv.URL)
	src := &fakeSource{eps: []check.Endpoint{
		{Key: "gone", Service: "calc", Target: "ip-10-0-0-9.servicediscovery.internal."},
		{Key: "flappy", Service: "calc", Address: a, Port: p},
	}}
	sw, err := check.New(src, check.Config{Failures: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := sw.Sweep(ctx)
	if err != nil || res.Unresolved != 1 || len(src.removed) != 1 || src.removed[0] != "gone" {
		t.Fatalf("unresolved target not removed at once: %+v %v %v", res, src.removed, err)
	}
	src.eps = src.eps[1:]
	flap = false
	if _, err := sw.Sweep(ctx); err != nil { // passes: the count resets
		t.Fatal(err)
	}
	flap = true
	res, _ = sw.Sweep(ctx) // one failure after a pass: not yet
	if len(res.Removed) != 0 {
		t.Fatalf("removed after one failure following a pass: %+v", res)
	}
	src.failRm = true
	res, err = sw.Sweep(ctx)
	if err == nil || len(res.Removed) != 0 {
		t.Fatalf("a failed removal must be reported: %+v %v", res, err)
	}
	src.failRm = false
	res, err = sw.Sweep(ctx)
	if err != nil || len(res.Removed) != 1 {
		t.Fatalf("removal retried on the next sweep: %+v %v", res, err)
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := check.New(&fakeSource{}, check.Config{Path: "health"}); err == nil {
		t.Fatal("a path without / accepted")
	}
	state := filepath.Join(t.TempDir(), "s.json")
	if err := writeFile(state, "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := check.New(&fakeSource{}, check.Config{StateFile: state}); err == nil {
		t.Fatal("a corrupt state file accepted")
	}
}
