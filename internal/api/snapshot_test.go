package api

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"sync"
	"testing"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
)

func put(ix *registry.Index, rev int64, id, service string, port uint16) {
	ix.Apply([]registry.Event{{Type: registry.EventPut, Rev: rev, Instance: registry.Instance{
		ID: id, Service: service, Protocol: "tcp", Address: netip.MustParseAddr("10.0.0.1"), Port: port}}})
}

// TestSnapshotsShared: clients asking for the same revision of a service
// share one encoding, also when other services change in between; a
// change of the service gives a new one; a service gone is forgotten.
func TestSnapshotsShared(t *testing.T) {
	ix := registry.NewIndex(nil)
	put(ix, 1, "a-1", "calc", 1)
	put(ix, 2, "b-1", "time", 2)
	s := newSnapshots(ix)
	var wg sync.WaitGroup
	got := make([]*snapshot, 16)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = s.forService("calc") }()
	}
	wg.Wait()
	for _, sn := range got[1:] {
		if sn != got[0] {
			t.Fatal("clients asking at once got different snapshots of one revision")
		}
	}
	var resp apiclient.ServiceResponse
	if err := json.Unmarshal(got[0].indented(), &resp); err != nil || resp.Service != "calc" || resp.Index != 1 || len(resp.Instances) != 1 {
		t.Fatalf("GET body %s (%v)", got[0].indented(), err)
	}
	var ev bytes.Buffer
	if err := got[0].writeEvent(&ev); err != nil || !bytes.HasPrefix(ev.Bytes(), []byte("id: 1\nevent: service\ndata: {")) || bytes.Count(ev.Bytes(), []byte("\n")) != 4 {
		t.Fatalf("event %q (%v)", ev.String(), err)
	}
	put(ix, 3, "b-2", "time", 3) // another service changes
	if s.forService("calc") != got[0] {
		t.Fatal("a change to another service made a new snapshot")
	}
	put(ix, 4, "a-2", "calc", 4)
	next := s.forService("calc")
	if next == got[0] || next.rev != 4 {
		t.Fatalf("after a change: rev %d, same=%v", next.rev, next == got[0])
	}
	ix.Apply([]registry.Event{{Type: registry.EventDelete, Rev: 5, Instance: registry.Instance{ID: "a-1", Service: "calc"}}, {Type: registry.EventDelete, Rev: 5, Instance: registry.Instance{ID: "a-2", Service: "calc"}}})
	if gone := s.forService("calc"); !bytes.Contains(gone.compact, []byte(`"instances":[]`)) {
		t.Fatalf("service gone: %s", gone.compact)
	}
	if _, kept := s.service["calc"]; kept {
		t.Fatal("a service gone is still kept")
	}
	all := s.forAll()
	if all != s.forAll() || all.dataRev != 5 {
		t.Fatalf("all: rev %d, shared=%v", all.dataRev, all == s.forAll())
	}
}
