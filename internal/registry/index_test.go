package registry

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestIndexForgetsDeletedServices: after 3,000 services were created and
// deleted, a new watcher (rev 0) gets only the live services, tombstones
// stay bounded, and a watcher from before the forgotten deletes gets the
// whole state; one from a recent revision gets just what changed.
func TestIndexForgetsDeletedServices(t *testing.T) {
	ix := NewIndex(slog.New(slog.DiscardHandler))
	var rev int64
	put := func(id, svc string) {
		rev++
		ix.Apply([]Event{{Type: EventPut, Rev: rev, Instance: Instance{ID: id, Service: svc, Address: netip.MustParseAddr("10.0.0.1"), Port: 1}}})
	}
	del := func(id, svc string) {
		rev++
		ix.Apply([]Event{{Type: EventDelete, Rev: rev, Instance: Instance{ID: id, Service: svc}}})
	}
	put("keep-1", "keep")
	early := rev
	for i := range 3000 {
		svc := fmt.Sprintf("gone-%d", i)
		put(svc+"-1", svc)
		del(svc+"-1", svc)
	}
	recent := rev
	put("late-1", "late")
	del("old-never", "never") // a delete of something the index never had

	got, cur, reset := ix.ChangedSince(0)
	if !slices.Equal(got, []string{"keep", "late"}) || cur != rev || reset {
		t.Errorf("ChangedSince(0) = %d services (first %v), %d, reset %v; want [keep late], %d, no reset", len(got), got[:min(len(got), 5)], cur, reset, rev)
	}
	if n := len(ix.svcRev) - len(ix.bySvc); n > MaxTombstones {
		t.Errorf("%d tombstones kept, want at most %d", n, MaxTombstones)
	}
	if ix.Forgotten() <= early {
		t.Fatalf("Forgotten() = %d, want past %d", ix.Forgotten(), early)
	}
	// From before the forgotten deletes: a reset, with the live services.
	got, _, reset = ix.ChangedSince(early)
	if !slices.Equal(got, []string{"keep", "late"}) || !reset {
		t.Errorf("ChangedSince(%d) from before the forgotten deletes: %d services (first %v), reset %v; want [keep late], reset", early, len(got), got[:min(len(got), 5)], reset)
	}
	// From a recent revision: what changed since.
	got, _, reset = ix.ChangedSince(recent)
	if !slices.Equal(got, []string{"late"}) || reset {
		t.Errorf("ChangedSince(%d) = %v, reset %v; want [late], no reset", recent, got, reset)
	}
	// A blocking query on a service removed and forgotten since its index
	// answers at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r := ix.WaitService(ctx, "gone-0", early); r <= early || ctx.Err() != nil {
		t.Errorf("WaitService(gone-0, %d) = %d after the wait ran out; want an answer at once past %d", early, r, early)
	}
	// ... with an index to block on from then on.
	list, r := ix.Instances("gone-0")
	if len(list) != 0 || r != ix.Forgotten() {
		t.Errorf("Instances(gone-0) = %d instances, index %d; want none, index %d", len(list), r, ix.Forgotten())
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if got := ix.WaitService(short, "gone-0", r); got > r {
		t.Errorf("WaitService(gone-0, %d) answered %d though nothing changed", r, got)
	}
}
