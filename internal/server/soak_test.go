package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// soakDuration is how long TestSoak loads the server: 60s, or
// $SIGNPOST_SOAK_DURATION (a Go duration) to run it longer.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("SIGNPOST_SOAK_DURATION")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SIGNPOST_SOAK_DURATION=%q: want a Go duration such as 10m", v)
	}
	return d
}

// soakCounts counts what the load did, for the log and the checks.
type soakCounts struct {
	writes, refusedAsExpected, unexpected         atomic.Int64
	dnsOK, dnsErr, dnsNotSent                     atomic.Int64
	watchers, idle, halfSent, oversized, badNames atomic.Int64
	firstUnexpected, dnsLastErr                   atomic.Value
}

func (c *soakCounts) unexpectedf(format string, args ...any) {
	c.unexpected.Add(1)
	c.firstUnexpected.CompareAndSwap(nil, fmt.Sprintf(format, args...))
}

// TestSoak runs a server process under a mix of valid writes, hostile
// clients and DNS load (UDP and TCP) for soakDuration, then checks that
// no acknowledged write was lost, that DNS answers what the API lists,
// and that goroutines and resident memory come back near where they
// started once the hostile clients are gone.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	dur := soakDuration(t)
	p := signposttest.StartProcess(t, 0,
		"--http-write-timeout", "3s", "--http-read-timeout", "3s", "--http-read-header-timeout", "2s", "--http-idle-timeout", "5s",
		"--http-max-streams-per-client", "32", "--http-max-conns-per-client", "96")
	c, err := apiclient.New(p.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+3*time.Minute)
	defer cancel()
	const services, writers, idsPerWriter = 8, 4, 40
	// Warm up every path once, then take the baseline.
	for s := 0; s < services; s++ {
		in := soakInstance(s, 9999, 0)
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	base := soakSample(t, ctx, p)
	t.Logf("baseline: %d goroutines, RSS %d MiB", base.goroutines, base.rss>>20)

	var counts soakCounts
	loadCtx, stopLoad := context.WithTimeout(ctx, dur)
	defer stopLoad()
	var wg sync.WaitGroup
	// acked[w][i] is the last acknowledged state of writer w's id i:
	// its port, or 0 when deleted.
	acked := make([][]uint16, writers)
	for w := range writers {
		acked[w] = make([]uint16, idsPerWriter)
		wg.Add(1)
		go func() {
			defer wg.Done()
			soakWriter(loadCtx, ctx, c, w, acked[w], &counts)
		}()
	}
	hostile := []func(context.Context, *signposttest.Process, *soakCounts){soakWatchers, soakIdle, soakHalfSent, soakOversized, soakBadNames}
	for _, h := range hostile {
		wg.Add(1)
		go func() { defer wg.Done(); h(loadCtx, p, &counts) }()
	}
	for _, netw := range []string{"udp", "udp", "tcp"} {
		wg.Add(1)
		go func() { defer wg.Done(); soakDNS(loadCtx, p.DNS, netw, services, &counts) }()
	}
	mid := time.NewTicker(dur / 4)
	defer mid.Stop()
	peak := base
	for loadCtx.Err() == nil {
		select {
		case <-loadCtx.Done():
		case <-mid.C:
			s := soakSample(t, ctx, p)
			peak.goroutines, peak.rss = max(peak.goroutines, s.goroutines), max(peak.rss, s.rss)
			t.Logf("under load: %d goroutines, RSS %d MiB, %d writes, %d DNS answers", s.goroutines, s.rss>>20, counts.writes.Load(), counts.dnsOK.Load())
		}
	}
	wg.Wait()
	t.Logf("load: %d acknowledged writes, %d hostile requests refused as expected, %d unexpected; DNS %d answers, %d errors; hostile: %d watchers, %d idle, %d half-sent, %d oversized, %d bad names",
		counts.writes.Load(), counts.refusedAsExpected.Load(), counts.unexpected.Load(), counts.dnsOK.Load(), counts.dnsErr.Load(),
		counts.watchers.Load(), counts.idle.Load(), counts.halfSent.Load(), counts.oversized.Load(), counts.badNames.Load())
	if n := counts.unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected answers; the first: %v", n, counts.firstUnexpected.Load())
	}
	if e := counts.dnsLastErr.Load(); e != nil {
		t.Logf("last DNS error: %v", e)
	}
	if counts.writes.Load() == 0 || counts.dnsOK.Load() == 0 {
		t.Fatal("the load did nothing")
	}
	t.Logf("DNS queries this process could not send (its own dial failed): %d", counts.dnsNotSent.Load())
	if ok, bad := counts.dnsOK.Load(), counts.dnsErr.Load(); bad*100 > ok {
		t.Errorf("DNS under load: %d errors for %d answers (over 1%%); the last: %v", bad, ok, counts.dnsLastErr.Load())
	}

	// No acknowledged write lost.
	all, _, err := c.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]registry.Instance{}
	for _, in := range all {
		have[in.ID] = in
	}
	for w := range writers {
		for i, port := range acked[w] {
			id := soakID(w, i)
			in, ok := have[id]
			switch {
			case port == 0 && ok:
				t.Errorf("%s: deleted (acknowledged) but still listed", id)
			case port != 0 && !ok:
				t.Errorf("%s: written with port %d (acknowledged) but gone", id, port)
			case port != 0 && in.Port != port:
				t.Errorf("%s: port %d, want the acknowledged %d", id, in.Port, port)
			}
		}
	}
	// DNS equals the API, service by service, over TCP (whole answers).
	for s := 0; s < services; s++ {
		name := fmt.Sprintf("soak%d", s)
		resp, err := c.Service(ctx, name, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint16
		for _, in := range resp.Instances {
			want = append(want, in.Port)
		}
		got, err := soakSRVPorts(ctx, p.DNS, "tcp", name)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: DNS SRV ports %v, API %v", name, got, want)
		}
	}
	// Goroutines and memory come back once the hostile clients are gone
	// (their connections time out) and the load stops.
	deadline := time.Now().Add(90 * time.Second)
	for {
		s := soakSample(t, ctx, p)
		gOK := s.goroutines <= base.goroutines+20
		rssOK := s.rss <= base.rss+max(base.rss/2, 64<<20)
		if gOK && rssOK {
			t.Logf("after: %d goroutines (baseline %d, peak %d), RSS %d MiB (baseline %d, peak %d)", s.goroutines, base.goroutines, peak.goroutines, s.rss>>20, base.rss>>20, peak.rss>>20)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("90s after the load: %d goroutines (baseline %d), RSS %d MiB (baseline %d): not back near the start", s.goroutines, base.goroutines, s.rss>>20, base.rss>>20)
		}
		time.Sleep(time.Second)
	}
}

