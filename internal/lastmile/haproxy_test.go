package lastmile

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is one instance's HTTP server, answering with its id and
// remembering when it was last asked.
type backend struct {
	id   string
	port uint16
	srv  *httptest.Server

	mu          sync.Mutex
	first, last time.Time
}

// calcBackends starts the backends of a 40-instance calc, and returns
// them with a function that registers some of them with sp.
func calcBackends(t *testing.T, sp *signpost) ([]*backend, func(...*backend)) {
	t.Helper()
	backends := make([]*backend, bigService)
	for i := range backends {
		backends[i] = startBackend(t, instanceID("calc", i))
	}
	return backends, func(bs ...*backend) {
		for _, b := range bs {
			sp.register(t, "calc", b.id, "127.0.0.1", b.port)
		}
	}
}

func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	b := &backend{id: id}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		b.mu.Lock()
		if b.first.IsZero() {
			b.first = now
		}
		b.last = now
		b.mu.Unlock()
		_, _ = io.WriteString(w, b.id)
	}))
	t.Cleanup(b.srv.Close)
	b.port = uint16(b.srv.Listener.Addr().(*net.TCPAddr).Port)
	return b
}

func (b *backend) hits() (first, last time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.first, b.last
}

func (b *backend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.first, b.last = time.Time{}, time.Time{}
}

// haproxy is HAProxy run with docs/resolvers/haproxy.cfg.
type haproxy struct {
	addr, sock string
}

// startHAProxy runs HAProxy with docs/resolvers/haproxy.cfg pointed at
// sp; with udp, its nameserver is a plain UDP one instead of tcp@.
func startHAProxy(t *testing.T, sp *signpost, udp bool) *haproxy {
	t.Helper()
	prog := need(t, "haproxy")
	dir := t.TempDir()
	h := &haproxy{addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), sock: filepath.Join(dir, "admin.sock")}
	nameserver := "tcp@" + sp.DNSAddr()
	if udp {
		nameserver = sp.DNSAddr()
	}
	conf := docConfig(t, "haproxy.cfg",
		"tcp@127.0.0.1:8053", nameserver,
		"bind 127.0.0.1:8000", "bind "+h.addr,
		"/run/haproxy/admin.sock", h.sock)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, prog, "-db", "-f", path)
	waitFor(t, "haproxy runtime API", 20*time.Second, func() error {
		_, err := h.servers()
		return err
	})
	return h
}

// servers returns the ports of backend calc's servers that HAProxy would
// send a request to now, from its runtime API ("show servers state").
func (h *haproxy) servers() ([]uint16, error) {
	c, err := net.DialTimeout("unix", h.sock, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "show servers state calc\n"); err != nil {
		return nil, err
	}
	var ports []uint16
	sc := bufio.NewScanner(io.LimitReader(c, 1<<20))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// be_id be_name srv_id srv_name srv_addr srv_op_state
		// srv_admin_state ... srv_port (19th)
		if len(f) < 19 || f[1] != "calc" {
			continue
		}
		// Running, and not in maintenance (forced, inherited, from the
		// configuration, or for want of an address) nor draining:
		// admin-state bits 0x01-0x20. 0x40 only says the name came
		// from an SRV record.
		admin, err := strconv.ParseUint(f[6], 10, 8)
		if err != nil || f[5] != "2" || admin&0x3f != 0 {
			continue
		}
		p, err := strconv.ParseUint(f[18], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("runtime API line %q: port: %w", sc.Text(), err)
		}
		ports = append(ports, uint16(p))
	}
	return ports, sc.Err()
}

// waitSome waits until HAProxy has at least least servers, all of them
// among of's ports.
func (h *haproxy) waitSome(t *testing.T, of []*backend, least int) {
	t.Helper()
	ports := map[uint16]bool{}
	for _, b := range of {
		ports[b.port] = true
	}
	waitFor(t, fmt.Sprintf("haproxy with at least %d of %d instances", least, len(of)), 30*time.Second, func() error {
		got, err := h.servers()
		if err != nil {
			return err
		}
		for _, p := range got {
			if !ports[p] {
				return fmt.Errorf("haproxy has a server on port %d, not an instance", p)
			}
		}
		if len(got) < least {
			return fmt.Errorf("haproxy has %d servers", len(got))
		}
		return nil
	})
}

// waitServers waits until HAProxy's servers are exactly want's ports.
func (h *haproxy) waitServers(t *testing.T, want []*backend) time.Duration {
	t.Helper()
	var ports []uint16
	for _, b := range want {
		ports = append(ports, b.port)
	}
	slices.Sort(ports)
	return waitFor(t, fmt.Sprintf("haproxy following %d instances", len(want)), 30*time.Second, func() error {
		got, err := h.servers()
		if err != nil {
			return err
		}
		slices.Sort(got)
		if !slices.Equal(got, ports) {
			return fmt.Errorf("haproxy has %d servers, signpost %d instances", len(got), len(ports))
		}
		return nil
	})
}

