// Package etcdtest starts real etcd members (the etcd server as a Go
// module) on loopback ports inside a test, for the etcd store's tests and
// for end-to-end tests of several signpost servers sharing one etcd.
package etcdtest

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

// Member is one etcd server in a test, on loopback only: embedded (the
// etcd server module) or a process of an etcd binary (StartBinaryCluster).
type Member struct {
	cfg *embed.Config
	e   *embed.Etcd
	// bin is the etcd binary of a member run as a process.
	bin  string
	proc *process
}

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// ClientURL is the member's client URL.
func (m *Member) ClientURL() string { return m.cfg.AdvertiseClientUrls[0].String() }

// Stop stops the member (gracefully for an embedded one: a leader hands
// over first; a process is killed with SIGKILL); Start starts it again on
// the same data.
func (m *Member) Stop() {
	if m.bin != "" {
		m.proc.kill()
		return
	}
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

// Kill stops the member at once, as a lost machine would: a process gets
// SIGKILL, an embedded server stops without handing its leadership over
// (raft halts first, then the listeners close).
func (m *Member) Kill() {
	if m.bin != "" {
		m.proc.kill()
		return
	}
	if m.e != nil {
		m.e.Server.HardStop()
		m.e.Close()
		m.e = nil
	}
}

// Start starts a stopped member again.
func (m *Member) Start(t testing.TB) {
	t.Helper()
	if m.bin != "" {
		m.proc.start(t, m.bin, m.args())
		return
	}
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		t.Fatalf("start etcd member %s: %v", m.cfg.Name, err)
	}
	m.e = e
}

// freePort returns a loopback port that was free a moment ago. Its
// listener is held until release, so that the ports of one cluster are
// all different.
func freePort(t testing.TB, held *[]net.Listener) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	*held = append(*held, l)
	return l.Addr().(*net.TCPAddr).Port
}

func loopURL(t testing.TB, held *[]net.Listener) url.URL {
	u, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t, held)))
	if err != nil {
		t.Fatal(err)
	}
	return *u
}

// configs makes the configuration of n members on loopback ports, each
// with its own data dir.
func configs(t testing.TB, n int, tick, election time.Duration) []*Member {
	t.Helper()
	token := fmt.Sprintf("signpost-test-%d", time.Now().UnixNano())
	members := make([]*Member, n)
	var initial []string
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for i := range members {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		peer, client := loopURL(t, &held), loopURL(t, &held)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialClusterToken = token
		cfg.TickMs = uint(tick / time.Millisecond)
		cfg.ElectionMs = uint(election / time.Millisecond)
		cfg.UnsafeNoFsync = true
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		members[i] = &Member{cfg: cfg}
		initial = append(initial, fmt.Sprintf("%s=%s", cfg.Name, peer.String()))
	}
	for _, m := range members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	return members
}

// StartCluster starts an n-member etcd cluster in the test and waits until
// it has a leader. tick and election are etcd's heartbeat interval and
// election timeout; the shortest lease etcd grants is 1.5 elections' worth
// of ticks... (3*election/tick/2 ticks), rounded up to a second.
func StartCluster(t testing.TB, n int, tick, election time.Duration) []*Member {
	t.Helper()
	members := configs(t, n, tick, election)
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
			m.Stop()
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

// Endpoints returns the client URLs of members.
func Endpoints(members []*Member) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = m.ClientURL()
	}
	return out
}
