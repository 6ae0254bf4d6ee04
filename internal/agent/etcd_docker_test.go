package agent_test

import (
	"log/slog"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// TestAgentSIGKILLOnEtcd is issue 7's fleet case with a real agent: two
// signpost servers on a three-member etcd cluster, a `signpost agent`
// process writing through server 1; both servers answer its container;
// the agent is killed with SIGKILL and, when its lease runs out in etcd,
// the instance leaves both servers while the container keeps running.
func TestAgentSIGKILLOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	onEtcd := func(c *server.Config) {
		c.StoreKind = "etcd"
		c.Etcd.Endpoints = etcdtest.Endpoints(members)
	}
	s1 := newStack(t, onEtcd)
	cfg2 := server.Config{Log: slog.New(slog.DiscardHandler)}
	onEtcd(&cfg2)
	s2 := &stack{t: t, srv: signposttest.Start(t, cfg2).Server, sess: s1.sess, log: s1.log}

	cmd := exec.Command(signposttest.Binary(t), "agent", "--server", s1.srv.URL(), "--node", "host-etcd",
		"--advertise-ip", "127.0.0.1", "--only-label", dockertest.TestLabel+"="+s1.sess.ID, "--lease-ttl", "3s")
	cmd.Stdout, cmd.Stderr = s1.log, s1.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	id := s1.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=fleet")
	port := hostPort(t, id, "8081/tcp")
	s1.waitSRV("fleet", port)
	s2.waitSRV("fleet", port)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	s1.waitSRV("fleet")
	s2.waitSRV("fleet")
	if st := dockertest.Docker(t, "inspect", "--format", "{{.State.Status}}", id); st != "running" {
		t.Errorf("the container is %s; only its agent died", st)
	}
}
