package fleet

import (
	"os"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/signposttest"
)

func TestMain(m *testing.M) {
	RunRole()
	os.Exit(m.Run())
}

// fleetOf starts the fleet's hosts, etcd (bin: DebianEtcd, or "" for
// the embedded 3.7) and servers.
type fleetRig struct {
	net     *Net
	etcd    []*Member
	servers []*Server
	agents  []*Host
	client  *Host
	dir     string
}

func startFleet(t *testing.T, etcdBin string, o ServerOptions) *fleetRig {
	Skip(t)
	bin := signposttest.Binary(t)
	r := &fleetRig{net: NewNet(t), dir: t.TempDir()}
	var eh, sh []*Host
	for _, n := range []string{"e1", "e2", "e3"} {
		eh = append(eh, r.net.AddHost(n))
	}
	for _, n := range []string{"s1", "s2"} {
		sh = append(sh, r.net.AddHost(n))
	}
	for _, n := range []string{"a1", "a2", "a3", "a4"} {
		r.agents = append(r.agents, r.net.AddHost(n))
	}
	r.client = r.net.AddHost("client")
	r.etcd = StartEtcd(t, r.dir, etcdBin, eh)
	cli, err := EtcdClient(r.client, r.etcd)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	WaitEtcd(t, cli, r.etcd)
	r.servers = StartServers(t, r.dir, bin, sh, r.etcd, o)
	WaitHealthy(t, r.client, r.servers, 60*time.Second)
	return r
}

func TestFleetUp(t *testing.T) {
	start := time.Now()
	startFleet(t, "", ServerOptions{LeaseTTL: 3 * time.Second, StaleAfter: 2 * time.Second, MaxStale: 3 * time.Second, EtcdTimeout: 2 * time.Second})
	t.Logf("fleet up in %s", time.Since(start))
}
