package agent_test

// Tests of the agent with the Route 53 backend, against real Docker
// containers and r53emu, the project's Route 53 API emulator on
// 127.0.0.1 (not AWS). Like the other Docker tests they skip loudly when
// no engine answers and fail instead when CI=true.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

const r53Zone = "servicediscovery.internal"

// r53Stack is one test's emulator, zone and Docker session.
type r53Stack struct {
	t    *testing.T
	emu  *r53emu.Server
	zone string // zone id
	sess *dockertest.Session
	log  *syncBuf
}

func newR53Stack(t *testing.T) *r53Stack {
	t.Helper()
	sess := dockertest.New(t)
	dockertest.Image(t)
	emu, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	s := &r53Stack{t: t, emu: emu, zone: emu.AddZone(r53emu.Zone{Name: r53Zone, Private: true}), sess: sess, log: &syncBuf{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", s.log.String())
			t.Logf("zone:\n%s", s.dump())
		}
	})
	return s
}

func (s *r53Stack) logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_agent", name)
}

// emuCredentials are static credentials for the emulator: the SDK's
// default chain is never consulted.
var emuCredentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "secret", Source: "test"}, nil
})

// backendConfig is a Route 53 backend for host, reaching only the
// emulator with static credentials. Rate and backoff are quick so that
// tests are; the benchmark uses the defaults.
func (s *r53Stack) backendConfig(host string) route53backend.Config {
	return route53backend.Config{
		Zone:        r53Zone,
		Hostname:    host,
		HostAddress: netip.MustParseAddr("127.0.0.1"),
		Endpoint:    s.emu.URL(),
		Region:      "us-east-1",
		Credentials: emuCredentials,
		Rate:        50,
		Burst:       5,
		Window:      50 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Log:         s.logger(host),
	}
}

// addAgent runs an in-process agent on the Route 53 backend until the
// test ends.
func (s *r53Stack) addAgent(host string, bcfg route53backend.Config) *route53backend.Backend {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	be, err := route53backend.New(ctx, bcfg)
	if err != nil {
		s.t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Node:        host,
		AdvertiseIP: "127.0.0.1",
		MaxBackoff:  time.Second,
		Labels:      map[string]string{dockertest.TestLabel: s.sess.ID},
		Log:         s.logger(host),
	}, be)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { // after the agent stops (cleanups run last first)
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = be.Close(cctx)
	})
	runUntilCleanup(s.t, a, host)
	return be
}

// rr is one record set as a comparable line:
// "<name> <type> [<set id>] w=<weight> ttl=<ttl> <values>".
func rr(r r53emu.RecordSet) string {
	w := "-"
	if r.Weight != nil {
		w = fmt.Sprint(*r.Weight)
	}
	return fmt.Sprintf("%s %s [%s] w=%s ttl=%d %s", r.Name, r.Type, r.SetIdentifier, w, r.TTL, strings.Join(r.Values, ","))
}

// records returns the zone's record sets (SOA and NS left out), sorted.
func (s *r53Stack) records() []string {
	var out []string
	for _, r := range s.emu.Records(s.zone) {
		if r.Type == "SOA" || r.Type == "NS" {
			continue
		}
		out = append(out, rr(r))
	}
	sort.Strings(out)
	return out
}

func (s *r53Stack) dump() string { return strings.Join(s.records(), "\n") }

// waitRecords waits until the zone holds exactly want (besides SOA, NS).
func (s *r53Stack) waitRecords(what string, want []string) {
	s.t.Helper()
	want = slices.Clone(want)
	sort.Strings(want)
	waitFor(s.t, what+": the zone should hold exactly\n"+strings.Join(want, "\n"), func() (bool, string) {
		got := s.records()
		return slices.Equal(got, want), "\n" + strings.Join(got, "\n")
	})
}

// srvLine is the original agent's SRV record set of one container port.
func srvLine(name, host, cid string, port uint16) string {
	return fmt.Sprintf("%s.%s. SRV [%s:%s] w=1 ttl=0 1 1 %d %s", name, r53Zone, host, cid, port, host)
}

