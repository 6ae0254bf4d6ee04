package serverbackend_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

func startServer(t *testing.T) *apiclient.Client {
	t.Helper()
	srv := signposttest.Start(t, server.Config{})
	c := srv.Client(t)
	return c
}

func inst(id string, port uint16) registry.Instance {
	return registry.Instance{ID: id, Service: "calc", Address: netip.MustParseAddr("127.0.0.1"), Port: port}
}

func ids(t *testing.T, c *apiclient.Client, node string) []string {
	t.Helper()
	list, _, err := c.Instances(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range list {
		out = append(out, in.ID)
	}
	return out
}

func TestBackend(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	b, err := serverbackend.New(c, "host1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Before any Sync there is no lease: Register and Heartbeat ask for a resync.
	if err := b.Register(ctx, inst("a", 1)); !errors.Is(err, backend.ErrResync) {
		t.Fatalf("Register without a lease: %v, want ErrResync", err)
	}
	if err := b.Heartbeat(ctx); !errors.Is(err, backend.ErrResync) {
		t.Fatalf("Heartbeat without a lease: %v, want ErrResync", err)
	}
	if err := b.Sync(ctx, []registry.Instance{inst("a", 1), inst("b", 2)}); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, c, "host1"); len(got) != 2 {
		t.Fatalf("after Sync: %v", got)
	}
	if err := b.Register(ctx, inst("c", 3)); err != nil {
		t.Fatal(err)
	}
	if err := b.Deregister(ctx, inst("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Deregister(ctx, inst("a", 1)); err != nil {
		t.Fatalf("Deregister of a missing instance: %v", err)
	}
	if got := ids(t, c, "host1"); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("after Register c, Deregister a: %v", got)
	}
	if err := b.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	// Sync replaces the whole set.
	if err := b.Sync(ctx, []registry.Instance{inst("d", 4)}); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, c, "host1"); len(got) != 1 || got[0] != "d" {
		t.Fatalf("after second Sync: %v", got)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, c, "host1"); len(got) != 0 {
		t.Fatalf("after Release: %v", got)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	// A lease left to expire asks for a resync.
	if err := b.Sync(ctx, []registry.Instance{inst("e", 5)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(ids(t, c, "host1")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lease of 1s never expired")
		}
		time.Sleep(100 * time.Millisecond) // polling a lease that must expire on its own
	}
	if err := b.Heartbeat(ctx); !errors.Is(err, backend.ErrResync) {
		t.Fatalf("Heartbeat after expiry: %v, want ErrResync", err)
	}
}

// TestInternalMetaStripped checks that the agent's internal "signpost."
// metadata (for the Route 53 layout) never reaches the server, by Sync or
// by Register, while the container's own metadata does.
func TestInternalMetaStripped(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	b, err := serverbackend.New(c, "host1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	withMeta := func(id string, port uint16, meta map[string]string) registry.Instance {
		in := inst(id, port)
		in.Meta = meta
		return in
	}
	internal := map[string]string{
		backend.MetaSRVName:        "_calc._tcp",
		backend.MetaContainerID:    "3f4e2a1b9c8d",
		backend.MetaContainerPorts: "1",
	}
	mixed := map[string]string{"version": "1.2"}
	for k, v := range internal {
		mixed[k] = v
	}
	if err := b.Sync(ctx, []registry.Instance{withMeta("a", 1, mixed), withMeta("b", 2, internal)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, withMeta("c", 3, mixed)); err != nil {
		t.Fatal(err)
	}
	list, _, err := c.Instances(ctx, "host1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "version=1.2", "b": "", "c": "version=1.2"}
	if len(list) != len(want) {
		t.Fatalf("instances: %+v", list)
	}
	for _, in := range list {
		var got []string
		for k, v := range in.Meta {
			got = append(got, k+"="+v)
		}
		if strings.Join(got, ",") != want[in.ID] {
			t.Errorf("instance %s has metadata %v on the server; want only %q (internal signpost.* keys stripped)", in.ID, in.Meta, want[in.ID])
		}
	}
	// The caller's maps are not changed.
	if len(mixed) != 4 || len(internal) != 3 {
		t.Errorf("the backend changed the caller's metadata: %v, %v", mixed, internal)
	}
}

// TestKnown checks what a restarted agent learns: the health the server
// holds for each of its instances that is unchanged, and nothing for one
// that moved, one that is new, or one of another node.
func TestKnown(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	b, err := serverbackend.New(c, "host1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	checked := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	ok, sick := inst("ok", 1), inst("sick", 2)
	ok.Health = registry.Health{Status: registry.HealthPassing, CheckedAt: checked, Output: "tcp connect: ok"}
	sick.Health = registry.Health{Status: registry.HealthCritical, CheckedAt: checked}
	if err := b.Sync(ctx, []registry.Instance{ok, sick, inst("moves", 3)}); err != nil {
		t.Fatal(err)
	}
	other, _ := serverbackend.New(c, "host2", 10*time.Second)
	if err := other.Sync(ctx, []registry.Instance{inst("theirs", 4)}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Known(ctx, []registry.Instance{inst("ok", 1), inst("sick", 2), inst("moves", 30), inst("new", 5), inst("theirs", 4)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["ok"].Status != registry.HealthPassing || !got["ok"].CheckedAt.Equal(checked) || got["ok"].Output != "tcp connect: ok" ||
		got["sick"].Status != registry.HealthCritical {
		t.Fatalf("Known = %+v, want ok passing (checked %s) and sick critical, nothing for moves, new or theirs", got, checked)
	}
}

// TestCallsEndOnAHungServer: a server that accepts the connection and
// never answers (a wedged process, a host gone without a reset) must not
// hold the agent's loop for ever: every call gives up with an error after
// a bound (CallTimeout), even under a context without a deadline.
func TestCallsEndOnAHungServer(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); hung.Close() })
	c, err := apiclient.New(hung.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := serverbackend.New(c, "host1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if b.CallTimeout() > time.Minute {
		t.Fatalf("CallTimeout %s with a 1s lease", b.CallTimeout())
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"Known": func() error { _, err := b.Known(ctx, []registry.Instance{inst("a", 1)}); return err },
		"Sync":  func() error { return b.Sync(ctx, []registry.Instance{inst("a", 1)}) },
		"Register": func() error {
			return b.Register(ctx, inst("a", 1))
		},
		"Deregister": func() error { return b.Deregister(ctx, inst("a", 1)) },
		"Heartbeat":  func() error { return b.Heartbeat(ctx) },
		"Release":    func() error { return b.Release(ctx) },
	}
	for name, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s against a hung server: %v, want a deadline error", name, err)
			}
		case <-time.After(time.Minute): // a liveness bound, far above CallTimeout
			t.Fatalf("%s against a hung server still blocked after a minute", name)
		}
	}
}
