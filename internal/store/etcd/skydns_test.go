package etcdstore

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

func TestSkyDNSPath(t *testing.T) {
	if got := SkyDNSPath("servicediscovery.internal."); got != "/skydns/internal/servicediscovery/" {
		t.Fatalf("SkyDNSPath = %q", got)
	}
}

// TestMirrorSkyDNS: serving instances appear in the SkyDNS layout CoreDNS's
// etcd plugin reads, with their lease; failing, deleted and expired ones
// leave it; a stale copy from before the mirror started is removed.
func TestMirrorSkyDNS(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	cli := newClient(t, members[0].ClientURL())
	s := New(cli, Options{Log: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := SkyDNSPath("servicediscovery.internal")
	if _, err := cli.Put(ctx, base+"calc/stale", `{"host":"10.9.9.9","port":1}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, testInst("hand-1", 1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.MirrorSkyDNS(ctx, "servicediscovery.internal", 5) }()
	records := func() map[string]skyDNSRecord {
		r, err := cli.Get(ctx, base, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]skyDNSRecord{}
		for _, kv := range r.Kvs {
			var rec skyDNSRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				t.Fatalf("%s: %v", kv.Key, err)
			}
			out[string(kv.Key)[len(base):]] = rec
		}
		return out
	}
	waitFor(t, "the hand registration mirrored and the stale copy gone", 20*time.Second, func() bool {
		r := records()
		rec, ok := r["calc/hand-1"]
		_, stale := r["calc/stale"]
		return ok && !stale && rec.Host == "10.1.0.1" && rec.Port == 9001 && rec.TTL == 5 && rec.Weight == 1
	})
	// A node's instances carry its lease; failing ones are not mirrored.
	failing := testInst("node-2", 2)
	failing.Health.Status = registry.HealthCritical
	if _, err := s.ReplaceNode(ctx, "host-a", 2*time.Second, []registry.Instance{testInst("node-1", 3), failing}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node's serving instance mirrored", 20*time.Second, func() bool {
		r := records()
		_, ok := r["calc/node-1"]
		_, bad := r["calc/node-2"]
		return ok && !bad
	})
	// The lease runs out (no heartbeats): the copy goes with it.
	waitFor(t, "the expired node's copy gone", 30*time.Second, func() bool {
		_, ok := records()["calc/node-1"]
		return !ok
	})
	if _, err := s.Delete(ctx, "hand-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted instance's copy gone", 20*time.Second, func() bool { return len(records()) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
