package server_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// TestBenchEtcd is issue 7's benchmark, not a timed test: it runs only with
// SIGNPOST_BENCH=1 and prints figures for BENCHMARKS.md.
//
//	SIGNPOST_BENCH=1 go test -count=1 -run TestBenchEtcd -v ./internal/server/
func TestBenchEtcd(t *testing.T) {
	if os.Getenv("SIGNPOST_BENCH") != "1" {
		t.Skip("benchmark: set SIGNPOST_BENCH=1")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	eps := etcdtest.Endpoints(members)
	s1 := startOnEtcd(t, eps)
	s2 := startOnEtcd(t, eps)
	ctx := context.Background()

	// Write through server 1, time until server 2's DNS answers it.
	const n = 200
	c := &dns.Client{Timeout: time.Second}
	var lat []time.Duration
	for i := 0; i < n; i++ {
		in := inst(fmt.Sprintf("w-%d", i), fmt.Sprintf("lat%d", i), "10.20.0.1", 8081)
		start := time.Now()
		if _, err := s1.client.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("lat%d.%s", i, zone), dns.TypeSRV)
		deadline := start.Add(10 * time.Second)
		for {
			r, _, err := c.Exchange(m, s2.DNSAddr())
			if err == nil && len(r.Answer) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d not answered by server 2 after 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("write through server 1 -> SRV answer on server 2 (n=%d): p50 %v, p99 %v, max %v",
		n, pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))

	// DNS query rate: a server on etcd beside one on the embedded store,
	// the same 1,000 services x 3 instances, the same dnsperf load.
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		t.Skip("dnsperf not installed: query-rate part skipped")
	}
	emb := startServer(t, nil)
	var set []registry.Instance
	for i := 0; i < 1000; i++ {
		for j := 0; j < 3; j++ {
			set = append(set, registry.Instance{ID: fmt.Sprintf("i%d-%d", i, j), Service: fmt.Sprintf("svc%d", i),
				Address: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}), Port: uint16(8000 + j)})
		}
	}
	for _, ts := range []*testServer{s1, emb} {
		// etcd takes at most 128 operations in a transaction: load in node sets of 100.
		for k := 0; k < len(set); k += 100 {
			if _, err := ts.client.ReplaceNode(ctx, fmt.Sprintf("bench-%d", k/100), time.Hour, set[k:k+100]); err != nil {
				t.Fatal(err)
			}
		}
	}
	qf := filepath.Join(t.TempDir(), "queries")
	f, err := os.Create(qf)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		s := rng.IntN(1000)
		switch r := rng.Float64(); {
		case r < 0.5:
			fmt.Fprintf(w, "svc%d.%s SRV\n", s, zone)
		case r < 0.8:
			fmt.Fprintf(w, "svc%d.%s A\n", s, zone)
		default:
			fmt.Fprintf(w, "_svc%d._tcp.%s SRV\n", s, zone)
		}
	}
	w.Flush()
	f.Close()
	qpsRe := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	run := func(addr string) float64 {
		host, port, _ := splitHostPort(addr)
		out, err := exec.Command(dnsperf, "-s", host, "-p", port, "-d", qf, "-c", "4", "-q", "200", "-l", "5").CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf: %v\n%s", err, out)
		}
		m := qpsRe.FindSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf output: %s", out)
		}
		q, _ := strconv.ParseFloat(string(m[1]), 64)
		return q
	}
	var onEtcd, onEmb []float64
	for round := 0; round < 3; round++ {
		onEtcd = append(onEtcd, run(s1.DNSAddr()))
		onEmb = append(onEmb, run(emb.DNSAddr()))
	}
	slices.Sort(onEtcd)
	slices.Sort(onEmb)
	t.Logf("dnsperf -c 4 -q 200 -l 5, 3 interleaved rounds, median queries/s: server on etcd %.0f, on the embedded store %.0f (ratio %.2f); all: etcd %.0f, embedded %.0f",
		onEtcd[1], onEmb[1], onEtcd[1]/onEmb[1], onEtcd, onEmb)
}

func splitHostPort(addr string) (string, string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", "", err
	}
	return ap.Addr().String(), strconv.Itoa(int(ap.Port())), nil
}