type soakStats struct {
	goroutines int
	rss        int64
}

// soakSample reads go_goroutines and process_resident_memory_bytes from
// the server's /metrics.
func soakSample(t *testing.T, ctx context.Context, p *signposttest.Process) soakStats {
	t.Helper()
	g, err := p.Metric(ctx, "go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	rss, err := p.Metric(ctx, "process_resident_memory_bytes")
	if err != nil {
		t.Fatal(err)
	}
	return soakStats{goroutines: int(g), rss: int64(rss)}
}

func soakID(w, i int) string { return fmt.Sprintf("soak-w%d-%d", w, i) }

func soakInstance(svc, id int, port uint16) registry.Instance {
	if port == 0 {
		port = uint16(60000 + svc)
	}
	return registry.Instance{
		ID:      fmt.Sprintf("soak-base-%d-%d", svc, id),
		Service: fmt.Sprintf("soak%d", svc),
		Address: netip.AddrFrom4([4]byte{10, 9, byte(svc), byte(id%250 + 1)}),
		Port:    port,
	}
}

// soakWriter puts and deletes its own ids at random until load is done,
// and records each acknowledged state. Each id has ports of its own
// (w, i), so that DNS and the API can be compared by port. Requests run
// under ctx, not load, so that none is cut with its outcome unknown.
func soakWriter(load, ctx context.Context, c *apiclient.Client, w int, acked []uint16, counts *soakCounts) {
	rng := rand.New(rand.NewPCG(uint64(w), 1))
	for gen := 0; load.Err() == nil; gen++ {
		i := rng.IntN(len(acked))
		id := soakID(w, i)
		if acked[i] != 0 && rng.IntN(4) == 0 {
			if _, err := c.Deregister(ctx, id); err == nil {
				acked[i] = 0
				counts.writes.Add(1)
			} else if ctx.Err() == nil {
				counts.unexpectedf("delete %s: %v", id, err)
			}
			continue
		}
		port := uint16(10000 + w*1000 + i*10 + gen%10)
		in := registry.Instance{ID: id, Service: fmt.Sprintf("soak%d", i%8), Address: netip.AddrFrom4([4]byte{10, 8, byte(w), byte(i + 1)}), Port: port,
			Meta: map[string]string{"gen": fmt.Sprint(gen)}}
		if _, err := c.Register(ctx, in); err == nil {
			acked[i] = port
			counts.writes.Add(1)
		} else if ctx.Err() == nil {
			counts.unexpectedf("put %s: %v", id, err)
		}
	}
}

// soakConn dials the API from 127.0.0.<from> (hostile clients each have
// an address of their own, as they would in the field), or returns nil
// when it cannot.
func soakConn(ctx context.Context, p *signposttest.Process, from byte) net.Conn {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}}
	c, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(p.HTTP, "http://"))
	if err != nil {
		return nil
	}
	return c
}

