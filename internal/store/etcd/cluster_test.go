package etcdstore

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// member is one etcd server embedded in a test, on loopback only.
type member struct {
	cfg *embed.Config
	e   *embed.Etcd
}

func (m *member) clientURL() string { return m.cfg.AdvertiseClientUrls[0].String() }

// stop stops the member; it can be started again with start.
func (m *member) stop() {
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

func (m *member) start(t *testing.T) {
	t.Helper()
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		t.Fatalf("start etcd member %s: %v", m.cfg.Name, err)
	}
	m.e = e
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loopURL(t *testing.T) url.URL {
	u, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	return *u
}

// startCluster starts an n-member etcd cluster in the test and waits until
// it has a leader. tick and election are etcd's heartbeat interval and
// election timeout; the shortest lease etcd grants is 1.5 elections' worth
// of ticks... (3*election/tick/2 ticks), rounded up to a second.
func startCluster(t *testing.T, n int, tick, election time.Duration) []*member {
	t.Helper()
	token := fmt.Sprintf("signpost-test-%d", time.Now().UnixNano())
	members := make([]*member, n)
	var initial []string
	for i := range members {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		peer, client := loopURL(t), loopURL(t)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialClusterToken = token
		cfg.TickMs = uint(tick / time.Millisecond)
		cfg.ElectionMs = uint(election / time.Millisecond)
		cfg.UnsafeNoFsync = true
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		members[i] = &member{cfg: cfg}
		initial = append(initial, fmt.Sprintf("%s=%s", cfg.Name, peer.String()))
	}
	for _, m := range members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	errs := make(chan error, n)
	for _, m := range members {
		go func() {
			e, err := embed.StartEtcd(m.cfg)
			m.e = e
			errs <- err
		}()
	}
	for range members {
		if err := <-errs; err != nil {
			t.Fatalf("start etcd cluster: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.stop()
		}
	})
	for _, m := range members {
		select {
		case <-m.e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			t.Fatalf("etcd member %s not ready after 60s", m.cfg.Name)
		}
	}
	return members
}
