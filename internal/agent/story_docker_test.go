package agent_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/backend/serverbackend"
)

// TestLogsTellTheStory starts a container with a typo in a convention and
// an upper-case name, then stops it, and reads the agent's log as a user
// would: the typo warned of, the name's new form said once, and one line
// for each registration and deregistration with the container, the
// service, the address:port and why.
func TestLogsTellTheStory(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	name := "story-" + s.sess.ID
	id := s.sess.Run("--name", name, "-p", "8081", "-p", "8082", "-e", "PORTS=8081,8082",
		"-e", "SERVICE_8081_NAM=web", "-e", "SERVICE_8082_NAME=MyWeb")
	port := hostPort(t, id, "8082/tcp")
	s.waitSRV("myweb", port)
	s.waitLog("level=WARN", "looks like a typo", "container="+name, "variable=SERVICE_8081_NAM", "SERVICE_8081_NAME")
	s.waitLog("level=INFO", "service name normalised", "container="+name, "SERVICE_8082_NAME", `\"myweb\"`)
	addr := fmt.Sprintf("address=127.0.0.1:%d", port)
	s.waitLog("level=INFO", "instance registered", "container="+name, "service=myweb", addr, "why=")
	if n := strings.Count(s.log.String(), "service name normalised"); n != 1 {
		t.Errorf("the normalised name was said %d times, want once", n)
	}
	if strings.Contains(s.log.String(), "service=web ") {
		t.Errorf("the typo SERVICE_8081_NAM registered a service web:\n%s", s.log.String())
	}
	dockertest.Docker(t, "stop", "-t", "1", id)
	s.waitLog("level=INFO", "instance deregistered", "container="+name, "service=myweb", addr, "why=")
}

// TestDockerUnreachableInHealth runs an agent whose Docker does not
// answer: its Health says so, naming the address, and the log warns.
func TestDockerUnreachableInHealth(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	sock := filepath.Join(t.TempDir(), "docker.sock")
	cfg := s.agentConfig("host-b")
	cfg.Docker = "unix://" + sock
	be, err := serverbackend.New(s.client, cfg.Node, cfg.LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Health(); err != nil {
		t.Fatalf("before Run, Health: %v, want nil", err)
	}
	runUntilCleanup(t, a, cfg.Node)
	s.waitLog("level=WARN", "waiting for Docker to answer", sock)
	waitFor(t, "Health to report Docker unreachable", func() (bool, string) {
		err := a.Health()
		return err != nil && strings.Contains(err.Error(), sock) && strings.Contains(err.Error(), "unreachable"), fmt.Sprint(err)
	})
}
