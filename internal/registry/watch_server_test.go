package registry_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestWatchAfterManyDeletedServices is issue 12's "the index never
// forgets", against a real server: after 3,000 services were created and
// deleted, /v1/watch?index=0 sends the current state (the one live
// service), not thousands of empty events; a watcher from before the
// deletes gets every live service and a bounded number of removals.
func TestWatchAfterManyDeletedServices(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	inst := func(svc string, port uint16) registry.Instance {
		return registry.Instance{ID: svc + "-1", Service: svc, Address: netip.MustParseAddr("10.0.0.1"), Port: port}
	}
	w, err := c.Register(ctx, inst("keep", 1))
	if err != nil {
		t.Fatal(err)
	}
	early := w.Index

	const services = 3000
	comeAndGo(ctx, t, c, "gone", services)

	// watch reads the events of /v1/watch?index=N up to the marker
	// service, registered once the stream is open.
	marker := 0
	watch := func(index int64) []string {
		t.Helper()
		marker++
		name := fmt.Sprintf("marker-%d", marker)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/watch?index=%d", srv.URL(), index), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := c.Register(ctx, inst(name, 2)); err != nil {
			t.Fatal(err)
		}
		var got []string
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev apiclient.WatchEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("watch event %q: %v", data, err)
			}
			got = append(got, ev.Service)
			if ev.Service == name {
				return got
			}
		}
		t.Fatalf("watch ended before the marker: %v", sc.Err())
		return nil
	}

	got := watch(0)
	if strings.Join(got, " ") != "keep marker-1" {
		t.Errorf("/v1/watch?index=0 after %d services came and went sent %d events (first %v); want keep, then marker-1", services, len(got), got[:min(len(got), 5)])
	}
	got = watch(early)
	live := 0
	for _, s := range got {
		if s == "keep" || strings.HasPrefix(s, "marker-") {
			live++
		}
	}
	if live != 3 || len(got) > registry.MaxTombstones+3 {
		t.Errorf("/v1/watch?index=%d (before the deletes): %d events, %d of the 3 live services; want all 3 and at most %d removals", early, len(got), live, registry.MaxTombstones)
	}
	t.Logf("index=0: %d events; index=%d: %d events", 2, early, len(got))
}

// TestWatchResetAfterForgottenRemovals: a watcher whose index is older
// than the removals the server still remembers is told so (a reset event
// naming the services that exist) and, acting on it as apiclient.Watch's
// callers do, ends with exactly the live state: the services it knew that
// were removed meanwhile are dropped, though no event names them.
func TestWatchResetAfterForgottenRemovals(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	inst := func(svc string, n int) registry.Instance {
		return registry.Instance{ID: fmt.Sprintf("%s-%d", svc, n), Service: svc, Address: netip.MustParseAddr("10.0.0.1"), Port: uint16(1 + n)}
	}
	for _, in := range []registry.Instance{inst("keep", 1), inst("keep", 2), inst("known-a", 1), inst("known-b", 1), inst("known-b", 2)} {
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	// What the watcher knows: the state at index.
	known := map[string]map[string]registry.Instance{}
	list, index, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if known[in.Service] == nil {
			known[in.Service] = map[string]registry.Instance{}
		}
		known[in.Service][in.ID] = in
	}

	// While it is away: two of its services go, one instance of keep goes,
	// a new service comes, and more services than the server remembers
	// come and go.
	for _, id := range []string{"known-a-1", "known-b-1", "known-b-2", "keep-2"} {
		if _, err := c.Deregister(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Register(ctx, inst("new", 1)); err != nil {
		t.Fatal(err)
	}
	churn := registry.MaxTombstones + 200
	comeAndGo(ctx, t, c, "churn", churn)

	// Back: follow from index until the marker, registered once the
	// first event has come, is seen.
	resets := 0
	marked := false
	errDone := fmt.Errorf("marker seen")
	err = c.Watch(ctx, "", index, func(ev apiclient.WatchEvent) error {
		if !marked {
			marked = true
			if _, err := c.Register(ctx, inst("marker", 1)); err != nil {
				return err
			}
		}
		if ev.Reset != nil {
			resets++
			live := map[string]bool{}
			for _, s := range ev.Reset.Services {
				live[s] = true
			}
			for s := range known {
				if !live[s] {
					delete(known, s)
				}
			}
			return nil
		}
		m := map[string]registry.Instance{}
		for _, in := range ev.Instances {
			m[in.ID] = in
		}
		if len(m) == 0 {
			delete(known, ev.Service)
		} else {
			known[ev.Service] = m
		}
		if ev.Service == "marker" {
			return errDone
		}
		return nil
	})
	if err != errDone {
		t.Fatalf("watch from %d: %v", index, err)
	}
	if resets != 1 {
		t.Errorf("watch from %d, behind %d forgotten removals: %d reset events, want 1", index, churn, resets)
	}
	now, _, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, in := range now {
		want = append(want, in.ID)
	}
	for _, m := range known {
		for id := range m {
			got = append(got, id)
		}
	}
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after the watch: the watcher holds %v; the server has %v", got, want)
	}

	_, cur, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// A watcher from an index the server has not reached (one from before
	// its store was replaced, say) is told to reset, with the whole state.
	future := cur + 1_000_000
	var reset *apiclient.WatchReset
	err = c.Watch(ctx, "", future, func(ev apiclient.WatchEvent) error {
		if ev.Reset == nil {
			return fmt.Errorf("an event before the reset, from index %d: %+v", future, ev)
		}
		reset = ev.Reset
		return errDone
	})
	if err != errDone || reset == nil || strings.Join(reset.Services, " ") != "keep marker new" {
		t.Errorf("watch from index %d, ahead of the server's %d: %v, reset %+v; want a reset naming keep, marker and new", future, cur, err, reset)
	}

	// A watcher that is not behind gets no reset.
	short, cancelShort := context.WithCancel(ctx)
	defer cancelShort()
	go func() {
		_, _ = c.Register(ctx, inst("marker", 2))
	}()
	err = c.Watch(short, "", cur, func(ev apiclient.WatchEvent) error {
		if ev.Reset != nil {
			return fmt.Errorf("reset from a recent index %d", cur)
		}
		if ev.Service == "marker" {
			return errDone
		}
		return nil
	})
	if err != errDone {
		t.Errorf("watch from a recent index %d: %v", cur, err)
	}
}

// comeAndGo registers and deregisters n services named prefix-N, one
// instance each, from 16 clients at once.
func comeAndGo(ctx context.Context, t *testing.T, c *apiclient.Client, prefix string, n int) {
	t.Helper()
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += workers {
				in := registry.Instance{ID: fmt.Sprintf("%s-%d-1", prefix, i), Service: fmt.Sprintf("%s-%d", prefix, i),
					Address: netip.MustParseAddr("10.0.0.1"), Port: uint16(1 + i)}
				if _, err := c.Register(ctx, in); err != nil {
					errs <- err
					return
				}
				if _, err := c.Deregister(ctx, in.ID); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
