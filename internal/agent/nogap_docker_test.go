package agent_test

// No gap: restarts of the agent, of `signpost up` and of the server never
// take a healthy, running instance out of DNS. A poller asks DNS every
// 20ms throughout; an answer with fewer instances than are healthy fails
// the test (no answer at all, while the server process is down, is not an
// answer and is counted apart).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// dnsWatch asks a DNS server for a name's SRV records every 20ms and keeps
// every answer that holds fewer than want records.
type dnsWatch struct {
	stopc chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	answers  int      // answers with want records or more
	silences int      // no answer (server down or starting)
	short    []string // answers with fewer records than want
}

// watchDNS starts polling addr for name's SRV records.
func watchDNS(addr, name string, want int) *dnsWatch {
	w := &dnsWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	go func() {
		defer close(w.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stopc:
				return
			case <-t.C:
			}
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(name)+zone, dns.TypeSRV)
			at := time.Now()
			r, _, err := c.Exchange(m, addr)
			n := 0
			if err == nil {
				for _, rr := range r.Answer {
					if _, ok := rr.(*dns.SRV); ok {
						n++
					}
				}
			}
			w.mu.Lock()
			switch {
			case err != nil:
				w.silences++
			case n >= want:
				w.answers++
			default:
				w.short = append(w.short, fmt.Sprintf("%s: %s with %d of %d instances", at.Format("15:04:05.000"), dns.RcodeToString[r.Rcode], n, want))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// waitSRVCount waits until addr answers name's SRV with n records.
func waitSRVCount(t *testing.T, addr, name string, n int) {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	waitFor(t, fmt.Sprintf("SRV %s should have %d records", name, n), func() (bool, string) {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name)+zone, dns.TypeSRV)
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			return false, err.Error()
		}
		return len(r.Answer) == n, fmt.Sprintf("%s with %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
	})
}

// answered is the number of full answers so far.
func (w *dnsWatch) answered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answers
}

// stop ends the polling and fails the test if any answer was short.
func (w *dnsWatch) stop(t *testing.T, what string) {
	t.Helper()
	close(w.stopc)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("%s: %d full answers, %d polls without an answer, %d short answers", what, w.answers, w.silences, len(w.short))
	if len(w.short) > 0 {
		t.Errorf("%s: DNS answered fewer instances than are healthy %d times:\n%s", what, len(w.short), strings.Join(w.short, "\n"))
	}
}

// waitAnswers waits until the watch has n more full answers than before.
func (w *dnsWatch) waitAnswers(t *testing.T, what string, n int) {
	t.Helper()
	from := w.answered()
	waitFor(t, what, func() (bool, string) {
		got := w.answered() - from
		return got >= n, fmt.Sprintf("%d full answers", got)
	})
}

// apiWatch follows a service through the API's blocking queries and keeps
// every state in which fewer than want of its instances were passing: it
// sees a short state that lasts too little for DNS polling to catch.
type apiWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	states int
	short  []string
}

