package agent_test

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestAgentSIGKILLThenRestart kills the agent process with SIGKILL while
// containers start and stop, restarts it, and checks that DNS then holds
// exactly what Docker runs, long before the lease could have expired.
func TestAgentSIGKILLThenRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	bin := signposttest.Binary(t)
	const node = "host-k"
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "agent", "--server", s.srv.URL(), "--node", node, "--advertise-ip", "127.0.0.1",
			"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--lease-ttl", "60s", "--log-level", "debug")
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		return cmd
	}
	run := func() string {
		return s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=survivor")
	}
	a, b := run(), run()
	first := start()
	s.waitSRV("survivor", hostPort(t, a, "8081/tcp"), hostPort(t, b, "8081/tcp"))

	// Churn, and kill the agent in the middle of it.
	c := run()
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dockertest.Docker(t, "stop", "-t", "2", a)
	dockertest.Docker(t, "rm", "-f", b)
	d := run()
	e := run()
	dockertest.Docker(t, "stop", "-t", "2", e)
	first.Wait()

	restarted := time.Now()
	start()
	s.waitSRV("survivor", hostPort(t, c, "8081/tcp"), hostPort(t, d, "8081/tcp"))
	// And the registry holds exactly the running containers' instances.
	want := []string{agent.InstanceID(node, c, 8081, "tcp"), agent.InstanceID(node, d, 8081, "tcp")}
	slices.Sort(want)
	waitFor(t, "the node's instances should be exactly those of the running containers", func() (bool, string) {
		list, _, err := s.client.Instances(context.Background(), node)
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, in := range list {
			got = append(got, in.ID)
		}
		slices.Sort(got)
		return slices.Equal(got, want), strings.Join(got, ",")
	})
	if d := time.Since(restarted); d > 30*time.Second {
		t.Errorf("DNS matched Docker %s after the restart; the lease (60s) did it, not the resync", d)
	}
	wantRunning(t, s.sess, c, d)
}
