package httpguard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// putNodeSet registers n instances of service under node, by node set.
func putNodeSet(t *testing.T, url, node, service string, from, n, gen int) {
	t.Helper()
	req := apiclient.NodeRequest{TTL: "1h"}
	for i := from; i < from+n; i++ {
		req.Instances = append(req.Instances, mkInstance(service, node, i, gen))
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	status, msg := call(t, "PUT", url+"/v1/nodes/"+node, string(body), jsonCT)
	if status != 200 {
		t.Fatalf("node set %s of %d instances (%d bytes): %d %s", node, n, len(body), status, msg)
	}
}

func mkInstance(service, node string, i, gen int) registry.Instance {
	return registry.Instance{
		ID:      fmt.Sprintf("%s-%d", service, i),
		Service: service,
		Address: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i) | 1}),
		Port:    uint16(1024 + i%50000),
		Node:    node,
		Meta:    map[string]string{"version": "1.2.3", "zone": "eu-west-1a", "gen": strconv.Itoa(gen)},
	}
}

// TestSlowReadersMemoryBounded: 100 clients that ask for a 20,000-instance
// service (by watch, blocking query or plain GET) and never read hold
// shared encoded answers, not copies: the server's memory stays under a
// bound while they hang on and the service changes, and they are cut
// after --http-write-timeout.
func TestSlowReadersMemoryBounded(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--http-write-timeout", "5s", "--http-max-streams-per-client", "200", "--http-max-conns-per-client", "300")
	const per, nodes = 5000, 4
	for n := 0; n < nodes; n++ {
		putNodeSet(t, p.URL, fmt.Sprintf("host-%d", n), "big", n*per, per, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	status, _ := call(t, "GET", p.URL+"/v1/services/big", "", nil)
	if status != 200 {
		t.Fatalf("GET /v1/services/big: %d", status)
	}
	base, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}
	// 100 clients that never read: watches, blocking queries that wake
	// on the next change, plain GETs of the service and of every
	// instance. A small receive buffer makes them stall early.
	paths := []string{"/v1/watch?service=big&index=0", "/v1/watch?index=0", "/v1/services/big?index=1&wait=1m", "/v1/services/big", "/v1/instances"}
	var conns []net.Conn
	for i := 0; i < 100; i++ {
		c := dial(t, p.HTTP)
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", paths[i%len(paths)])
		conns = append(conns, c)
	}
	peak := base
	sample := func() {
		if rss, err := p.RSS(); err == nil && rss > peak {
			peak = rss
		}
	}
	// Change the service five times while they hang on: every change
	// is a new answer for every watcher and blocking query.
	for i := 0; i < 5; i++ {
		putNodeSet(t, p.URL, "host-0", "big", 0, per, i+1)
		sample()
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		sample()
	}
	const bound = 150 << 20
	t.Logf("RSS: %d MiB after loading 20,000 instances, peak %d MiB with 100 non-reading clients (bound: +%d MiB)", base>>20, peak>>20, bound>>20)
	if peak-base > bound {
		t.Fatalf("100 non-reading clients took RSS from %d MiB to %d MiB: more than %d MiB", base>>20, peak>>20, bound>>20)
	}
	// They are cut once a write waits longer than the write timeout.
	for {
		open, err := p.Metric(ctx, "signpost_http_streams")
		if err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%v watches and blocking queries still open long after the write timeout", open)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// TestStreamCaps: watches and blocking queries past a client's share get
// 429, past the server's total 503, both with a JSON error naming the
// flag; a slot is given back when its stream ends.
func TestStreamCaps(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--http-max-streams", "3", "--http-max-streams-per-client", "2")
	open := func(from byte, path string) (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}}).DialContext}
		req, _ := http.NewRequestWithContext(ctx, "GET", p.URL+path, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("GET %s from 127.0.0.%d: %v", path, from, err)
		}
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return resp, cancel
	}
	expect := func(resp *http.Response, status int, inError string) {
		t.Helper()
		if resp.StatusCode != status {
			t.Fatalf("got %d, want %d", resp.StatusCode, status)
		}
		if inError != "" {
			var e apiclient.ErrorResponse
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || !strings.Contains(e.Error, inError) {
				t.Fatalf("error body %+v (%v): want it to name %q", e, err, inError)
			}
		}
	}
	r1, _ := open(1, "/v1/watch")
	expect(r1, 200, "")
	// A blocking query sends nothing until it is done: open it raw, and
	// wait until the server counts it.
	c2 := dial(t, p.HTTP)
	fmt.Fprintf(c2, "GET /v1/instances?index=1&wait=1m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if n, err := p.Metric(ctx, "signpost_http_streams"); err != nil || n == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("blocking query not counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r3, _ := open(1, "/v1/watch")
	expect(r3, 429, "--http-max-streams-per-client")
	r4, _ := open(2, "/v1/watch")
	expect(r4, 200, "")
	r5, _ := open(3, "/v1/watch")
	expect(r5, 503, "--http-max-streams")
	// A plain read is not a stream.
	r6, _ := open(3, "/v1/instances")
	expect(r6, 200, "")
	// Ending a stream gives its slot back.
	_ = c2.Close()
	for i := 0; ; i++ {
		r, cancel := open(3, "/v1/watch")
		if r.StatusCode == 200 {
			break
		}
		cancel()
		if i > 100 {
			t.Fatalf("slot not given back: %d", r.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBodyLimits: a body over its kind's limit is refused with 413,
// declared or not; a node set is allowed its instance count's share.
func TestBodyLimits(t *testing.T) {
	p := signposttest.StartProcess(t, 0)
	big := `{"service":"calc","address":"10.0.0.1","port":8081,"meta":{"k":"` + strings.Repeat("v", 100<<10) + `"}}`
	status, msg := call(t, "PUT", p.URL+"/v1/instances/a", big, jsonCT)
	if status != 413 || !strings.Contains(msg, "limit") {
		t.Fatalf("100 KiB instance: %d %q, want 413", status, msg)
	}
	// Chunked (no declared length): cut while read.
	req, _ := http.NewRequest("PUT", p.URL+"/v1/instances/a", struct{ *strings.Reader }{strings.NewReader(big)})
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || resp.ContentLength == 0 {
		t.Fatalf("chunked 100 KiB instance: %d, want 413", resp.StatusCode)
	}
	// A node set of one instance padded to 200 KiB: over one
	// instance's share, under the hard cap.
	one, _ := json.Marshal(mkInstance("calc", "n1", 1, 0))
	padded := `{"ttl":"10s","instances":[` + string(one) + strings.Repeat(" ", 200<<10) + `]}`
	status, msg = call(t, "PUT", p.URL+"/v1/nodes/n1", padded, jsonCT)
	if status != 413 || !strings.Contains(msg, "1 instances") {
		t.Fatalf("padded node set: %d %q, want 413", status, msg)
	}
	// A declared body of 100 MiB is refused before it is sent.
	c := dial(t, p.HTTP)
	fmt.Fprintf(c, "PUT /v1/nodes/n1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", 100<<20)
	got := closedWithin(t, c, 15*time.Second, "100 MiB declared body")
	if !strings.Contains(got, "413") {
		t.Fatalf("100 MiB declared body: %q, want 413", got)
	}
	// A 1,000-instance node set is fine.
	putNodeSet(t, p.URL, "n2", "calc", 0, 1000, 0)
}

// TestWatchOutlivesTimeouts: a watch that reads is not cut by the read or
// write timeout, however long it stays quiet: each write gets its own.
func TestWatchOutlivesTimeouts(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--http-write-timeout", "1s", "--http-read-timeout", "1s", "--http-idle-timeout", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL+"/v1/watch?service=calc&index=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
		close(events)
	}()
	for gen := 1; gen <= 3; gen++ {
		// Quiet for three times every timeout, then a change.
		time.Sleep(3 * time.Second)
		body, _ := json.Marshal(mkInstance("calc", "", 1, gen))
		if status, msg := call(t, "PUT", p.URL+"/v1/instances/calc-1", string(body), jsonCT); status != 200 {
			t.Fatalf("PUT: %d %s", status, msg)
		}
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("watch closed after %d quiet periods longer than every timeout", gen)
			}
			if !strings.Contains(ev, fmt.Sprintf(`"gen":"%d"`, gen)) {
				t.Fatalf("event %d: %s", gen, ev)
			}
		case <-ctx.Done():
			t.Fatal("no event")
		}
	}
}

// TestBodiesInFlight: writes whose bodies are being read share one
// budget; a write beyond it gets 503 and may retry once the others end.
func TestBodiesInFlight(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--max-node-set-body", "100000", "--http-max-bodies-in-flight", "150000", "--http-read-timeout", "5s")
	// A client that declares 100,000 bytes and sends ten holds them
	// until the read timeout (another address than the test's, whose
	// own share is not what is tested here).
	c := dialFrom(t, p.HTTP, net.IPv4(127, 0, 0, 2))
	fmt.Fprintf(c, "PUT /v1/nodes/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"ttl\":\"1")
	var four []registry.Instance
	for i := range 4 {
		four = append(four, mkInstance("calc", "n1", i, 0))
	}
	body, _ := json.Marshal(apiclient.NodeRequest{TTL: "10s", Instances: four})
	padded := string(body) + strings.Repeat(" ", 60000) // within four instances' share
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Wait until the slow client's headers are in (its share taken).
	waitMetric(ctx, t, p, "signpost_http_body_bytes_in_flight", 100000, "the slow client's body counted in flight")
	status, msg := call(t, "PUT", p.URL+"/v1/nodes/n1", padded, jsonCT)
	if status != http.StatusServiceUnavailable || !strings.Contains(msg, "--http-max-bodies-in-flight") {
		t.Fatalf("60 KB node set beside 100 KB being read, budget 150 KB: %d %q, want 503", status, msg)
	}
	// A small write still fits.
	if status, msg := call(t, "PUT", p.URL+"/v1/nodes/n1", string(body), jsonCT); status != 200 {
		t.Fatalf("small node set: %d %q", status, msg)
	}
	closedWithin(t, c, 15*time.Second, "half-sent node set")
	for {
		if status, _ = call(t, "PUT", p.URL+"/v1/nodes/n1", padded, jsonCT); status == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("60 KB node set after the slow client was closed: %d", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBodiesInFlightPerClient: one client that opens a few connections
// and trickles node set bodies (no token needed on a tokenless server)
// holds at most its share of the bodies in flight: its second body gets
// 429 naming the flag, and every other client's writes still go through.
func TestBodiesInFlightPerClient(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--max-node-set-body", "100000", "--http-max-bodies-in-flight", "400000", "--http-read-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hogIP := net.IPv4(127, 0, 0, 2)
	hog := func(i int) net.Conn {
		c := dialFrom(t, p.HTTP, hogIP)
		fmt.Fprintf(c, "PUT /v1/nodes/hog%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", i)
		return c
	}
	first := hog(0)
	waitMetric(ctx, t, p, "signpost_http_body_bytes_in_flight", 100000, "the first trickled body counted in flight")
	for i := 1; i < 4; i++ {
		c := hog(i)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("trickled body %d beside the first, from the same client: no answer (%v): it took more than its share", i, err)
		}
		var e apiclient.ErrorResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(e.Error, "--http-max-bodies-in-flight-per-client") {
			t.Fatalf("trickled body %d from the same client: %d %q, want 429 naming the flag", i, resp.StatusCode, e.Error)
		}
	}
	// Another client's node set goes through while the first is held.
	putNodeSet(t, p.URL, "good", "calc", 0, 3, 0)
	_ = first.Close()
}

// waitMetric waits until the process's metric name is want (what says
// what that means), failing when ctx ends first.
func waitMetric(ctx context.Context, t *testing.T, p *signposttest.Process, name string, want float64, what string) {
	t.Helper()
	for {
		n, err := p.Metric(ctx, name)
		if err == nil && n == want {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("waiting for %s: %s is %v (%v), want %v", what, name, n, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