// hostLine is a host's A record set.
func hostLine(host, addr string) string {
	label, _, _ := strings.Cut(host, ".")
	return fmt.Sprintf("%s.%s. A [%s] w=1 ttl=0 %s", label, r53Zone, host, addr)
}

// seedOtherHost writes another host's records, as another agent (or the
// original one) would have, and returns them as lines.
func (s *r53Stack) seedOtherHost() []string {
	s.t.Helper()
	const other = "other-host.servicediscovery.internal"
	one := int64(1)
	sets := []r53emu.RecordSet{
		{Name: "_calc._tcp." + r53Zone, Type: "SRV", SetIdentifier: other + ":0123456789ab", Weight: &one, TTL: 0, Values: []string{"1 1 32000 " + other}},
		{Name: "calc." + r53Zone, Type: "SRV", SetIdentifier: other + ":ba9876543210", Weight: &one, TTL: 0, Values: []string{"1 1 32001 " + other}},
		{Name: "other-host." + r53Zone, Type: "A", SetIdentifier: other, Weight: &one, TTL: 0, Values: []string{"10.9.9.9"}},
	}
	if err := s.emu.Seed(s.zone, sets...); err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, r := range sets {
		r.Name += "."
		out = append(out, rr(r))
	}
	return out
}

// TestRoute53RecordLayout runs containers under an agent writing to the
// emulated zone and checks the records are exactly the original agent's
// (SRV <name>.<zone> "1 1 <hostPort> <hostname>", SetIdentifier
// <hostname>:<containerID>[:<port>], weight 1, TTL 0, the host A record),
// that they go with the containers, that a stale record of this host is
// removed at start and that another host's records are never touched.
func TestRoute53RecordLayout(t *testing.T) {
	t.Parallel()
	s := newR53Stack(t)
	const host = "r53-a.servicediscovery.internal"
	others := s.seedOtherHost()
	one := int64(1)
	stale := r53emu.RecordSet{Name: "_calc._tcp." + r53Zone, Type: "SRV", SetIdentifier: host + ":deadbeef", Weight: &one, Values: []string{"1 1 31999 " + host}}
	if err := s.emu.Seed(s.zone, stale); err != nil {
		t.Fatal(err)
	}
	s.addAgent(host, s.backendConfig(host))
	s.waitRecords("after the start-up resync (stale record of this host gone, the other host's kept)", append(slices.Clone(others), hostLine(host, "127.0.0.1")))

	srvForm := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=_calc._tcp", "-e", "CALC_PASSWORD=hunter2")
	plain := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=calc")
	two := s.sess.Run("-p", "8081", "-p", "8082", "-e", "PORTS=8081,8082", "-e", "SERVICE_8081_NAME=time", "-e", "SERVICE_8082_NAME=_admin._tcp")
	hpTwo81, hpTwo82 := hostPort(t, two, "8081/tcp"), hostPort(t, two, "8082/tcp")
	want := append(slices.Clone(others), hostLine(host, "127.0.0.1"),
		srvLine("_calc._tcp", host, srvForm, hostPort(t, srvForm, "8081/tcp")),
		srvLine("calc", host, plain, hostPort(t, plain, "8081/tcp")),
		srvLine("time", host, fmt.Sprintf("%s:%d", two, hpTwo81), hpTwo81),
		srvLine("_admin._tcp", host, fmt.Sprintf("%s:%d", two, hpTwo82), hpTwo82),
	)
	s.waitRecords("three containers running", want)

	dockertest.Docker(t, "stop", "-t", "2", srvForm)
	dockertest.Docker(t, "rm", "-f", two)
	s.waitRecords("two containers gone", append(slices.Clone(others), hostLine(host, "127.0.0.1"),
		srvLine("calc", host, plain, hostPort(t, plain, "8081/tcp"))))
	dockertest.Docker(t, "rm", "-f", plain)
	s.waitRecords("all containers gone", append(slices.Clone(others), hostLine(host, "127.0.0.1")))
	for _, r := range s.emu.Requests() {
		if r.Code == r53emu.CodeInvalidChangeBatch || r.Code == r53emu.CodeInvalidInput {
			t.Errorf("the emulator refused a request: %+v", r)
		}
	}
}

