package check_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/check"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestDryRunRemovesNothing sweeps a real server with --dry-run and one
// failure to remove: the logs and the summary say "would remove" and
// never "removed", and every instance is still registered afterwards.
func TestDryRunRemovesNothing(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	c := srv.Client(t)
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database down", http.StatusInternalServerError)
	}))
	defer sick.Close()
	sa, sp := hostPort(t, sick.URL)
	for _, in := range []registry.Instance{
		{ID: "sick-1", Service: "calc", Address: sa, Port: sp},
		{ID: "dead-1", Service: "calc", Address: netip.MustParseAddr("127.0.0.1"), Port: closedPort(t)},
	} {
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	sw, err := check.New(&check.ServerSource{Client: c}, check.Config{Failures: 1, DryRun: true, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sw.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := res.Report(&out); err != nil {
		t.Fatal(err)
	}
	summary := out.String()
	if !strings.Contains(summary, "checked 2: 0 passed, 2 failed, 0 unresolved, 2 would remove\n") ||
		!strings.Contains(summary, "would remove dead-1 (calc") || !strings.Contains(summary, "would remove sick-1 (calc") {
		t.Errorf("dry-run summary:\n%s\nwant \"2 would remove\" and a \"would remove\" line per endpoint", summary)
	}
	if strings.Contains(strings.ToLower(summary), "removed") {
		t.Errorf("dry-run summary says removed:\n%s", summary)
	}
	if n := strings.Count(logs.String(), "would remove endpoint (dry run)"); n != 2 {
		t.Errorf("%d \"would remove\" log lines, want 2:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "removed endpoint") {
		t.Errorf("dry-run logs say removed:\n%s", logs.String())
	}
	if len(res.Removed) != 0 {
		t.Errorf("Result.Removed = %v in a dry run", res.Removed)
	}
	list, _, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("after a dry run the server holds %d instances, want both", len(list))
	}

	// The same sweep for real removes both, and says so.
	sw, err = check.New(&check.ServerSource{Client: c}, check.Config{Failures: 1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if res, err = sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	_ = res.Report(&out)
	if !strings.Contains(out.String(), "2 removed\n") || !strings.Contains(out.String(), "removed sick-1 (calc") {
		t.Errorf("real sweep summary:\n%s", out.String())
	}
	if list, _, _ = c.Instances(ctx, ""); len(list) != 0 {
		t.Errorf("after a real sweep the server holds %d instances", len(list))
	}
}

// TestDryRunLeavesTheStateFile: dry runs that share the state file of the
// real one-shot sweep (the same command line with --dry-run added) must
// not count failures in it, or a preview run twice would make the next
// real run remove an endpoint on its first failure. A dry run still reads
// the file, so it reports what the real run would do; and in a loop
// (several sweeps of one Sweeper) it counts in memory.
func TestDryRunLeavesTheStateFile(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	c := srv.Client(t)
	in := registry.Instance{ID: "dead-1", Service: "calc", Address: netip.MustParseAddr("127.0.0.1"), Port: closedPort(t)}
	if _, err := c.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir() + "/check.json"
	sweep := func(dry bool) check.Result {
		t.Helper()
		sw, err := check.New(&check.ServerSource{Client: c}, check.Config{Failures: 3, StateFile: state, DryRun: dry, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sw.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// One real failure is counted in the file.
	if res := sweep(false); len(res.Removed) != 0 {
		t.Fatalf("removed on the first failure: %+v", res)
	}
	// Three previews: each starts from the file's one failure, so none
	// reaches three.
	for i := range 3 {
		if res := sweep(true); len(res.WouldRemove) != 0 {
			t.Fatalf("dry run %d would remove %v: the dry runs before it counted their failures in the state file", i+1, res.WouldRemove)
		}
	}
	// The second real failure: still counted from the real runs only.
	if res := sweep(false); len(res.Removed) != 0 {
		t.Fatalf("the second real failure removed %v: dry runs counted failures in the state file", res.Removed)
	}
	if list, _, _ := c.Instances(ctx, ""); len(list) != 1 {
		t.Fatalf("the server holds %d instances, want dead-1 still", len(list))
	}
	// A dry run now says the next real run would remove it, and it does.
	if res := sweep(true); len(res.WouldRemove) != 1 {
		t.Fatalf("dry run after two real failures: %+v, want dead-1 to be one the real run would remove", res)
	}
	if res := sweep(false); len(res.Removed) != 1 {
		t.Fatalf("the third real failure: %+v, want dead-1 removed", res)
	}

	// In a loop, a dry run counts in memory: its third sweep would remove.
	in.ID = "dead-2"
	if _, err := c.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	sw, err := check.New(&check.ServerSource{Client: c}, check.Config{Failures: 3, StateFile: state, DryRun: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		res, err := sw.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i == 3]; len(res.WouldRemove) != want {
			t.Fatalf("dry-run loop sweep %d would remove %v, want %d", i, res.WouldRemove, want)
		}
	}
}

// TestSweepsCountInOneRun: a run of three sweeps with --failures 3 and no
// state file removes an endpoint that fails all three, in the third, and
// keeps one that passes once among them; a run of two removes nothing.
func TestSweepsCountInOneRun(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	c := srv.Client(t)
	var flaky atomic.Int32
	blip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if flaky.Add(1) == 2 { // the second probe passes, the others fail
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer blip.Close()
	ba, bp := hostPort(t, blip.URL)
	dead := registry.Instance{ID: "dead-1", Service: "calc", Address: netip.MustParseAddr("127.0.0.1"), Port: closedPort(t)}
	for _, in := range []registry.Instance{dead, {ID: "blip-1", Service: "calc", Address: ba, Port: bp}} {
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	run := func(n int) []check.Result {
		t.Helper()
		sw, err := check.New(&check.ServerSource{Client: c}, check.Config{Failures: 3, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		var got []check.Result
		if err := sw.Sweeps(ctx, 10*time.Millisecond, n, func(r check.Result) { got = append(got, r) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("%d results for %d sweeps", len(got), n)
		}
		return got
	}
	for _, r := range run(2) {
		if len(r.Removed) != 0 {
			t.Fatalf("two sweeps with --failures 3 removed %v", r.Removed)
		}
	}
	flaky.Store(0)
	got := run(3)
	if len(got[0].Removed)+len(got[1].Removed) != 0 || len(got[2].Removed) != 1 || got[2].Removed[0].Key != "dead-1" {
		t.Fatalf("three sweeps removed %v, %v, %v: want dead-1 in the third only (blip-1 passed once)", got[0].Removed, got[1].Removed, got[2].Removed)
	}
	if list, _, _ := c.Instances(ctx, ""); len(list) != 1 || list[0].ID != "blip-1" {
		t.Fatalf("after the run the server holds %v, want blip-1 only", list)
	}
}
