package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
)

// TestCarriedButDeadLeaves: an instance carried over an agent restart as
// passing, whose container stopped serving while the agent was down
// (still running, its /health failing), is taken out of DNS by its new
// check at the third failed probe in a row (the Failures threshold), as
// any passing instance would be: carrying never keeps a dead instance
// longer than the thresholds say. Its healthy sibling stays throughout.
func TestCarriedButDeadLeaves(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	run := func() string {
		return s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=sick", "-e", "SERVICE_8081_CHECK_HTTP=/health")
	}
	a, b := run(), run()
	pa, pb := hostPort(t, a, "8081/tcp"), hostPort(t, b, "8081/tcp")
	p := newProc(t, s.log, "agent", "--server", s.srv.URL(), "--node", "host-dead", "--advertise-ip", "127.0.0.1",
		"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--log-level", "debug")
	p.start()
	s.waitSRV("sick", pa, pb)

	p.signal(syscall.SIGKILL)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/fail", pa)) // a's container stops serving /health
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	p.start()
	id := agent.InstanceID("host-dead", a, 8081, "tcp")
	p.waitLines(1, "health carried over from the backend", "carried=2 instances=2")
	p.waitLines(1, "first health check since the agent started failed; carried health kept", "instance="+id, "failures_in_a_row=1")
	s.waitSRV("sick", pb)
	p.waitLines(1, "health transition", "instance="+id, "from=passing", "to=critical", "failures_in_a_row=3")
	wantRunning(t, s.sess, a, b)
}