// TestRoute53SIGKILLThenRestart runs `signpost agent --backend route53`
// as a process, kills it with SIGKILL while containers start and stop,
// restarts it, and checks that the zone then holds exactly what Docker
// runs, and still every record of another host.
func TestRoute53SIGKILLThenRestart(t *testing.T) {
	t.Parallel()
	s := newR53Stack(t)
	bin := signposttest.Binary(t)
	const host = "r53-k.servicediscovery.internal"
	others := s.seedOtherHost()
	env := []string{"AWS_ACCESS_KEY_ID=AKIDEMULATOR", "AWS_SECRET_ACCESS_KEY=secret",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + t.TempDir() + "/none", "AWS_SHARED_CREDENTIALS_FILE=" + t.TempDir() + "/none"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "agent", "--backend", "route53", "--route53-endpoint", s.emu.URL(), "--region", "us-east-1",
			"--zone", r53Zone, "--node", "host-k", "--hostname", host, "--advertise-ip", "127.0.0.1",
			"--route53-rate", "50", "--route53-window", "50ms",
			"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--log-level", "debug")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		return cmd
	}
	run := func() string {
		return s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=_survivor._tcp")
	}
	line := func(id string) string { return srvLine("_survivor._tcp", host, id, hostPort(t, id, "8081/tcp")) }
	base := append(slices.Clone(others), hostLine(host, "127.0.0.1"))

	a, b := run(), run()
	first := start()
	s.waitRecords("agent started with two containers", append(slices.Clone(base), line(a), line(b)))

	// Churn, and kill the agent in the middle of it.
	c := run()
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	lineA, lineB := line(a), line(b)
	dockertest.Docker(t, "stop", "-t", "2", a)
	dockertest.Docker(t, "rm", "-f", b)
	d := run()
	e := run()
	dockertest.Docker(t, "stop", "-t", "2", e)
	// Route 53 has no leases: with the agent dead, a's and b's records stay.
	if got := s.records(); !slices.Contains(got, lineA) || !slices.Contains(got, lineB) {
		t.Fatalf("records of the dead agent vanished without a resync:\n%s", strings.Join(got, "\n"))
	}

	second := start()
	final := append(slices.Clone(base), line(c), line(d))
	sort.Strings(final)
	s.waitRecords("restarted agent resynced", final)
	wantRunning(t, s.sess, c, d)

	// A graceful stop exits cleanly and leaves the records (no leases).
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("agent after SIGTERM: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("agent still running %s after SIGTERM", waitTimeout)
	}
	if got := s.records(); !slices.Equal(got, final) {
		t.Errorf("after a graceful stop the zone holds:\n%s", strings.Join(got, "\n"))
	}
}

