package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestBenchBigServiceChurn is issue 12's benchmark, not a timed test: it
// runs only with SIGNPOST_BENCH=1 and prints figures for BENCHMARKS.md.
// One client asks an unrelated service over UDP, one query at a time,
// while a 20,000-instance service changes 10 times a second (one instance
// rewritten through the store each time), and without the churn for
// comparison.
//
//	SIGNPOST_BENCH=1 go test -count=1 -run TestBenchBigServiceChurn -v ./internal/server/
//
// SIGNPOST_BENCH_N sets the size of the big service, SIGNPOST_BENCH_SECONDS
// the length of each phase (default 10).
func TestBenchBigServiceChurn(t *testing.T) {
	if os.Getenv("SIGNPOST_BENCH") != "1" {
		t.Skip("benchmark: set SIGNPOST_BENCH=1")
	}
	n := envInt("SIGNPOST_BENCH_N", 20000)
	phase := time.Duration(envInt("SIGNPOST_BENCH_SECONDS", 10)) * time.Second
	ts := startServer(t, nil)
	ctx := context.Background()
	ts.register(t, inst("small-1", "small", "10.9.0.1", 80))
	big := make([]registry.Instance, n)
	for i := range big {
		big[i] = registry.Instance{
			ID: fmt.Sprintf("big-%024d", i), Service: "big",
			Address: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: uint16(1024 + i%60000),
			Weight: uint16(1 + i%3),
		}
	}
	start := time.Now()
	if _, err := ts.Store().ReplaceNode(ctx, "bench-node", time.Hour, big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the big service in DNS", func() bool {
		return len(ts.ask(t, "tcp", "big."+zone, dns.TypeSRV, 0).Answer) > 0
	})
	t.Logf("%d instances registered and answered in %v", n, time.Since(start).Round(time.Millisecond))

	conn, err := net.Dial("udp", ts.DNSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion("small."+zone, dns.TypeSRV)
	query, _ := m.Pack()
	buf := make([]byte, 2048)
	measure := func(d time.Duration) []time.Duration {
		var lat []time.Duration
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			t0 := time.Now()
			if _, err := conn.Write(query); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("unrelated query unanswered: %v", err)
			}
			lat = append(lat, time.Since(t0))
			r := new(dns.Msg)
			if err := r.Unpack(buf[:k]); err != nil || len(r.Answer) != 1 {
				t.Fatalf("unrelated answer: %v %v", err, r)
			}
		}
		return lat
	}
	report := func(name string, lat []time.Duration, changes int64) {
		slices.Sort(lat)
		pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		t.Logf("| %s | %d | %d | %.3f ms | %.3f ms | %.3f ms | %.3f ms |", name, changes, len(lat),
			ms(pct(0.5)), ms(pct(0.99)), ms(pct(0.999)), ms(lat[len(lat)-1]))
	}
	report("idle", measure(phase), 0)

	var changes atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			in := big[i%n]
			in.Node = "bench-node"
			in.Port = uint16(1 + i%1000)
			if _, err := ts.Store().Put(ctx, in); err != nil {
				t.Errorf("churn write: %v", err)
				return
			}
			changes.Add(1)
		}
	}()
	lat := measure(phase)
	close(stop)
	<-done
	report(strconv.Itoa(n)+"-instance service changing 10/s", lat, changes.Load())
	resp, err := http.Get(ts.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "signpost_dns_build_seconds_sum") || strings.HasPrefix(sc.Text(), "signpost_dns_build_seconds_count") {
			t.Log(sc.Text())
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
