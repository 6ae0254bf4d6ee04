package server_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// A write that changes nothing (an agent's periodic sync of an unchanged
// node) is answered at etcd's current revision. When that revision is a
// key outside signpost's prefix (another application on the same etcd),
// no event of the registry's watch carries it: the server must not wait
// out its whole index wait (5 s) before answering.
func TestUnchangedWriteOnSharedEtcd(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 100*time.Millisecond, time.Second)
	ts := startServer(t, func(c *server.Config) {
		c.StoreKind = "etcd"
		c.Etcd.Endpoints = etcdtest.Endpoints(members)
	})
	in := registry.Instance{ID: "calc-1", Service: "calc", Protocol: "tcp", Address: netip.MustParseAddr("10.1.0.1"), Port: 8080, Node: "host-a",
		Health: registry.Health{Status: registry.HealthPassing}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ts.client.ReplaceNode(ctx, "host-a", 10*time.Second, []registry.Instance{in}); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdtest.Endpoints(members), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := range 3 {
		if _, err := cli.Put(ctx, "/another-app/key", "v"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, err := ts.client.ReplaceNode(ctx, "host-a", 10*time.Second, []registry.Instance{in})
		if err != nil {
			t.Fatal(err)
		}
		// The index wait is 5 s; a node set that waited it out is the bug.
		if took := time.Since(start); took > 4*time.Second {
			t.Fatalf("sync %d of an unchanged node after another application's write took %s (answered at revision %d): the server waited out its index wait", i, took, resp.Index)
		}
	}
}
