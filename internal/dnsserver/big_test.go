package dnsserver

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// bigIndex returns a server over an index holding service "big" with n
// instances (28-character IDs, weights 1-3 when weighted) and a small
// service "small".
func bigIndex(tb testing.TB, n int, weighted bool) (*Server, *registry.Index, int64) {
	tb.Helper()
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{}, ix)
	if err != nil {
		tb.Fatal(err)
	}
	evs := make([]registry.Event, 0, n+1)
	for i := 0; i < n; i++ {
		evs = append(evs, registry.Event{Type: registry.EventPut, Rev: int64(i + 1), Instance: bigInstance(i, weighted)})
	}
	evs = append(evs, registry.Event{Type: registry.EventPut, Rev: int64(n + 1), Instance: registry.Instance{
		ID: "small-1", Service: "small", Protocol: "tcp", Address: netip.MustParseAddr("10.9.9.9"), Port: 80,
		Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
	}})
	ix.Apply(evs)
	return s, ix, int64(n + 1)
}

func bigInstance(i int, weighted bool) registry.Instance {
	w := uint16(1)
	if weighted {
		w = uint16(1 + i%3)
	}
	return registry.Instance{
		ID: fmt.Sprintf("big-%024d", i), Service: "big", Protocol: "tcp",
		Address: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: uint16(1024 + i%60000),
		Weight: w, Health: registry.Health{Status: registry.HealthPassing},
	}
}

func ask(tb testing.TB, s *Server, name string, qtype uint16, edns uint16, tcp bool) *dns.Msg {
	tb.Helper()
	out := make([]byte, 65536+optLen)
	resp := s.respond(packQuery(tb, name, qtype, edns, nil), out, tcp)
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		tb.Fatalf("%s: answer does not parse: %v", name, err)
	}
	return m
}

