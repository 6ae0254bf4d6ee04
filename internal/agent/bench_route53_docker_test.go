package agent_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/registry"
)

// r53Figures are what the Route 53 benchmarks report, from the emulator's
// request log.
type r53Figures struct {
	changes, requests, failed int
	peak1s                    int
}

func r53Measure(emu *r53emu.Server) r53Figures {
	var f r53Figures
	for _, r := range emu.Requests() {
		f.requests++
		if r.Code != "" {
			f.failed++
		}
		if r.Op == r53emu.OpChangeResourceRecordSets && r.Code == "" {
			f.changes++
		}
	}
	f.peak1s = emu.MaxInWindow(time.Second)
	return f
}

// benchR53Emu starts an emulator that throttles, as AWS does per account,
// beyond 10 requests a second (burst 50; 5 and 5 before 30 July 2026): a
// client over the limit would see Throttling answers, counted as failures.
func benchR53Emu(t *testing.T) (*r53emu.Server, string) {
	t.Helper()
	emu, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	zone := emu.AddZone(r53emu.Zone{Name: r53Zone, Private: true})
	emu.SetRateLimit(10, 50)
	return emu, zone
}

// TestBenchRoute53Events drives the Route 53 backend, with its default
// limits (8 requests a second, burst 1, 100ms coalescing window), with
// SIGNPOST_BENCH_R53_N (default 1,000) container start events as the agent
// emits them: one Register per container port, each instance carrying the
// agent's metadata, spread evenly over SIGNPOST_BENCH_R53_SPREAD (default
// 60s), and again all at once. Docker is not involved: starting 1,000
// containers on a small test machine measures the machine, not the
// backend (TestBenchRoute53Containers does the real thing with fewer).
// It checks that every record ends in the zone exactly, that no request
// failed (the emulator throttles beyond 10 a second), and reports the
// number of ChangeResourceRecordSets calls against one per event.
//
//	SIGNPOST_BENCH=1 go test -run TestBenchRoute53Events -v ./internal/agent/
func TestBenchRoute53Events(t *testing.T) {
	n := benchSize(t, "Route 53 event benchmark", "SIGNPOST_BENCH_R53_N", 1000)
	spread := time.Minute
	if v, err := time.ParseDuration(os.Getenv("SIGNPOST_BENCH_R53_SPREAD")); err == nil && v > 0 {
		spread = v
	}
	for _, sp := range []time.Duration{spread, 0} {
		name := "spread-" + sp.String()
		if sp == 0 {
			name = "burst"
		}
		t.Run(name, func(t *testing.T) { benchRoute53Events(t, n, sp) })
	}
}

