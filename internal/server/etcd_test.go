package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

func startOnEtcd(t *testing.T, endpoints []string) *testServer {
	t.Helper()
	return startServer(t, func(c *server.Config) {
		c.StoreKind = "etcd"
		c.Etcd.Endpoints = endpoints
		c.Etcd.Timeout = 2 * time.Second
	})
}

func srvCount(t *testing.T, ts *testServer, name string) int {
	t.Helper()
	return len(records[*dns.SRV](ts.ask(t, "udp", name, dns.TypeSRV, 0).Answer))
}

func healthz(t *testing.T, ts *testServer) int {
	t.Helper()
	resp, err := http.Get(ts.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTwoServersOnThreeEtcdMembers is issue 7's "done when": a real
// three-member etcd cluster on loopback, two signpost servers on it, and a
// node (an agent) that stops heartbeating.
func TestTwoServersOnThreeEtcdMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	eps := etcdtest.Endpoints(members)
	s1 := startOnEtcd(t, eps)
	s2 := startOnEtcd(t, eps)
	ctx := context.Background()
	calc := "_calc._tcp." + zone

	// A registration through server 1 is answered by server 2.
	s1.register(t, inst("calc-1", "calc", "10.10.0.1", 8081))
	waitFor(t, "server 2 to answer server 1's registration", func() bool { return srvCount(t, s2, calc) == 1 })

	// An agent's node set through server 2, heartbeats through server 1;
	// then the agent dies: its instances leave both servers with the lease.
	agentSet := []registry.Instance{inst("calc-a1", "calc", "10.10.1.1", 32768), inst("calc-a2", "calc", "10.10.1.2", 32768)}
	if _, err := s2.client.ReplaceNode(ctx, "host-a", 2*time.Second, agentSet); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both servers to answer the agent's instances", func() bool {
		return srvCount(t, s1, calc) == 3 && srvCount(t, s2, calc) == 3
	})
	for i := 0; i < 4; i++ { // two TTLs of heartbeats: the lease holds
		if err := s1.client.Heartbeat(ctx, "host-a"); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if srvCount(t, s1, calc) != 3 {
		t.Fatal("a heartbeating node lost its instances")
	}
	// The agent is killed: no more heartbeats.
	waitFor(t, "the dead agent's instances to leave both servers", func() bool {
		return srvCount(t, s1, calc) == 1 && srvCount(t, s2, calc) == 1
	})

	// One etcd member stopped: reads and writes go on.
	members[0].Stop()
	waitFor(t, "a write through server 2 with one member down", func() bool {
		_, err := s2.client.Register(ctx, inst("calc-2", "calc", "10.10.0.2", 8081))
		return err == nil
	})
	waitFor(t, "server 1 to answer it", func() bool { return srvCount(t, s1, calc) == 2 })

	// Server 2 restarted: its answers are rebuilt from etcd.
	s2.Stop()
	s2 = startOnEtcd(t, eps[1:])
	if n := srvCount(t, s2, calc); n != 2 {
		t.Fatalf("restarted server answers %d instances, want 2", n)
	}

	// etcd gone altogether: answers go on from memory, health says
	// degraded, writes are refused with 503.
	members[1].Stop()
	members[2].Stop()
	waitFor(t, "both servers to report degraded", func() bool {
		return healthz(t, s1) == http.StatusServiceUnavailable && healthz(t, s2) == http.StatusServiceUnavailable
	})
	if srvCount(t, s1, calc) != 2 || srvCount(t, s2, calc) != 2 {
		t.Fatal("answers stopped with etcd down")
	}
	// /healthz is open to anyone: it says why, but names no endpoint.
	if resp, err := http.Get(s1.URL() + "/healthz"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, ep := range eps {
			if strings.Contains(string(body), strings.TrimPrefix(ep, "http://")) {
				t.Errorf("/healthz with etcd down names the endpoint %s: %s", ep, body)
			}
		}
		if !strings.Contains(string(body), "etcd") {
			t.Errorf("/healthz with etcd down does not say what happened: %s", body)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := s1.client.Register(wctx, inst("calc-3", "calc", "10.10.0.3", 8081))
	cancel()
	if !apiclient.IsStatus(err, http.StatusServiceUnavailable) {
		t.Fatalf("a write with etcd down: %v, want 503", err)
	}

	// etcd back: the servers catch up and take writes again.
	for _, m := range members {
		m.Start(t)
	}
	waitFor(t, "both servers healthy again", func() bool {
		return healthz(t, s1) == http.StatusOK && healthz(t, s2) == http.StatusOK
	})
	waitFor(t, "a write after etcd came back", func() bool {
		_, err := s1.client.Register(ctx, inst("calc-3", "calc", "10.10.0.3", 8081))
		return err == nil
	})
	waitFor(t, "server 2 to answer it", func() bool { return srvCount(t, s2, calc) == 3 })
}
