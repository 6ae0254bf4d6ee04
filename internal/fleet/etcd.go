package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// DebianEtcd is where Debian's etcd-server package puts etcd (3.4).
const DebianEtcd = "/usr/bin/etcd"

// roleEnv names the role a re-executed test binary plays; memberEnv
// holds an embedded member's configuration.
const (
	roleEnv   = "SIGNPOST_FLEET_ROLE"
	memberEnv = "SIGNPOST_FLEET_MEMBER"
)

// Raft timing of the fleet's etcd: quick elections, so that a fault's
// effects show within a short run.
const (
	etcdTick     = 50 * time.Millisecond
	etcdElection = 500 * time.Millisecond
)

// memberConfig is an etcd member's configuration, for the embedded
// member's process and for the etcd binary's flags alike.
type memberConfig struct {
	Name, Dir, Peer, Client, Cluster string
}

func (c memberConfig) flags() []string {
	return []string{
		"--name", c.Name, "--data-dir", c.Dir,
		"--listen-peer-urls", c.Peer, "--initial-advertise-peer-urls", c.Peer,
		"--listen-client-urls", c.Client, "--advertise-client-urls", c.Client,
		"--initial-cluster", c.Cluster, "--initial-cluster-state", "new",
		"--initial-cluster-token", "signpost-fleet",
		"--heartbeat-interval", fmt.Sprint(etcdTick.Milliseconds()),
		"--election-timeout", fmt.Sprint(etcdElection.Milliseconds()),
	}
}

// RunRole plays the role the environment names, if any, and then exits:
// the fleet test's TestMain calls it first, so that the test binary,
// started on a host, is an embedded etcd member (the etcd server module
// this repository builds with, 3.7).
func RunRole() {
	switch os.Getenv(roleEnv) {
	case "":
		return
	case "etcd":
		if err := runMember(os.Getenv(memberEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "fleet etcd member:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "fleet: unknown role %q\n", os.Getenv(roleEnv))
		os.Exit(2)
	}
}

func runMember(spec string) error {
	var c memberConfig
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		return fmt.Errorf("member config %q: %w", spec, err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = c.Name, c.Dir
	peer, err := url.Parse(c.Peer)
	if err != nil {
		return err
	}
	client, err := url.Parse(c.Client)
	if err != nil {
		return err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = c.Cluster
	cfg.InitialClusterToken = "signpost-fleet"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.TickMs = uint(etcdTick.Milliseconds())
	cfg.ElectionMs = uint(etcdElection.Milliseconds())
	cfg.LogLevel = "warn"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", c.Name, err)
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-e.Err():
		return err
	}
}

// Member is one etcd member on its own host.
type Member struct {
	*Proc
	cfg memberConfig
}

// ClientURL is the member's client URL.
func (m *Member) ClientURL() string { return m.cfg.Client }

// StartEtcd starts one member on each host: Debian's etcd 3.4 when bin
// is DebianEtcd, else the test binary itself as an embedded 3.7 member.
// It waits until the cluster answers through every member.
func StartEtcd(t testing.TB, dir, bin string, hosts []*Host) []*Member {
	t.Helper()
	var cluster []string
	for i, h := range hosts {
		cluster = append(cluster, fmt.Sprintf("m%d=http://%s:2380", i+1, h.Addr))
	}
	var members []*Member
	for i, h := range hosts {
		c := memberConfig{
			Name:    fmt.Sprintf("m%d", i+1),
			Dir:     filepath.Join(dir, fmt.Sprintf("m%d.etcd", i+1)),
			Peer:    fmt.Sprintf("http://%s:2380", h.Addr),
			Client:  fmt.Sprintf("http://%s:2379", h.Addr),
			Cluster: strings.Join(cluster, ","),
		}
		var p *Proc
		if bin == DebianEtcd {
			if _, err := os.Stat(bin); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s: %v (CI installs Debian's etcd-server)", bin, err)
				}
				t.Skipf("SKIPPED: no etcd binary at %s (apt-get install etcd-server): %v", bin, err)
			}
			p = h.Start(t, dir, c.Name, bin, nil, c.flags()...)
		} else {
			spec, _ := json.Marshal(c)
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			p = h.Start(t, dir, c.Name, self, []string{roleEnv + "=etcd", memberEnv + "=" + string(spec)})
		}
		members = append(members, &Member{Proc: p, cfg: c})
	}
	return members
}

// EtcdClient is a client of the members from host h.
func EtcdClient(h *Host, members []*Member) (*clientv3.Client, error) {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL())
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return h.DialContext(ctx, "tcp", addr)
		})},
	})
}

// WaitEtcd waits until a write goes through and every member answers.
func WaitEtcd(t testing.TB, cli *clientv3.Client, members []*Member) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Put(ctx, "/fleet/ready", "1")
		for _, m := range members {
			if err == nil {
				_, err = cli.Status(ctx, m.ClientURL())
			}
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not ready after 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Leader returns the index of the members' leader, -1 if none is known.
func Leader(ctx context.Context, cli *clientv3.Client, members []*Member) int {
	for _, m := range members {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.ClientURL())
		cancel()
		if err != nil || st.Leader == 0 {
			continue
		}
		for j, o := range members {
			ost, err := cli.Status(ctx, o.ClientURL())
			if err == nil && ost.Header.MemberId == st.Leader {
				return j
			}
		}
	}
	return -1
}
