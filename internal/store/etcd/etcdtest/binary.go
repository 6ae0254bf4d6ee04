package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DebianEtcd is where Debian's etcd-server package installs etcd (3.4 on
// Debian 12).
const DebianEtcd = "/usr/bin/etcd"

// process is one run of an etcd binary.
type process struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  string // its output, appended across restarts
}

func (p *process) start(t testing.TB, bin string, args []string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("etcd log: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// args are the etcd flags of a member run as a process, from its config.
func (m *Member) args() []string {
	c := m.cfg
	return []string{
		"--name", c.Name, "--data-dir", c.Dir,
		"--listen-peer-urls", c.ListenPeerUrls[0].String(),
		"--initial-advertise-peer-urls", c.AdvertisePeerUrls[0].String(),
		"--listen-client-urls", c.ListenClientUrls[0].String(),
		"--advertise-client-urls", c.AdvertiseClientUrls[0].String(),
		"--initial-cluster", c.InitialCluster,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", c.InitialClusterToken,
		"--heartbeat-interval", fmt.Sprint(c.TickMs),
		"--election-timeout", fmt.Sprint(c.ElectionMs),
	}
}

// StartBinaryCluster starts an n-member cluster of the etcd binary bin
// (such as DebianEtcd) as processes on loopback ports, each with its own
// data dir, and waits until it has a leader. The test is skipped when bin
// is missing, unless CI is set. The members' output is in the test's
// temporary dir and is printed if the test fails.
func StartBinaryCluster(t testing.TB, bin string, n int, tick, election time.Duration) []*Member {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v (CI installs Debian's etcd-server)", bin, err)
		}
		t.Skipf("SKIPPED: no etcd binary at %s (apt-get install etcd-server): %v", bin, err)
	}
	members := configs(t, n, tick, election)
	logs := t.TempDir()
	for _, m := range members {
		m.bin = bin
		m.proc = &process{log: filepath.Join(logs, m.cfg.Name+".log")}
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.Stop()
		}
		if t.Failed() {
			for _, m := range members {
				b, _ := os.ReadFile(m.proc.log)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("etcd member %s, last lines of its log:\n%s", m.cfg.Name, strings.Join(lines[max(0, len(lines)-20):], "\n"))
			}
		}
	})
	for _, m := range members {
		m.Start(t)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: Endpoints(members), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Ready when the cluster answers and so does every member (one
		// whose port was taken meanwhile would be missing).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "ready-probe")
		for _, m := range members {
			if err == nil {
				_, err = cli.Status(ctx, m.ClientURL())
			}
		}
		cancel()
		if err == nil {
			return members
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster of %s not ready after 60s: %v", bin, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Leader returns the index in members of the current leader, asked of
// every running member; -1 if none answers that it knows one.
func Leader(t testing.TB, members []*Member) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: Endpoints(members), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	defer cli.Close()
	for i, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, m.ClientURL())
		cancel()
		if err == nil && st.Leader != 0 && st.Header.MemberId == st.Leader {
			return i
		}
	}
	return -1
}

// Pause halts a member run as a process with SIGSTOP: its connections
// stay open and nothing on them is answered, as on a hung machine.
// Resume continues it; Stop still kills it.
func (m *Member) Pause(t testing.TB) {
	t.Helper()
	m.signal(t, syscall.SIGSTOP)
}

// Resume continues a member halted by Pause.
func (m *Member) Resume(t testing.TB) {
	t.Helper()
	m.signal(t, syscall.SIGCONT)
}

func (m *Member) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if m.bin == "" {
		t.Fatalf("etcd member %s: %v needs a member run as a process", m.cfg.Name, sig)
	}
	m.proc.mu.Lock()
	defer m.proc.mu.Unlock()
	if m.proc.cmd == nil {
		return
	}
	if err := m.proc.cmd.Process.Signal(sig); err != nil {
		t.Errorf("etcd member %s: %v: %v", m.cfg.Name, sig, err)
	}
}
