package agent_test

// Several servers (issue 18): an agent given two signpost servers on one
// three-member etcd keeps its node alive through either server's death.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// failoverTTL is the agent's lease in the failover tests: short, so that
// four of them pass quickly (etcd's shortest lease with a 1s election is
// 2s).
const failoverTTL = 3 * time.Second

// showBound is how soon a container stopped or started while a server is
// dead must show on the surviving one.
const showBound = 5 * time.Second

// TestAgentFailoverOnEtcd: the done-when of issue 18 on the embedded etcd
// 3.7 cluster.
func TestAgentFailoverOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	agentFailover(t, etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second))
}

// TestAgentFailoverOnEtcdBinary is TestAgentFailoverOnEtcd on Debian's
// etcd 3.4 binary (/usr/bin/etcd), three processes.
func TestAgentFailoverOnEtcdBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	agentFailover(t, etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 3, 100*time.Millisecond, time.Second))
}

// srvPoll asks a DNS server for SRV steady every 50ms and keeps every
// answer missing one of the ports that must be there (the running,
// healthy containers'); no answer (the server is down) is counted apart.
type srvPoll struct {
	addr  string
	stopc chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	need     []uint16 // ports that must be answered
	answers  int
	silences int
	short    []string
	gapStart time.Time     // start of the current run of short answers
	maxGap   time.Duration // longest run of short answers
	last     []uint16      // ports of the last answer
}