// soakHolders opens a connection from 127.0.0.<from> every interval
// until ctx is done, lets send write to it what a hostile client would,
// never reads, and closes them all at the end.
func soakHolders(ctx context.Context, p *signposttest.Process, from byte, every time.Duration, count *atomic.Int64, send func(i int, c net.Conn)) {
	var conns []net.Conn
	for i := 0; ctx.Err() == nil; i++ {
		if c := soakConn(ctx, p, from); c != nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
			send(i, c)
			conns = append(conns, c)
			count.Add(1)
		}
		sleepCtx(ctx, every)
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// soakWatchers opens watches and blocking queries that never read.
func soakWatchers(ctx context.Context, p *signposttest.Process, counts *soakCounts) {
	paths := []string{"/v1/watch?index=0", "/v1/watch?service=soak1&index=0", "/v1/services/soak2?index=1&wait=20s", "/v1/instances"}
	soakHolders(ctx, p, 2, 200*time.Millisecond, &counts.watchers, func(i int, c net.Conn) {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", paths[i%len(paths)])
	})
}

// soakIdle opens connections that send nothing, and keep-alive ones left
// idle after a request.
func soakIdle(ctx context.Context, p *signposttest.Process, counts *soakCounts) {
	soakHolders(ctx, p, 3, 100*time.Millisecond, &counts.idle, func(i int, c net.Conn) {
		if i%2 == 0 {
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		}
	})
}

// soakHalfSent sends requests whose headers or bodies never end.
func soakHalfSent(ctx context.Context, p *signposttest.Process, counts *soakCounts) {
	soakHolders(ctx, p, 4, 200*time.Millisecond, &counts.halfSent, func(i int, c net.Conn) {
		if i%2 == 0 {
			fmt.Fprintf(c, "PUT /v1/instances/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		} else {
			fmt.Fprintf(c, "GET /v1/instances HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
		}
	})
}

// soakOversized sends bodies over the limits; each must get 413.
func soakOversized(ctx context.Context, p *signposttest.Process, counts *soakCounts) {
	big := `{"service":"soak0","address":"10.0.0.1","port":1,"meta":{"k":"` + strings.Repeat("v", 1<<20) + `"}}`
	for ctx.Err() == nil {
		status, err := soakPut(ctx, p.URL+"/v1/instances/oversized", "application/json", big)
		switch {
		case err != nil:
			// The server may close before reading everything it was sent.
		case status != 413:
			counts.unexpectedf("oversized PUT: %d, want 413", status)
		default:
			counts.refusedAsExpected.Add(1)
		}
		counts.oversized.Add(1)
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// soakBadNames sends writes with bad names and a bad Content-Type; each
// must be refused with its 4xx.
func soakBadNames(ctx context.Context, p *signposttest.Process, counts *soakCounts) {
	cases := []struct {
		path, ct, body string
		status         int
	}{
		{"/v1/instances/Bad_Name", "application/json", `{"service":"soak0","address":"10.0.0.1","port":1}`, 400},
		{"/v1/instances/ok", "application/json", `{"service":"bad name!","address":"10.0.0.1","port":1}`, 400},
		{"/v1/instances/ok", "application/json", `{"service":"` + strings.Repeat("x", 64) + `","address":"10.0.0.1","port":1}`, 400},
		{"/v1/instances/ok", "text/plain", `{"service":"soak0","address":"10.0.0.1","port":1}`, 415},
		{"/v1/instances/" + strings.Repeat("i", 64), "application/json", `{"service":"soak0","address":"10.0.0.1","port":1}`, 400},
		{"/v1/nodes/n1", "application/json", `{"ttl":"10s","instances":[{"id":"a","service":"soak0","address":"10.0.0.1","port":0}]}`, 400},
		// A node set with no instances still has its node name checked.
		{"/v1/nodes/" + strings.Repeat("n", 300), "application/json", `{"ttl":"10s","instances":[]}`, 400},
	}
	for i := 0; ctx.Err() == nil; i++ {
		cs := cases[i%len(cases)]
		status, err := soakPut(ctx, p.URL+cs.path, cs.ct, cs.body)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				counts.unexpectedf("PUT %s: %v", cs.path, err)
			}
		case status != cs.status:
			counts.unexpectedf("PUT %s (%s): %d, want %d", cs.path, cs.ct, status, cs.status)
		default:
			counts.refusedAsExpected.Add(1)
		}
		counts.badNames.Add(1)
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// soakPut sends one PUT on a connection of its own and returns the status.
func soakPut(ctx context.Context, url, ct, body string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", ct)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// soakDNS asks for the soak services' SRV records over netw until ctx is
// done.
func soakDNS(ctx context.Context, addr, netw string, services int, counts *soakCounts) {
	cl := &dns.Client{Net: netw, Timeout: 3 * time.Second}
	// Over TCP, queries share one connection, as a resolver's do; a new
	// connection per query would leave tens of thousands of sockets in
	// TIME-WAIT on the client and starve its own ephemeral ports.
	var conn *dns.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for i := 0; ctx.Err() == nil; i++ {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("soak%d.servicediscovery.internal.", i%services), dns.TypeSRV)
		m.SetEdns0(1232, false)
		var r *dns.Msg
		var err error
		if netw == "tcp" {
			if conn == nil {
				conn, err = cl.DialContext(ctx, addr)
			}
			if err == nil {
				r, _, err = cl.ExchangeWithConnContext(ctx, m, conn)
				if err != nil {
					conn.Close()
					conn = nil
				}
			}
		} else {
			r, _, err = cl.ExchangeContext(ctx, m, addr)
		}
		var oe *net.OpError
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &oe) && oe.Op == "dial":
			// The test's own socket could not be set up: no query left
			// this process, so the server had nothing to answer. Seen
			// at a few per thousand while the hostile clients run (an
			// immediate "dial udp: i/o timeout" in this process).
			counts.dnsNotSent.Add(1)
		case err != nil || (r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError):
			counts.dnsErr.Add(1)
			if err != nil {
				counts.dnsLastErr.Store(netw + ": " + err.Error())
			} else {
				counts.dnsLastErr.Store(netw + ": rcode " + dns.RcodeToString[r.Rcode])
			}
		default:
			counts.dnsOK.Add(1)
		}
	}
}

// soakSRVPorts returns the sorted SRV ports of service over netw.
func soakSRVPorts(ctx context.Context, addr, netw, service string) ([]uint16, error) {
	m := new(dns.Msg)
	m.SetQuestion(service+".servicediscovery.internal.", dns.TypeSRV)
	r, _, err := (&dns.Client{Net: netw, Timeout: 5 * time.Second}).ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, fmt.Errorf("%s SRV over %s: %w", service, netw, err)
	}
	var out []uint16
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, s.Port)
		}
	}
	slices.Sort(out)
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