// TestLargeServiceRebuildNeverBlocksQueries holds the background build of
// a 20,000-instance service that just changed, and asks meanwhile: a
// query for another service is answered, and one for the changed service
// gets its previous answer. Released, the new answer appears.
func TestLargeServiceRebuildNeverBlocksQueries(t *testing.T) {
	const z = "servicediscovery.internal."
	s, ix, rev := bigIndex(t, 20000, true)
	held := make(chan string, 1)
	release := make(chan struct{})
	s.builder.mu.Lock()
	s.builder.hold = func(name string) {
		held <- name
		<-release
	}
	s.builder.mu.Unlock()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	moved := bigInstance(0, true)
	moved.Port = 7 // no other instance has port 7
	ix.Apply([]registry.Event{{Type: registry.EventPut, Rev: rev + 1, Instance: moved}})
	select {
	case name := <-held:
		if name != "big" {
			t.Fatalf("builder holds %q, want big", name)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the change to big never reached the builder")
	}

	answered := make(chan *dns.Msg, 2)
	go func() {
		answered <- ask(t, s, "small."+z, dns.TypeSRV, 0, false)
		answered <- ask(t, s, "_big._tcp."+z, dns.TypeSRV, 0, true)
	}()
	for i, what := range []string{"small SRV", "big SRV over TCP"} {
		select {
		case m := <-answered:
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
				t.Fatalf("%s while big is being rebuilt: %v", what, m)
			}
			if i == 1 {
				for _, rr := range m.Answer {
					if rr.(*dns.SRV).Port == 7 {
						t.Fatalf("the held build was served")
					}
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s waited for another service's rebuild", what)
		}
	}
	// The moved instance's own name already answers from the new version.
	if m := ask(t, s, moved.ID+".big."+z, dns.TypeA, 0, false); len(m.Answer) != 1 {
		t.Fatalf("target of the changed instance: %v", m)
	}

	close(release)
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := false
		// The weighted orders put the moved instance first in some.
		for q := 0; q < maxOrders && !seen; q++ {
			for _, rr := range ask(t, s, "_big._tcp."+z, dns.TypeSRV, 0, true).Answer {
				seen = seen || rr.(*dns.SRV).Port == 7
			}
		}
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new answer never replaced the old one")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLargeServiceAnswersAreBounded: 50,000 instances give a TCP answer
// of at most 65,535 bytes of whole records, and a UDP answer that fits,
// with TC.
func TestLargeServiceAnswersAreBounded(t *testing.T) {
	const z = "servicediscovery.internal."
	for _, weighted := range []bool{false, true} {
		s, _, _ := bigIndex(t, 50000, weighted)
		for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA} {
			m := ask(t, s, "big."+z, qtype, 0, true)
			m.Compress = true
			if n := m.Len(); n > 65535 || len(m.Answer) < 500 || m.Truncated {
				t.Errorf("weighted=%v %s over TCP: %d bytes, %d records, tc=%v", weighted, dns.TypeToString[qtype], n, len(m.Answer), m.Truncated)
			}
			for _, size := range []uint16{0, 1232} {
				m = ask(t, s, "big."+z, qtype, size, false)
				if !m.Truncated || len(m.Answer) == 0 || len(m.Extra) > 1 {
					t.Errorf("weighted=%v %s over UDP %d: tc=%v answers=%d extra=%d", weighted, dns.TypeToString[qtype], size, m.Truncated, len(m.Answer), len(m.Extra))
				}
			}
		}
	}
}

// TestWeightedTruncatedAnswers: a weight-3 instance comes first about
// three times as often as a weight-1 one, in truncated answers too.
func TestWeightedTruncatedAnswers(t *testing.T) {
	const z = "servicediscovery.internal."
	s, _, _ := bigIndex(t, 300, true)
	first := map[uint16]int{}
	for q := 0; q < maxOrders*4; q++ {
		m := ask(t, s, "big."+z, dns.TypeSRV, 0, false)
		if !m.Truncated || len(m.Answer) == 0 {
			t.Fatalf("tc=%v answers=%d", m.Truncated, len(m.Answer))
		}
		first[m.Answer[0].(*dns.SRV).Weight]++
	}
	// Weights 1, 2, 3 in equal numbers: first with odds 1/6, 2/6, 3/6.
	if first[3] <= first[1] {
		t.Errorf("weight 3 first %d times, weight 1 %d times", first[3], first[1])
	}
}

// BenchmarkBuildLarge packs every list of a 20,000-instance service, as
// the background builder does after each change.
func BenchmarkBuildLarge(b *testing.B) {
	for _, weighted := range []bool{false, true} {
		b.Run(fmt.Sprintf("weighted=%v", weighted), func(b *testing.B) {
			s, _, _ := bigIndex(b, 20000, weighted)
			svc := s.zone.get([]byte("big"))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for l := range svc.lists {
					svc.lists[l].Store(nil)
				}
				svc.orderOnce = sync.Once{}
				s.buildAll(svc)
			}
		})
	}
}

// TestTruncatedAnswerCounts pins the figures the README gives: how many
// whole records a truncated UDP answer carries for the agent's 28-byte
// instance IDs (a1b2c3d4e5f6-8081-tcp-0a1b2c) in the default zone.
func TestTruncatedAnswerCounts(t *testing.T) {
	const z = "servicediscovery.internal."
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{}, ix)
	if err != nil {
		t.Fatal(err)
	}
	var evs []registry.Event
	for i := 0; i < 200; i++ {
		evs = append(evs, registry.Event{Type: registry.EventPut, Rev: int64(i + 1), Instance: registry.Instance{
			ID: fmt.Sprintf("a1b2c3d4e%03d-8081-tcp-0a1b2c", i), Service: "calc", Protocol: "tcp",
			Address: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: uint16(30000 + i),
			Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
		}})
	}
	ix.Apply(evs)
	cases := []struct {
		name  string
		qtype uint16
		edns  uint16
		want  int
	}{
		{"calc." + z, dns.TypeSRV, 0, 5},
		{"calc." + z, dns.TypeSRV, 1232, 14},
		{"_calc._tcp." + z, dns.TypeSRV, 0, 5},
		{"_calc._tcp." + z, dns.TypeSRV, 1232, 14},
		{"calc." + z, dns.TypeA, 0, 29},
		{"calc." + z, dns.TypeA, 1232, 73},
	}
	for _, c := range cases {
		m := ask(t, s, c.name, c.qtype, c.edns, false)
		if !m.Truncated || len(m.Answer) != c.want {
			t.Errorf("%s %s EDNS %d: tc=%v, %d records, README says %d", c.name, dns.TypeToString[c.qtype], c.edns, m.Truncated, len(m.Answer), c.want)
		}
	}
	m := ask(t, s, "calc."+z, dns.TypeSRV, 0, true)
	m.Compress = true
	t.Logf("TCP: %d of 200 SRV records with glue, %d bytes", len(m.Answer), m.Len())
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.2":            "127.0.0.2",
		"::ffff:10.0.0.1":      "10.0.0.1",
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::",
		"2001:db8:1:2:bbbb::9": "2001:db8:1:2::",
		"fe80::1%eth0":         "fe80::",
		"2001:db8:1:3::1":      "2001:db8:1:3::",
	} {
		if got := clientKey(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("clientKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestUnservableNamesDoNotBreakAnswers: an instance stored before the
// zone checks, whose DNS-SD label would be 64 bytes, is left out, and
// browsing still lists every other service.
func TestUnservableNamesDoNotBreakAnswers(t *testing.T) {
	const z = "servicediscovery.internal."
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{}, ix)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("s", 63)
	var evs []registry.Event
	for i, svc := range []string{"calc", long, "time"} {
		evs = append(evs, registry.Event{Type: registry.EventPut, Rev: int64(i + 1), Instance: registry.Instance{
			ID: "i-1", Service: svc, Protocol: "tcp", Address: netip.MustParseAddr("10.0.0.1"), Port: 80,
			Weight: 1, Health: registry.Health{Status: registry.HealthPassing},
		}})
		evs[i].Instance.ID = fmt.Sprintf("i-%d", i)
	}
	ix.Apply(evs)
	m := ask(t, s, "_services._dns-sd._udp."+z, dns.TypePTR, 0, false)
	if len(m.Answer) != 2 {
		t.Fatalf("browse: %v", m)
	}
	if m := ask(t, s, long+"."+z, dns.TypeSRV, 0, false); m.Rcode != dns.RcodeNameError {
		t.Fatalf("the unservable service: %v", m)
	}
}
