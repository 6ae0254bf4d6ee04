package agent_test

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
)

// r53Changes returns every change the emulator received in successful
// ChangeResourceRecordSets requests since it was last reset, one batch a
// line: "DELETE <name> [<set id>], UPSERT ...".
func (s *r53Stack) r53Changes() []string {
	var out []string
	for _, r := range s.emu.Requests() {
		if r.Op != r53emu.OpChangeResourceRecordSets || r.Code != "" {
			continue
		}
		var batch []string
		for _, c := range r.Changes {
			batch = append(batch, c.Action+" "+c.Name+" ["+c.SetIdentifier+"]")
		}
		out = append(out, strings.Join(batch, ", "))
	}
	return out
}

// TestRoute53RestartNoGap restarts `signpost agent --backend route53`
// with two healthy containers, once with SIGTERM and once with SIGKILL:
// the restarted agent sends no change at all for the running, unchanged
// containers. Then one container stops while the agent is down: the
// restarted agent's first change batch deletes exactly its record and
// leaves the other's alone.
func TestRoute53RestartNoGap(t *testing.T) {
	t.Parallel()
	s := newR53Stack(t)
	const host = "r53-n.servicediscovery.internal"
	env := []string{"AWS_ACCESS_KEY_ID=AKIDEMULATOR", "AWS_SECRET_ACCESS_KEY=secret",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + t.TempDir() + "/none", "AWS_SHARED_CREDENTIALS_FILE=" + t.TempDir() + "/none"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	p := newProc(t, s.log, "agent", "--backend", "route53", "--route53-endpoint", s.emu.URL(), "--region", "us-east-1",
		"--zone", r53Zone, "--node", "host-n", "--hostname", host, "--advertise-ip", "127.0.0.1",
		"--route53-rate", "50", "--route53-window", "50ms",
		"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--log-level", "debug")
	p.env = env
	run := func() string {
		return s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=_steady._tcp")
	}
	line := func(id string) string { return srvLine("_steady._tcp", host, id, hostPort(t, id, "8081/tcp")) }
	a, b := run(), run()
	p.start()
	s.waitRecords("agent started with two containers", []string{hostLine(host, "127.0.0.1"), line(a), line(b)})

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		p.signal(sig)
		s.emu.ResetRequests()
		p.start()
		waitRestarted(p, 2)
		p.waitLines(1, `msg="route53: synced"`, "owned_before=3", "upserts=0", "deletes=0")
		if got := s.r53Changes(); len(got) != 0 {
			t.Errorf("after a %s restart with unchanged containers the agent sent changes:\n%s", sig, strings.Join(got, "\n"))
		}
	}
	s.waitRecords("after the restarts", []string{hostLine(host, "127.0.0.1"), line(a), line(b)})

	// b stops while the agent is down.
	p.signal(syscall.SIGKILL)
	gone := line(b)
	dockertest.Docker(t, "stop", "-t", "1", b)
	s.emu.ResetRequests()
	p.start()
	p.waitLines(1, `msg="route53: synced"`, "owned_before=3", "upserts=0", "deletes=1")
	s.waitRecords("the stopped container's record deleted", []string{hostLine(host, "127.0.0.1"), line(a)})
	got := s.r53Changes()
	want := "DELETE _steady._tcp." + r53Zone + ". [" + host + ":" + b + "]"
	if len(got) == 0 || got[0] != want {
		t.Errorf("the restarted agent's first batch is %q, want %q (from %s)", got, want, gone)
	}
	for _, batch := range got {
		if strings.Contains(batch, a) {
			t.Errorf("a change touched the running container's record: %s", batch)
		}
	}
	wantRunning(t, s.sess, a)
}
