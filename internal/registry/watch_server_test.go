package registry_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
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
	c, err := apiclient.New(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
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

	const services, workers = 3000, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < services; i += workers {
				in := inst(fmt.Sprintf("gone-%d", i), uint16(1+i))
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
