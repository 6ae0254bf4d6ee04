package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
)

// TestWatchReset: on the server's reset event, `signpost watch` prints
// every instance of the services it showed that the reset does not name
// as removed, and keeps the others.
func TestWatchReset(t *testing.T) {
	var out bytes.Buffer
	w := &watcher{out: &out, seen: map[string]map[string]registry.Instance{}}
	in := func(svc, id string) registry.Instance {
		return registry.Instance{ID: id, Service: svc, Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Protocol: "tcp"}
	}
	if err := w.start([]registry.Instance{in("a", "a-1"), in("b", "b-1"), in("b", "b-2"), in("c", "c-1")}, 5); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := w.event(apiclient.WatchEvent{Index: 900, Reset: &apiclient.WatchReset{Index: 900, Services: []string{"a", "z"}}}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, id := range []string{"b-1", "b-2", "c-1"} {
		if !strings.Contains(got, "removed  ") || !strings.Contains(got, " "+id+" ") {
			t.Errorf("after a reset naming a and z: output %q does not say %s was removed", got, id)
		}
	}
	if strings.Contains(got, "a-1") || strings.Count(got, "\n") != 3 {
		t.Errorf("after a reset naming a and z: output %q, want three removals and nothing about a-1", got)
	}
	if len(w.seen) != 1 || len(w.seen["a"]) != 1 {
		t.Errorf("after the reset the watcher holds %v, want only a", w.seen)
	}
}
