package agent_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestBenchHealthToDNS measures, with the agent's default check settings
// and the default lease, over SIGNPOST_BENCH_N trials each (default 20,
// run side by side, each trial its own service):
//
//   - from a container's /health starting to fail (the GET that flips it
//     returned) to its SRV record leaving DNS;
//   - from an agent's SIGKILL to its instances leaving DNS.
//
// It is a measurement, not a timed test: it runs only with
// SIGNPOST_BENCH=1 and fails only when something never happens. With
// SIGNPOST_BENCH_WRITE=1 it writes its section of BENCHMARKS.md.
//
//	SIGNPOST_BENCH=1 SIGNPOST_BENCH_WRITE=1 go test -count=1 -run TestBenchHealthToDNS -v -timeout 20m ./internal/agent/
func TestBenchHealthToDNS(t *testing.T) {
	n := benchSize(t, "health-to-DNS benchmark", "SIGNPOST_BENCH_N", 20)
	s := newStack(t) // fail-open off: a lone critical instance leaves DNS
	cfg := s.agentConfig("bench-health")
	cfg.Health = health.Config{} // the defaults
	cfg.LeaseTTL = agent.DefaultLeaseTTL
	cfg.Labels["signpost.bench.h"] = "1" // not the containers of the SIGKILLed agents
	s.addAgent(cfg)
	def, _ := health.Config{}.WithDefaults()

	// gone polls name's SRV answer until it is empty; the time it took.
	gone := func(name string, since time.Time) time.Duration {
		for {
			recs, _, err := lookup(s.srv.DNSAddr(), name)
			if err == nil && len(recs) == 0 {
				return time.Since(since)
			}
			if time.Since(since) > 2*time.Minute {
				t.Errorf("%s never left DNS", name)
				return 0
			}
			time.Sleep(10 * time.Millisecond) // poll period: the figures are good to ~10 ms
		}
	}
	trials := func(what string, start func(i int) (name string, t0 time.Time)) []time.Duration {
		out := make([]time.Duration, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name, t0 := start(i)
				out[i] = gone(name, t0)
			}()
		}
		wg.Wait()
		return out
	}

	// 1. /health fails -> out of DNS.
	ports := make([]uint16, n)
	for i := range ports {
		id := s.sess.Run("--label", "signpost.bench.h=1", "-p", "8081", "-e", "PORTS=8081", "-e", fmt.Sprintf("SERVICE_8081_NAME=hf-%d", i), "-e", "SERVICE_8081_CHECK_HTTP=/health")
		ports[i] = hostPort(t, id, "8081/tcp")
	}
	for i, p := range ports {
		s.waitSRV(fmt.Sprintf("hf-%d", i), p)
	}
	fail := trials("health", func(i int) (string, time.Time) {
		// A random phase against the check's schedule.
		time.Sleep(rand.N(def.Interval)) // phase offset of the trial, not a wait for a condition
		flip(t, ports[i], "fail")
		return fmt.Sprintf("hf-%d", i), time.Now()
	})

	// 2. agent SIGKILL -> out of DNS, with the default lease.
	bin := signposttest.Binary(t)
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		lbl := fmt.Sprintf("signpost.bench.k=%d", i)
		s.sess.Run("--label", lbl, "-p", "8081", "-e", "PORTS=8081", "-e", fmt.Sprintf("SERVICE_8081_NAME=dead-%d", i))
		cmd := exec.Command(bin, "agent", "--server", s.srv.URL(), "--node", fmt.Sprintf("dead-%d", i), "--advertise-ip", "127.0.0.1",
			"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--only-label", lbl, "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds[i] = cmd
	}
	for i := range cmds {
		waitFor(t, fmt.Sprintf("dead-%d in DNS", i), func() (bool, string) {
			recs, _, err := lookup(s.srv.DNSAddr(), fmt.Sprintf("dead-%d", i))
			return err == nil && len(recs) == 1, fmt.Sprint(recs, err)
		})
	}
	kill := trials("sigkill", func(i int) (string, time.Time) {
		time.Sleep(rand.N(agent.DefaultLeaseTTL / 3)) // phase offset against the heartbeats, not a wait
		t0 := time.Now()
		if err := cmds[i].Process.Signal(syscall.SIGKILL); err != nil {
			t.Error(err)
		}
		return fmt.Sprintf("dead-%d", i), t0
	})

	stat := func(ds []time.Duration) (p50, p99, max time.Duration) {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		p := func(q float64) time.Duration { return ds[min(len(ds)-1, max0(int(q*float64(len(ds))+0.5)-1))] }
		return p(0.50), p(0.99), ds[len(ds)-1]
	}
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	f50, f99, fmax := stat(fail)
	k50, k99, kmax := stat(kill)
	t.Logf("/health fails -> out of DNS: n=%d p50=%s p99=%s max=%s", n, r(f50), r(f99), r(fmax))
	t.Logf("agent SIGKILL -> out of DNS:  n=%d p50=%s p99=%s max=%s", n, r(k50), r(k99), r(kmax))

	if os.Getenv("SIGNPOST_BENCH_WRITE") != "1" {
		return
	}
	docker, _ := dockertest.Try("version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})")
	section := fmt.Sprintf(`<!-- bench:health begin -->
## Health: failure to DNS

What it measures, with the agent's default check schedule (every %s,
timeout %s, critical after %d failures in a row; the containers ask for
an HTTP check of /health with SERVICE_8081_CHECK_HTTP) and the default
node lease (%s, a heartbeat every %s), %d trials of each, run side by
side, each its own service with one instance. The server's fail-open is
off here, so that a lone critical instance leaves DNS; with fail-open on
(the server's default) the last instances of a service stay answered.

- **/health fails**: from the GET that flips a container's /health to 503
  returning, to its SRV record leaving the signpost DNS answer. Each trial
  starts at a random phase of the check interval.
- **agent SIGKILL**: from SIGKILL of a `+"`signpost agent`"+` process (one per trial,
  each following one container) to its instance leaving DNS. Each kill
  lands at a random phase of the heartbeats.

DNS is polled every 10 ms over TCP, so the figures are good to about 10 ms.

Command:

    SIGNPOST_BENCH=1 SIGNPOST_BENCH_WRITE=1 go test -count=1 -run TestBenchHealthToDNS -v -timeout 20m ./internal/agent/

Measured on %s, %d cores, Docker %s:

| from | to | n | p50 | p99 | max |
| --- | --- | --- | --- | --- | --- |
| /health starts failing | SRV record gone | %d | %s | %s | %s |
| agent SIGKILL | its SRV records gone | %d | %s | %s | %s |

Expected: failing checks take between (failures - 1) and failures
intervals plus one timeout at most (%s to %s); a dead agent's records go
when its lease runs out, one TTL after its last heartbeat: between
TTL - TTL/3 and TTL after the kill (%s to %s), plus the server's expiry
sweep. With n = 20, p99 is the largest sample. The original design removed
a failed endpoint after three five-minute Lambda runs (10 to 15
minutes) and a dead host's records only at the next run.
<!-- bench:health end -->
`, def.Interval, def.Timeout, def.Failures, agent.DefaultLeaseTTL, (agent.DefaultLeaseTTL / 3).Round(100*time.Millisecond), n,
		"the development VM", runtime.NumCPU(), docker,
		n, r(f50), r(f99), r(fmax), n, r(k50), r(k99), r(kmax),
		time.Duration(def.Failures-1)*def.Interval, time.Duration(def.Failures)*def.Interval+def.Timeout,
		(agent.DefaultLeaseTTL - agent.DefaultLeaseTTL/3).Round(100*time.Millisecond), agent.DefaultLeaseTTL)
	writeSection(t, filepath.Join("..", "..", "BENCHMARKS.md"), "<!-- bench:health begin -->", "<!-- bench:health end -->", section)
}

func max0(i int) int { return max(i, 0) }

// writeSection replaces the text between begin and end (markers included)
// in path with section, or appends it.
func writeSection(t *testing.T, path, begin, end, section string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	doc := string(b)
	section = strings.TrimRight(section, "\n")
	if i := strings.Index(doc, begin); i >= 0 {
		j := strings.Index(doc[i:], end)
		if j < 0 {
			t.Fatalf("%s: %q without %q", path, begin, end)
		}
		doc = doc[:i] + section + doc[i+j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote the health section of %s", path)
}