func pollSRV(addr string, need ...uint16) *srvPoll {
	p := &srvPoll{addr: addr, stopc: make(chan struct{}), done: make(chan struct{}), need: need}
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-tick.C:
			}
			m := new(dns.Msg)
			m.SetQuestion("steady."+zone, dns.TypeSRV)
			at := time.Now()
			r, _, err := c.Exchange(m, addr)
			p.mu.Lock()
			if err != nil {
				p.silences++
				p.mu.Unlock()
				continue
			}
			var ports []uint16
			for _, rr := range r.Answer {
				if s, ok := rr.(*dns.SRV); ok {
					ports = append(ports, s.Port)
				}
			}
			slices.Sort(ports)
			p.last = ports
			var missing []uint16
			for _, n := range p.need {
				if !slices.Contains(ports, n) {
					missing = append(missing, n)
				}
			}
			if len(missing) == 0 {
				p.answers++
				if !p.gapStart.IsZero() {
					p.maxGap = max(p.maxGap, at.Sub(p.gapStart))
					p.gapStart = time.Time{}
				}
			} else {
				if p.gapStart.IsZero() {
					p.gapStart = at
				}
				p.short = append(p.short, fmt.Sprintf("%s: %s %v, missing %v", at.Format("15:04:05.000"), dns.RcodeToString[r.Rcode], ports, missing))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// setNeed changes the ports that must be answered.
func (p *srvPoll) setNeed(ports ...uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.need = ports
}

// waitPorts waits until an answer holds exactly ports, and returns how
// long that took from since.
func (p *srvPoll) waitPorts(t *testing.T, what string, since time.Time, ports ...uint16) time.Duration {
	t.Helper()
	slices.Sort(ports)
	for {
		p.mu.Lock()
		ok, last := slices.Equal(p.last, ports), p.last
		p.mu.Unlock()
		if ok {
			return time.Since(since)
		}
		if time.Since(since) > waitTimeout {
			t.Fatalf("%s: DNS at %s answers %v after %s, want %v", what, p.addr, last, waitTimeout, ports)
		}
		time.Sleep(10 * time.Millisecond) // finer than the 50ms polls
	}
}

// stop ends the polling, fails the test on any short answer, and returns
// the longest run of short answers (the gap: 0 when there was none).
func (p *srvPoll) stop(t *testing.T, what string) time.Duration {
	t.Helper()
	close(p.stopc)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.gapStart.IsZero() {
		p.maxGap = max(p.maxGap, time.Since(p.gapStart))
	}
	t.Logf("%s: %d full answers, %d polls without an answer, %d short answers, longest gap %s", what, p.answers, p.silences, len(p.short), p.maxGap)
	if len(p.short) > 0 {
		t.Errorf("%s: DNS answered fewer instances than are running and healthy %d times:\n%s", what, len(p.short), strings.Join(p.short, "\n"))
	}
	if p.answers == 0 {
		t.Errorf("%s: no answer at all from %s", what, p.addr)
	}
	return p.maxGap
}

// agentHealth is the agent's /healthz.
type agentHealth struct {
	Status    string         `json:"status"`
	Warning   string         `json:"warning"`
	Error     string         `json:"error"`
	Servers   []backend.Link `json:"servers"`
	Failovers uint64         `json:"failovers"`
	code      int
}

func readHealth(addr string) (agentHealth, error) {
	var h agentHealth
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	h.code = resp.StatusCode
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// current is the server the agent says it writes to.
func (h agentHealth) current() string {
	for _, s := range h.Servers {
		if s.Current {
			return s.Name
		}
	}
	return ""
}

func (h agentHealth) state(server string) string {
	for _, s := range h.Servers {
		if s.Name == server {
			return s.State
		}
	}
	return "absent"
}

// agentFailover runs two `signpost server` processes on members and an
// agent given both, with two healthy containers; then SIGKILLs each
// server in turn for four lease TTLs, and hangs the first with SIGSTOP
// as long, stopping a container and starting one meanwhile: the
// surviving server's DNS never misses a running, healthy instance, the
// changes show on it within showBound, and the killed server, restarted
// (or the hung one, continued), answers the same. The agent reports the
// dead server down and itself degraded, not failing, meanwhile, and goes
// back to the first server after.
func agentFailover(t *testing.T, members []*etcdtest.Member) {
	e := newProcEnv(t)
	endpoints := strings.Join(etcdtest.Endpoints(members), ",")
	type srvProc struct {
		p        *proc
		dns, url string
	}
	servers := make([]*srvProc, 2)
	for i := range servers {
		dnsAddr, httpAddr := e.dnsAddr, e.httpAddr
		if i == 1 {
			dnsAddr, httpAddr = freeUDPTCPPort(t), freeUDPTCPPort(t)
		}
		p := newProc(t, e.logs, "server", "--dns", dnsAddr, "--http", httpAddr, "--data-dir", t.TempDir(),
			"--store", "etcd", "--etcd-endpoints", endpoints)
		p.start()
		servers[i] = &srvProc{p: p, dns: dnsAddr, url: "http://" + httpAddr}
	}
	for _, s := range servers {
		s.p.waitLines(1, "signpost server running")
	}
	metrics := freeUDPTCPPort(t)
	ag := newProc(t, e.logs, "agent", "--server", servers[0].url+","+servers[1].url, "--node", "host-failover",
		"--advertise-ip", "127.0.0.1", "--only-label", dockertest.TestLabel+"="+e.sess.ID, "--lease-ttl", failoverTTL.String(),
		"--metrics", metrics, "--log-level", "debug")
	ag.start()
	running := map[string]uint16{e.a: hostPort(t, e.a, "8081/tcp"), e.b: hostPort(t, e.b, "8081/tcp")}
	ports := func() []uint16 {
		var ps []uint16
		for _, p := range running {
			ps = append(ps, p)
		}
		slices.Sort(ps)
		return ps
	}
	for _, s := range servers {
		waitSRVCount(t, s.dns, "steady", 2)
	}
	waitFor(t, "the agent should write to the first server", func() (bool, string) {
		h, err := readHealth(metrics)
		return err == nil && h.current() == servers[0].url && h.Status == "ok", fmt.Sprintf("%+v %v", h, err)
	})

	// Each server SIGKILLed in turn, then the first one hung (SIGSTOP:
	// its connections stay open and nothing on them is answered).
	for round, r := range []struct {
		victim int
		sig    syscall.Signal
	}{{0, syscall.SIGKILL}, {1, syscall.SIGKILL}, {0, syscall.SIGSTOP}} {
		victim := r.victim
		survivor := servers[1-victim]
		what := fmt.Sprintf("server %d %sed", victim+1, map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSTOP: "SIGSTOP"}[r.sig])
		poll := pollSRV(survivor.dns, ports()...)
		poll.waitPorts(t, what+": before", time.Now(), ports()...)
		killed := time.Now()
		if r.sig == syscall.SIGKILL {
			servers[victim].p.signal(syscall.SIGKILL)
		} else if err := servers[victim].p.cmd.Process.Signal(r.sig); err != nil {
			t.Fatal(err)
		}

		// The agent moves to the survivor (at its next heartbeat when
		// the victim was current) and says so, degraded but healthy.
		var failedOver time.Duration
		waitFor(t, what+": the agent should write to the surviving server and report the killed one down, healthy still", func() (bool, string) {
			h, err := readHealth(metrics)
			ok := err == nil && h.current() == survivor.url && h.state(servers[victim].url) == "down" && h.code == http.StatusOK && h.Status == "degraded"
			if ok && failedOver == 0 {
				failedOver = time.Since(killed)
			}
			return ok, fmt.Sprintf("%+v %v", h, err)
		})

		// The bound (docs/etcd.md, "Several servers"): the first
		// heartbeat after the death starts within TTL/3 and reaches the
		// survivor within TTL/6 (the attempt timeout, half its TTL/3
		// deadline, when the victim hangs): TTL/2 in all, half a lease
		// before it would run out. A quarter TTL of margin for the
		// healthz polls and a loaded machine.
		if bound := failoverTTL/2 + failoverTTL/4; victim == 0 && failedOver > bound {
			t.Errorf("%s: the agent wrote to the surviving server %s after the kill, want within %s (TTL/2 and a margin)", what, failedOver, bound)
		}

		// One container stops, one starts, while the victim is dead.
		var old string
		for id := range running {
			old = id
			break
		}
		// The stopped one may linger a moment: more is fine.
		delete(running, old)
		poll.setNeed(ports()...)
		stopAt := time.Now()
		dockertest.Docker(t, "stop", "-t", "1", old)
		gone := poll.waitPorts(t, what+": a stopped container", stopAt, ports()...)
		startAt := time.Now()
		id := e.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=steady")
		running[id] = hostPort(t, id, "8081/tcp")
		shown := poll.waitPorts(t, what+": a started container", startAt, ports()...)
		poll.setNeed(ports()...)
		if gone > showBound || shown > showBound {
			t.Errorf("%s: a stopped container left the surviving server's DNS after %s, a started one came after %s; want both within %s", what, gone, shown, showBound)
		}

		// Dead for four lease TTLs in all.
		if rest := 4*failoverTTL - time.Since(killed); rest > 0 {
			time.Sleep(rest) // the outage lasts this long; the poller checks DNS throughout
		}
		down := time.Since(killed)
		if r.sig == syscall.SIGKILL {
			servers[victim].p.start()
			servers[victim].p.waitLines(1, "signpost server running")
		} else if err := servers[victim].p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		gap := poll.stop(t, what)
		back := time.Now()
		again := pollSRV(servers[victim].dns, ports()...)
		caught := again.waitPorts(t, what+": the restarted server", back, ports()...)
		waitFor(t, what+": the agent should see every server up and write to the first", func() (bool, string) {
			h, err := readHealth(metrics)
			return err == nil && h.Status == "ok" && h.current() == servers[0].url &&
				h.state(servers[0].url) == "up" && h.state(servers[1].url) == "up", fmt.Sprintf("%+v %v", h, err)
		})
		returned := time.Since(back)
		again.waitAnswers(t, what+": the restarted server", 5)
		again.stop(t, what+": the restarted server")
		t.Logf("round %d, %s for %s (4 TTLs of %s): longest DNS gap on the survivor %s; the agent wrote to the survivor and reported the killed server down %s after the kill; "+
			"a stopped container left the survivor's DNS in %s, a started one showed in %s; the restarted server answered the same %s after it was up; the agent was back on the first server %s after",
			round+1, what, down.Round(time.Millisecond), failoverTTL, gap, failedOver.Round(time.Millisecond), gone.Round(time.Millisecond),
			shown.Round(time.Millisecond), caught.Round(time.Millisecond), returned.Round(time.Millisecond))
	}
	h, err := readHealth(metrics)
	if err != nil || h.Failovers < 1 {
		t.Errorf("agent healthz after the rounds: %+v %v; want at least one failover counted", h, err)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		fmt.Sprintf("signpost_agent_server_current{server=%q} 1", servers[0].url),
		fmt.Sprintf("signpost_agent_server_up{server=%q} 1", servers[1].url),
		"signpost_agent_server_failovers_total ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("agent /metrics has no %q", want)
		}
	}
	var live []string
	for id := range running {
		live = append(live, id)
	}
	wantRunning(t, e.sess, live...)
}

// waitAnswers waits until the poll has n more full answers.
func (p *srvPoll) waitAnswers(t *testing.T, what string, n int) {
	t.Helper()
	p.mu.Lock()
	from := p.answers
	p.mu.Unlock()
	waitFor(t, what+fmt.Sprintf(": %d full answers", n), func() (bool, string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.answers-from >= n, fmt.Sprintf("%d", p.answers-from)
	})
}
