package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// bulkSet is n instances as an agent registers them (about 450 bytes of
// JSON each), their IDs starting with prefix.
func bulkSet(prefix string, n int) []registry.Instance {
	out := make([]registry.Instance, n)
	for i := range out {
		out[i] = registry.Instance{
			ID: fmt.Sprintf("%s-%04d", prefix, i), Service: "bulk",
			Address: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 9}), Port: uint16(30000 + i),
			Tags:      []string{"v2", "blue", "zone-a"},
			Meta:      map[string]string{"version": "2.14.3", "image": "registry.example.com/team/bulk-worker:2.14.3", "commit": "9f3c2a1b7d"},
			Health:    registry.Health{Status: "passing", Output: "HTTP GET http://127.0.0.1:8080/healthz: 200 OK"},
			Container: fmt.Sprintf("bulk-worker-%s-%04d", prefix, i),
		}
	}
	return out
}

func idSet(insts []registry.Instance) string {
	ids := make([]string, len(insts))
	for i, in := range insts {
		ids[i] = in.ID
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

func TestBigNodeSetTwoServersEtcd37(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and two servers")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	bigNodeSetTwoServers(t, etcdtest.Endpoints(members))
}

func TestBigNodeSetTwoServersEtcd34(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and two servers")
	}
	members := etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 3, 100*time.Millisecond, time.Second)
	bigNodeSetTwoServers(t, etcdtest.Endpoints(members))
}

// bigNodeSetTwoServers: two servers on one etcd cluster at its default
// limits; an agent's node set of 2,000 instances is replaced by another
// 2,000 (other IDs) and back, through either server, while readers poll
// both servers' API (GET /v1/services/bulk) and their indexes: every read
// is the whole of one set or the other (or nothing, before the first).
func bigNodeSetTwoServers(t *testing.T, eps []string) {
	start := func() *testServer {
		return startServer(t, func(c *server.Config) {
			c.StoreKind = "etcd"
			c.Etcd.Endpoints = eps
			// The default budget: a set of 2,000 is given it once.
			c.Etcd.Timeout = 5 * time.Second
		})
	}
	s1, s2 := start(), start()
	servers := []*testServer{s1, s2}
	a, b := bulkSet("a", 2000), bulkSet("b", 2000)
	whole := map[string]string{"": "nothing", idSet(a): "A", idSet(b): "B"}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var reads, apiReads, bad atomic.Int64
	var mu sync.Mutex
	var bads []string
	seen := map[string]int{}
	record := func(who string, got []registry.Instance) {
		reads.Add(1)
		k := idSet(got)
		mu.Lock()
		defer mu.Unlock()
		name, ok := whole[k]
		if !ok {
			bad.Add(1)
			if len(bads) < 10 {
				bads = append(bads, fmt.Sprintf("%s read %d instances, neither set A nor set B", who, len(got)))
			}
			return
		}
		seen[who+" "+name]++
	}
	const maxReads = 20000 // each reader's bound, whatever the time
	for i, ts := range servers {
		wg.Add(2)
		go func() { // the API, as a client reads it
			defer wg.Done()
			for n := 0; n < maxReads && ctx.Err() == nil; n++ {
				r, err := ts.client.Service(ctx, "bulk", 0, 0)
				if err != nil {
					if ctx.Err() == nil && !strings.Contains(err.Error(), "404") {
						t.Errorf("server %d: GET /v1/services/bulk: %v", i+1, err)
						return
					}
					continue // 404: no such service yet
				}
				apiReads.Add(1)
				record(fmt.Sprintf("server %d API", i+1), r.Instances)
				time.Sleep(5 * time.Millisecond) // a megabyte a read: leave etcd some of the machine
			}
		}()
		go func() { // the index, which DNS answers from
			defer wg.Done()
			for n := 0; n < maxReads && ctx.Err() == nil; n++ {
				got, _ := ts.Index().Instances("bulk")
				record(fmt.Sprintf("server %d index", i+1), got)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	for round := range 6 {
		set, name := a, "A"
		if round%2 == 1 {
			set, name = b, "B"
		}
		via := servers[round%2]
		start := time.Now()
		if _, err := via.client.ReplaceNode(ctx, "bighost", 30*time.Second, set); err != nil {
			t.Fatalf("round %d: replace the node's set by %s: %v", round, name, err)
		}
		took := time.Since(start)
		for i, ts := range servers {
			waitFor(t, fmt.Sprintf("server %d to answer set %s", i+1, name), func() bool {
				got, _ := ts.Index().Instances("bulk")
				return idSet(got) == idSet(set)
			})
		}
		t.Logf("round %d: set %s of %d through server %d acknowledged in %s", round, name, len(set), round%2+1, took.Round(time.Millisecond))
		time.Sleep(100 * time.Millisecond) // let the API readers read this set too
	}
	cancel()
	wg.Wait()
	for _, b := range bads {
		t.Error(b)
	}
	t.Logf("%d reads (%d through the API), %d partial; by reader and set: %v", reads.Load(), apiReads.Load(), bad.Load(), seen)
	mu.Lock()
	defer mu.Unlock()
	for i := range servers {
		for _, set := range []string{"A", "B"} {
			if seen[fmt.Sprintf("server %d API %s", i+1, set)] == 0 {
				t.Errorf("server %d's API was never read with set %s: the test saw too little", i+1, set)
			}
		}
	}
}