func watchAPI(t *testing.T, api, name string, want int) *apiWatch {
	t.Helper()
	c, err := apiclient.New(api, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &apiWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var index int64
		for ctx.Err() == nil {
			resp, err := c.Service(ctx, name, index, 10*time.Second)
			if err != nil {
				index = 0                         // the server restarts: start over
				time.Sleep(20 * time.Millisecond) // polling interval while the server is down
				continue
			}
			if index > 0 && resp.Index == index {
				continue // the wait ran out
			}
			index = resp.Index
			passing := 0
			var states []string
			for _, in := range resp.Instances {
				if in.Serving() {
					passing++
				}
				states = append(states, in.ID+"="+in.Health.Status)
			}
			w.mu.Lock()
			w.states++
			if passing < want {
				w.short = append(w.short, fmt.Sprintf("%s index %d: %d of %d passing: %s", time.Now().Format("15:04:05.000"), resp.Index, passing, want, strings.Join(states, " ")))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// stop ends the watch and fails the test if any state was short.
func (w *apiWatch) stop(t *testing.T, what string) {
	t.Helper()
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("%s: the API showed %d states of the service, %d short", what, w.states, len(w.short))
	if len(w.short) > 0 {
		t.Errorf("%s: the registry held fewer passing instances than are healthy %d times:\n%s", what, len(w.short), strings.Join(w.short, "\n"))
	}
}

// proc is a signpost process a test starts, signals and starts again.
type proc struct {
	t    *testing.T
	bin  string
	args []string
	log  *syncBuf // everything every run of it wrote
	env  []string // the environment, when not the test's
	cmd  *exec.Cmd
	out  *syncBuf // what the current run wrote
}

func newProc(t *testing.T, log *syncBuf, args ...string) *proc {
	return &proc{t: t, bin: signposttest.Binary(t), args: args, log: log}
}

func (p *proc) start() {
	p.t.Helper()
	p.out = &syncBuf{}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	w := teeWriter{p.out, p.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
	p.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

// signal sends sig and waits for the process to exit.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(waitTimeout):
		p.t.Fatalf("%s %s still running %s after %s", p.bin, p.args[0], waitTimeout, sig)
	}
}

// waitLines waits until the current run logged n lines with every one of
// parts.
func (p *proc) waitLines(n int, parts ...string) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("%d log lines of %s with %q", n, p.args[0], parts), func() (bool, string) {
		got := 0
		for _, line := range strings.Split(p.out.String(), "\n") {
			all := true
			for _, s := range parts {
				all = all && strings.Contains(line, s)
			}
			if all {
				got++
			}
		}
		return got >= n, fmt.Sprintf("%d lines", got)
	})
}

type teeWriter struct{ a, b *syncBuf }

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w.a.Write(p)
	return w.b.Write(p)
}

// registerOther registers, by hand, an instance of service name on
// another host, so that the service never has only failing instances:
// otherwise fail-open would answer with the pending ones and hide a gap.
func registerOther(t *testing.T, api, name string) {
	t.Helper()
	c, err := apiclient.New(api, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	in := registry.Instance{ID: "elsewhere", Service: name, Address: netip.MustParseAddr("127.0.0.2"), Port: 9}
	for {
		_, err := c.Register(ctx, in)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("register an instance on another host: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the server is starting
	}
}

// restartSignals is the order of the restarts: three graceful, three kills.
var restartSignals = []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL, syscall.SIGKILL, syscall.SIGKILL}

// healthyPair runs two containers of service name that listen on their
// port, so that their checks pass.
func healthyPair(sess *dockertest.Session, name string) (string, string) {
	run := func() string {
		return sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME="+name)
	}
	return run(), run()
}

// waitRestarted waits until a restarted agent (on its own or inside `up`)
// synced and its first check of each of n instances ran and kept the
// carried health.
func waitRestarted(p *proc, n int) {
	p.t.Helper()
	p.waitLines(1, "msg=synced", "why=start")
	p.waitLines(n, "first health check since the agent started passed")
}

// TestAgentRestartNoGap restarts `signpost agent` beside a running server
// three times with SIGTERM and three times with SIGKILL, with two healthy
// containers and a third instance on another host: DNS must answer all
// three throughout. Then a container restarted and one started while the
// agent was down are not carried: they wait for a first pass.
func TestAgentRestartNoGap(t *testing.T) {
	t.Parallel()
	agentRestartNoGap(t, newStack(t))
}

// TestAgentRestartNoGapOnEtcd is TestAgentRestartNoGap with the server on
// etcd: the health the agent carries comes from etcd through the server.
func TestAgentRestartNoGapOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	t.Parallel()
	members := etcdtest.StartCluster(t, 1, 100*time.Millisecond, time.Second)
	agentRestartNoGap(t, newStack(t, func(c *server.Config) {
		c.StoreKind = "etcd"
		c.Etcd.Endpoints = etcdtest.Endpoints(members)
	}))
}

func agentRestartNoGap(t *testing.T, s *stack) {
	a, b := healthyPair(s.sess, "steady")
	p := newProc(t, s.log, "agent", "--server", s.srv.URL(), "--node", "host-nogap", "--advertise-ip", "127.0.0.1",
		"--only-label", dockertest.TestLabel+"="+s.sess.ID, "--log-level", "debug")
	registerOther(t, s.srv.URL(), "steady")
	p.start()
	s.waitSRV("steady", 9, hostPort(t, a, "8081/tcp"), hostPort(t, b, "8081/tcp"))
	w := watchDNS(s.srv.DNSAddr(), "steady", 3)
	aw := watchAPI(t, s.srv.URL(), "steady", 3)
	for i, sig := range restartSignals {
		p.signal(sig)
		p.start()
		waitRestarted(p, 2)
		w.waitAnswers(t, fmt.Sprintf("DNS answers after restart %d (%s)", i+1, sig), 5)
	}
	w.stop(t, "agent restarts")
	aw.stop(t, "agent restarts")

	// While the agent is down, a restarts and c starts (and never
	// listens): neither is carried, both wait for a first pass; b is.
	p.signal(syscall.SIGKILL)
	dockertest.Docker(t, "restart", "-t", "1", a)
	c := s.sess.Run("-p", "8081", "-e", "SERVICE_8081_NAME=steady")
	p.start()
	p.waitLines(1, "health carried over from the backend", "carried=1 instances=3")
	cid := agent.InstanceID("host-nogap", c, 8081, "tcp")
	waitFor(t, "the new container's instance should be registered pending", func() (bool, string) {
		list, _, err := s.client.Instances(context.Background(), "host-nogap")
		if err != nil {
			return false, err.Error()
		}
		for _, in := range list {
			if in.ID == cid {
				return in.Health.Status == registry.HealthPending, in.Health.Status
			}
		}
		return false, "not registered"
	})
	s.waitSRV("steady", 9, hostPort(t, a, "8081/tcp"), hostPort(t, b, "8081/tcp"))
	wantRunning(t, s.sess, a, b, c)
}

// freeUDPTCPPort finds a loopback port free for both TCP and UDP, below
// the kernel's ephemeral range (32768 and up): a server restarted on the
// same port must find it free, and Docker gives published ports, and the
// kernel outgoing connections, ports from that range (CI once saw a
// container take a killed server's port before its restart).
func freeUDPTCPPort(t *testing.T) string {
	t.Helper()
	for range 200 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no loopback port below 32000 free for both TCP and UDP")
	return ""
}

// procEnv is a test whose signpost runs as processes on fixed loopback
// ports, with two healthy containers of service "steady".
type procEnv struct {
	sess              *dockertest.Session
	logs              *syncBuf
	a, b              string // the containers
	dnsAddr, httpAddr string
}

func newProcEnv(t *testing.T) *procEnv {
	t.Helper()
	dockertest.Require(t)
	e := &procEnv{sess: dockertest.New(t), logs: &syncBuf{}}
	dockertest.Image(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
	e.a, e.b = healthyPair(e.sess, "steady")
	e.dnsAddr, e.httpAddr = freeUDPTCPPort(t), freeUDPTCPPort(t)
	return e
}

// restartWatched registers the instance on another host, waits for all
// three instances in DNS, then restarts p with each of restartSignals
// under a DNS and an API watch; restarted waits for p to be back.
func (e *procEnv) restartWatched(t *testing.T, p *proc, what string, restarted func()) {
	t.Helper()
	registerOther(t, "http://"+e.httpAddr, "steady")
	waitSRVCount(t, e.dnsAddr, "steady", 3)
	w := watchDNS(e.dnsAddr, "steady", 3)
	aw := watchAPI(t, "http://"+e.httpAddr, "steady", 3)
	for i, sig := range restartSignals {
		p.signal(sig)
		p.start()
		restarted()
		w.waitAnswers(t, fmt.Sprintf("DNS answers after %s restart %d (%s)", what, i+1, sig), 5)
	}
	w.stop(t, what+" restarts")
	aw.stop(t, what+" restarts")
}

// TestUpRestartNoGap restarts `signpost up` (server and agent in one
// process, embedded store) three times with SIGTERM and three times with
// SIGKILL, with two healthy containers and an instance on another host:
// while it is down DNS cannot answer, but every answer it gives holds all
// three instances.
func TestUpRestartNoGap(t *testing.T) {
	t.Parallel()
	e := newProcEnv(t)
	p := newProc(t, e.logs, "up", "--dns", e.dnsAddr, "--http", e.httpAddr, "--data-dir", t.TempDir(), "--node", "host-up",
		"--advertise-ip", "127.0.0.1", "--only-label", dockertest.TestLabel+"="+e.sess.ID, "--log-level", "debug")
	p.start()
	e.restartWatched(t, p, "signpost up", func() { waitRestarted(p, 2) })
	wantRunning(t, e.sess, e.a, e.b)
}

// TestServerRestartNoGap restarts `signpost server` (embedded store) under
// a running agent three times with SIGTERM and three times with SIGKILL:
// every answer the server gives holds all three healthy instances.
func TestServerRestartNoGap(t *testing.T) {
	t.Parallel()
	e := newProcEnv(t)
	srv := newProc(t, e.logs, "server", "--dns", e.dnsAddr, "--http", e.httpAddr, "--data-dir", t.TempDir(), "--log-level", "debug")
	srv.start()
	ag := newProc(t, e.logs, "agent", "--server", "http://"+e.httpAddr, "--node", "host-srv", "--advertise-ip", "127.0.0.1",
		"--only-label", dockertest.TestLabel+"="+e.sess.ID, "--log-level", "debug")
	ag.start()
	e.restartWatched(t, srv, "server", func() { srv.waitLines(1, "signpost server running") })
	// The agent still writes: another container comes into DNS.
	c := e.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=steady")
	waitSRVCount(t, e.dnsAddr, "steady", 4)
	wantRunning(t, e.sess, e.a, e.b, c)
}