func benchRoute53Events(t *testing.T, n int, spread time.Duration) {
	emu, zone := benchR53Emu(t)
	const host = "bench-host.servicediscovery.internal"
	cfg := route53backend.Config{Zone: r53Zone, Hostname: host, HostAddress: netip.MustParseAddr("10.0.0.5"),
		Endpoint: emu.URL(), Region: "us-east-1", Credentials: emuCredentials}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := route53backend.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := b.Sync(ctx, nil); err != nil { // as the agent starts
		t.Fatal(err)
	}
	emu.ResetRequests()

	names := []string{"calc", "_time._tcp", "portal", "_api._tcp"}
	want := map[string]string{}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if spread > 0 {
			if d := time.Until(t0.Add(spread * time.Duration(i) / time.Duration(n))); d > 0 {
				time.Sleep(d) // pacing the events: this is the load, not a wait for a condition
			}
		}
		var raw [32]byte
		_, _ = rand.Read(raw[:])
		cid := hex.EncodeToString(raw[:])
		given := names[i%len(names)]
		svc, _, _ := registry.ParseServiceName(given)
		port := uint16(20000 + i)
		in := registry.Instance{ID: fmt.Sprintf("%s-8081-tcp-abcdef", cid[:12]), Service: svc, Protocol: "tcp",
			Address: netip.MustParseAddr("10.0.0.5"), Port: port, Node: host,
			Meta: map[string]string{route53backend.MetaSRVName: given, route53backend.MetaContainerID: cid, route53backend.MetaContainerPorts: "1"}}
		in.Normalize()
		if err := b.Register(ctx, in); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want[given+"."+r53Zone+".|"+host+":"+cid] = fmt.Sprintf("1 1 %d %s", port, host)
	}
	events := time.Since(t0)
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	total := time.Since(t0)
	got := 0
	for _, r := range emu.Records(zone) {
		if r.Type != "SRV" {
			continue
		}
		if v, ok := want[r.Name+"|"+r.SetIdentifier]; ok && len(r.Values) == 1 && r.Values[0] == v && r.Weight != nil && *r.Weight == 1 {
			got++
		}
	}
	f := r53Measure(emu)
	t.Logf("%d start events over %s (sent in %s), all in the zone %s after the first, %s after the last",
		n, spread, events.Round(time.Millisecond), total.Round(time.Millisecond), (total - events).Round(time.Millisecond))
	t.Logf("ChangeResourceRecordSets calls: %d (one call per event: %d); all requests: %d; failed or throttled: %d; peak requests in any 1s: %d",
		f.changes, n, f.requests, f.failed, f.peak1s)
	if got != n {
		t.Errorf("%d of %d SRV record sets in the zone as written", got, n)
	}
	if f.failed != 0 {
		t.Errorf("%d requests failed (throttled by the emulator's 5/s)", f.failed)
	}
	if f.peak1s >= 10 {
		t.Errorf("peak %d requests in one second, want under 10", f.peak1s)
	}
}

// TestBenchRoute53Containers starts SIGNPOST_BENCH_R53_CONTAINERS real
// containers (default 50) as fast as Docker allows, under an in-process
// agent whose Route 53 backend has the default limits, and reports how
// long until every one is in the zone and how many change calls that
// took.
//
//	SIGNPOST_BENCH=1 go test -run TestBenchRoute53Containers -v ./internal/agent/
func TestBenchRoute53Containers(t *testing.T) {
	n := benchSize(t, "Route 53 container benchmark", "SIGNPOST_BENCH_R53_CONTAINERS", 50)
	s := newR53Stack(t)
	s.emu.SetRateLimit(10, 50)
	const host = "bench-c.servicediscovery.internal"
	cfg := s.backendConfig(host)
	cfg.Rate, cfg.Burst, cfg.Window, cfg.MaxBackoff = 0, 0, 0, 0 // the defaults
	s.addAgent(host, cfg)
	s.waitRecords("agent started", []string{hostLine(host, "127.0.0.1")})
	s.emu.ResetRequests()

	t0 := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ids[i] = s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=_bench._tcp")
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	started := time.Since(t0)
	waitFor(t, fmt.Sprintf("all %d containers in the zone", n), func() (bool, string) {
		c := 0
		for _, l := range s.records() {
			if strings.HasPrefix(l, "_bench._tcp.") {
				c++
			}
		}
		return c == n, fmt.Sprintf("%d of %d", c, n)
	})
	all := time.Since(t0)
	want := []string{hostLine(host, "127.0.0.1")}
	for _, id := range ids {
		want = append(want, srvLine("_bench._tcp", host, id, hostPort(t, id, "8081/tcp")))
	}
	s.waitRecords("the containers' records exactly", want)
	f := r53Measure(s.emu)
	t.Logf("%d containers started in %s (4 docker run at a time); all in the zone %s after the first start, %s after the last",
		n, started.Round(time.Millisecond), all.Round(time.Millisecond), (all - started).Round(time.Millisecond))
	t.Logf("ChangeResourceRecordSets calls: %d (one call per start event: %d); all requests: %d; failed or throttled: %d; peak requests in any 1s: %d",
		f.changes, n, f.requests, f.failed, f.peak1s)
	if f.failed != 0 {
		t.Errorf("%d requests failed", f.failed)
	}
}