// TestHAProxy follows a service from 2 to 40 instances and back to 0
// through HAProxy configured as docs/resolvers/haproxy.cfg says, and
// measures how long HAProxy takes to send requests to an added instance
// and to stop sending them to a removed one.
func TestHAProxy(t *testing.T) {
	sp := startSignpost(t)
	h := startHAProxy(t, sp, false)
	backends, register := calcBackends(t, sp)
	register(backends[:2]...)
	h.waitServers(t, backends[:2])

	// From now on signpost always has an instance until the end: HAProxy
	// must always have a server, and every request must be answered.
	w := startWatch(t, h)

	// Follow times: one instance added to a service of two, then removed.
	var adds, removes []time.Duration
	extra := backends[2]
	for range 5 {
		extra.reset()
		at := time.Now()
		register(extra)
		waitFor(t, "first request to an added instance", 30*time.Second, func() error {
			if f, _ := extra.hits(); f.IsZero() {
				return fmt.Errorf("no request yet")
			}
			return nil
		})
		first, _ := extra.hits()
		adds = append(adds, first.Sub(at))
		at = time.Now()
		sp.deregister(t, extra.id)
		h.waitServers(t, backends[:2])
		_, last := extra.hits()
		removes = append(removes, max(0, last.Sub(at)))
	}
	t.Logf("HAProxy follow times (5 rounds): instance added to first request %v; removed to last request %v", adds, removes)
	// The documented bound (docs/resolvers.md), as for the resolvers.
	if slices.Max(adds) > propagationBound || slices.Max(removes) > propagationBound {
		t.Errorf("HAProxy followed a change after more than %s: added %v, removed %v", propagationBound, adds, removes)
	}

	// 2 to 40 and back to 2, in steps.
	for _, n := range []int{10, 20, 40} {
		register(backends[2:n]...)
		h.waitServers(t, backends[:n])
		for _, b := range backends[2:n] {
			sp.deregister(t, b.id)
		}
		h.waitServers(t, backends[:2])
		register(backends[2:n]...)
		h.waitServers(t, backends[:n])
		for _, b := range backends[2:n] {
			sp.deregister(t, b.id)
		}
		h.waitServers(t, backends[:2])
	}
	// And to 0.
	w.registered.Store(false)
	at := time.Now()
	sp.deregister(t, backends[0].id)
	sp.deregister(t, backends[1].id)
	h.waitServers(t, nil)
	t.Logf("HAProxy emptied %s after the last instance left", time.Since(at).Round(10*time.Millisecond))
	w.check(t)
}

// watch samples HAProxy's servers (every 50 ms) and sends requests
// through it (every 10 ms) while signpost has instances.
type watch struct {
	h *haproxy
	// registered says signpost has instances: only then are samples and
	// requests counted.
	registered atomic.Bool

	stop                             chan struct{}
	wg                               sync.WaitGroup
	halt                             func()
	samples, empty, requests, failed atomic.Int64
	firstFailure                     atomic.Value
}

func startWatch(t *testing.T, h *haproxy) *watch {
	w := &watch{h: h, stop: make(chan struct{})}
	w.registered.Store(true)
	w.wg.Add(2)
	go w.sample()
	go w.request()
	w.halt = sync.OnceFunc(func() { close(w.stop); w.wg.Wait() })
	t.Cleanup(w.halt)
	return w
}

func (w *watch) sample() {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		had := w.registered.Load()
		got, err := w.h.servers()
		if err == nil && had && w.registered.Load() {
			w.samples.Add(1)
			if len(got) == 0 {
				w.empty.Add(1)
			}
		}
	}
}

func (w *watch) request() {
	defer w.wg.Done()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 20000 { // bounded
		select {
		case <-w.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		had := w.registered.Load()
		resp, err := client.Get("http://" + w.h.addr + "/")
		ok := err == nil && resp.StatusCode == http.StatusOK
		if resp != nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		if had && w.registered.Load() {
			w.requests.Add(1)
			if !ok {
				w.failed.Add(1)
				w.firstFailure.CompareAndSwap(nil, fmt.Sprint(err, resp))
			}
		}
	}
}

// check stops the watch and fails the test if HAProxy ever had no server,
// or a request failed, while signpost had instances.
func (w *watch) check(t *testing.T) {
	t.Helper()
	w.halt()
	if w.samples.Load() == 0 || w.requests.Load() == 0 {
		t.Fatalf("no observation: %d runtime API samples, %d requests", w.samples.Load(), w.requests.Load())
	}
	if n := w.empty.Load(); n > 0 {
		t.Errorf("HAProxy had no server in %d of %d samples while signpost had instances", n, w.samples.Load())
	}
	if n := w.failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed while signpost had instances; first: %v", n, w.requests.Load(), w.firstFailure.Load())
	}
	t.Logf("%d runtime API samples, %d requests, all while signpost had instances", w.samples.Load(), w.requests.Load())
}

// TestHAProxyOverUDP is the documented configuration with a plain UDP
// nameserver, as most people first write it: HAProxy 2.6 does not retry
// a truncated answer over TCP, so it sees only the records that fit. It
// must still never be left without a server while the service grows to
// 40 instances and back (issue 13: with truncated answers carrying no
// record, it dropped every server and answered 503).
func TestHAProxyOverUDP(t *testing.T) {
	sp := startSignpost(t)
	backends, register := calcBackends(t, sp)
	register(backends...)
	needPartialTruncation(t, sp, "_calc._tcp."+zone)
	for _, b := range backends[2:] {
		sp.deregister(t, b.id)
	}
	h := startHAProxy(t, sp, true)
	h.waitServers(t, backends[:2])
	w := startWatch(t, h)
	for range 2 {
		register(backends[2:]...)
		h.waitSome(t, backends, 4) // at least what fits in 512 bytes
		for _, b := range backends[2:] {
			sp.deregister(t, b.id)
		}
		h.waitServers(t, backends[:2])
	}
	w.registered.Store(false)
	sp.deregister(t, backends[0].id)
	sp.deregister(t, backends[1].id)
	h.waitServers(t, nil)
	w.check(t)
}
