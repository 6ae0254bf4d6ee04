package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
)

// TestECSAWSVPCOnDocker is TestECSAWSVPCTask on the real engine, for
// what Docker itself shows of an awsvpc task (the ECS agent stays a
// stand-in): a pause container in network mode none and an app container
// run with --network container:<pause>, which Docker shows with no
// address and no ports (it refuses --expose and -p there). The agent
// registers the app once at the ENI address the stand-in gives, with the
// container port, and never the pause container, though it carries a
// SERVICE_ variable.
func TestECSAWSVPCOnDocker(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	port := listenerOn(t, "127.0.0.2")
	labels := func(container string) []string {
		var out []string
		for k, v := range ecsLabels(t, container) {
			if k != fakeLabel {
				out = append(out, "--label", k+"="+v)
			}
		}
		return out
	}
	service := fmt.Sprintf("SERVICE_%d_NAME=web", port)
	pause := s.sess.Run(append(labels(agent.ECSPauseContainerName), "--network", "none", "-e", service)...)
	app := s.sess.Run(append(labels("web"), "--network", "container:"+pause, "-e", service, "-e", fmt.Sprintf("PORTS=%d", port))...)
	if mode := dockertest.Docker(t, "inspect", "--format", "{{.HostConfig.NetworkMode}}", app); mode != "container:"+pause {
		t.Fatalf("Docker shows the app container's network mode %q; want container:<the pause container's full id>", mode)
	}
	f := newFakeIntrospection(t)
	f.addTask(testTaskARN, "127.0.0.2", ecsContainer{app, "web", port})
	cfg := s.agentConfig("host-awsvpc")
	cfg.ECSMetadata, cfg.ECSIntrospection, cfg.ECSIntrospectionTimeout = true, f.srv.URL, time.Second
	s.addAgent(cfg)

	recs := s.waitSRV("web", port)
	if len(recs) != 1 || recs[0].Addr != "127.0.0.2" || !strings.HasPrefix(recs[0].Target, app[:12]) {
		t.Fatalf("web SRV %v: want the app container's one record at 127.0.0.2", recs)
	}
	s.waitLog("ECS pause container", "never registered")
	dockertest.Docker(t, "stop", "-t", "1", app)
	s.waitSRV("web")
	if f.count() != 1 {
		t.Errorf("introspection asked %d times; want once", f.count())
	}
}
