package agent_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
)

// TestBenchEventToDNS measures, over SIGNPOST_BENCH_N containers (default
// 50), the time from `docker start` returning to the SRV answer holding
// the new instance, and from `docker stop` returning to its disappearance.
// It is a measurement, not a timed test: it runs only with SIGNPOST_BENCH=1
// and fails only when something never shows up.
//
//	SIGNPOST_BENCH=1 go test -run TestBenchEventToDNS -v ./internal/agent/
func TestBenchEventToDNS(t *testing.T) {
	n := benchSize(t, "agent's Docker-event-to-DNS benchmark", "SIGNPOST_BENCH_N", 50)
	s := newStack(t)
	s.addAgent(s.agentConfig("bench"))
	// has reports whether the SRV answer holds the container's instance.
	has := func(id string) bool {
		m := new(dns.Msg)
		m.SetQuestion("bench."+zone, dns.TypeSRV)
		r, err := dns.Exchange(m, s.srv.DNSAddr())
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range r.Answer {
			if v, ok := rr.(*dns.SRV); ok && strings.HasPrefix(v.Target, id[:12]) {
				return true
			}
		}
		return false
	}
	until := func(id string, want bool) time.Duration {
		t0 := time.Now()
		for has(id) != want {
			if time.Since(t0) > waitTimeout {
				t.Fatalf("container %s: SRV presence never became %v", id[:12], want)
			}
			time.Sleep(200 * time.Microsecond) // tight poll: this is what is measured
		}
		return time.Since(t0)
	}
	var up, down []time.Duration
	for i := 0; i < n; i++ {
		id := s.sess.Create("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=bench")
		dockertest.Docker(t, "start", id)
		up = append(up, until(id, true))
		dockertest.Docker(t, "stop", "-t", "5", id)
		down = append(down, until(id, false))
		dockertest.Docker(t, "rm", "-f", id)
	}
	report := func(what string, ds []time.Duration) string {
		slices.Sort(ds)
		p := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))+0.5)-1)] }
		return fmt.Sprintf("%-40s n=%d p50=%v p99=%v max=%v", what, len(ds), p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), ds[len(ds)-1].Round(10*time.Microsecond))
	}
	t.Log(report("docker start returned -> in SRV answer", up))
	t.Log(report("docker stop returned -> gone from SRV", down))
}