// TestRoute53VanishedContainer checks that containers gone before the
// agent inspects them crash nothing. The agent's start-up sync is held up
// (the emulator answers Throttling to ListResourceRecordSets) while
// containers that exit at once are run with --rm and removed; the agent
// then replays their start events, and its inspect finds them gone.
// Then more such containers come while the agent follows events live.
// The zone must end with only the container that stays.
func TestRoute53VanishedContainer(t *testing.T) {
	t.Parallel()
	s := newR53Stack(t)
	const host = "r53-v.servicediscovery.internal"
	img := dockertest.Image(t)
	ghosts := func(n int) {
		for i := 0; i < n; i++ {
			// "/web -healthcheck" with nothing listening exits 1 at once.
			args := append([]string{"run", "-d", "--rm"}, s.sess.Labels()...)
			args = append(args, "-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=ghost", img, "-healthcheck")
			if _, err := dockertest.Try(args...); err != nil {
				t.Logf("docker run --rm of a container that exits at once: %v", err)
			}
		}
	}
	gone := func(want string) {
		waitFor(t, "the --rm containers should be gone from Docker", func() (bool, string) {
			out, err := dockertest.Try("ps", "-aq", "--no-trunc", "--filter", "label="+dockertest.TestLabel+"="+s.sess.ID)
			if err != nil {
				return false, err.Error()
			}
			return strings.TrimSpace(out) == want, out
		})
	}
	s.emu.FailNext(r53emu.OpListResourceRecordSets, r53emu.CodeThrottling, 1000)
	bcfg := s.backendConfig(host)
	// The held-up sync retries for many seconds, until ClearInjected.
	bcfg.MaxBackoff, bcfg.MaxAttempts = 2*time.Second, 30
	s.addAgent(host, bcfg)
	ghosts(3)
	gone("")
	s.emu.ClearInjected()
	waitFor(t, "the agent should have found a replayed container gone", func() (bool, string) {
		return strings.Contains(s.log.String(), "container vanished before it could be inspected"), "no such log line yet"
	})
	s.waitRecords("agent synced", []string{hostLine(host, "127.0.0.1")})

	stays := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=stays")
	ghosts(4)
	gone(stays)
	s.waitRecords("only the container that stays", []string{hostLine(host, "127.0.0.1"), srvLine("stays", host, stays, hostPort(t, stays, "8081/tcp"))})
	// The agent still follows events.
	later := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=stays")
	s.waitRecords("a later container registered too", []string{hostLine(host, "127.0.0.1"),
		srvLine("stays", host, stays, hostPort(t, stays, "8081/tcp")), srvLine("stays", host, later, hostPort(t, later, "8081/tcp"))})
}

// TestRoute53Throttling makes the emulator answer Throttling and
// PriorRequestNotComplete (unapplied) to ChangeResourceRecordSets while
// containers start and stop, and checks that every change is applied
// exactly once: the zone ends right, and the successful requests carried
// each record set once (an UPSERT counts two records, a DELETE one).
func TestRoute53Throttling(t *testing.T) {
	t.Parallel()
	s := newR53Stack(t)
	const host = "r53-t.servicediscovery.internal"
	s.addAgent(host, s.backendConfig(host))
	s.waitRecords("agent started", []string{hostLine(host, "127.0.0.1")})

	s.emu.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeThrottling, 3)
	s.emu.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodePriorRequestNotComplete, 2)
	const n = 4
	var ids []string
	want := []string{hostLine(host, "127.0.0.1")}
	for i := 0; i < n; i++ {
		id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=calc")
		ids = append(ids, id)
		want = append(want, srvLine("calc", host, id, hostPort(t, id, "8081/tcp")))
	}
	s.waitRecords("containers registered through throttling", want)
	s.emu.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeThrottling, 3)
	dockertest.Docker(t, append([]string{"rm", "-f"}, ids...)...)
	s.waitRecords("containers deregistered through throttling", []string{hostLine(host, "127.0.0.1")})

	var failed, okReqs, records int
	for _, r := range s.emu.Requests() {
		if r.Op != r53emu.OpChangeResourceRecordSets {
			continue
		}
		switch r.Code {
		case "":
			okReqs++
			records += r.Records
		case r53emu.CodeThrottling, r53emu.CodePriorRequestNotComplete:
			failed++
		default:
			t.Errorf("unexpected answer %s to a change", r.Code)
		}
	}
	if failed != 8 {
		t.Errorf("%d changes were answered Throttling/PriorRequestNotComplete, want the 8 injected", failed)
	}
	// The host record and n SRV sets upserted once (2 each), n deleted once.
	if wantRecords := 2*(n+1) + n; records != wantRecords {
		t.Errorf("the successful changes carried %d records in %d requests, want %d: some change was applied twice or not at all", records, okReqs, wantRecords)
	}
}
