package zonexfr_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/metricstest"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	"github.com/signpost-dns/signpost/internal/zonexfr"
)

const zone = "servicediscovery.internal."

// answer returns the sorted answer records of name/qtype at addr, over
// TCP so that nothing is truncated.
func answer(addr, name string, qtype uint16) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return "", err
	}
	var out []string
	for _, rr := range r.Answer {
		out = append(out, rr.String())
	}
	sort.Strings(out)
	return dns.RcodeToString[r.Rcode] + "\n" + strings.Join(out, "\n"), nil
}

// sameAnswers reports nil when the secondary answers name/qtype as
// signpost does.
func sameAnswers(signpost, secondary, name string, qtype uint16) error {
	want, err := answer(signpost, name, qtype)
	if err != nil {
		return fmt.Errorf("signpost: %w", err)
	}
	got, err := answer(secondary, name, qtype)
	if err != nil {
		return fmt.Errorf("secondary: %w", err)
	}
	if got != want {
		return fmt.Errorf("%s %s: secondary answers\n%s\nsignpost answers\n%s", name, dns.TypeToString[qtype], got, want)
	}
	return nil
}

// TestNSDSecondary runs NSD as a secondary of a signpost server: NSD
// transfers the zone, answers as signpost does, and follows registrations
// and deregistrations through signpost's NOTIFY and IXFR, all signed with
// TSIG.
func TestNSDSecondary(t *testing.T) {
	nsd := signposttest.Need(t, "nsd")
	dir := t.TempDir()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b64 := base64.StdEncoding.EncodeToString(secret)
	keyFile := filepath.Join(dir, "xfr.key")
	if err := os.WriteFile(keyFile, []byte("signpost-xfr:hmac-sha256:"+b64+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := zonexfr.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	nsdPort := signposttest.FreePort(t)
	sp := signposttest.Start(t, server.Config{
		DNS: dnsserver.Config{FailOpen: true},
		Xfr: zonexfr.Config{
			Allow:       []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
			Key:         key,
			Notify:      []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(nsdPort))},
			NotifyDelay: 200 * time.Millisecond,
		},
	})
	api := sp.Client(t)
	ctx := context.Background()
	inst := func(i int) registry.Instance {
		return registry.Instance{ID: fmt.Sprintf("calc-%d", i), Service: "calc", Address: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Port: 8080 + uint16(i), Meta: map[string]string{"version": "1.2"}}
	}
	for i := 1; i <= 2; i++ {
		if _, err := api.Register(ctx, inst(i)); err != nil {
			t.Fatal(err)
		}
	}
	// A service of 300 instances makes the first transfer several
	// messages (32 KiB each), each signed.
	for i := range 300 {
		in := registry.Instance{ID: fmt.Sprintf("big-%03d-5f2c1d9e8a7b6c5d4e3f2a1b", i), Service: "big", Address: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 9000}
		if _, err := api.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	_, spPort, _ := net.SplitHostPort(sp.DNSAddr())
	conf := `server:
    ip-address: 127.0.0.1
    port: ` + strconv.Itoa(nsdPort) + `
    username: ""
    chroot: ""
    zonesdir: "` + dir + `"
    database: ""
    zonelistfile: "` + dir + `/zone.list"
    xfrdfile: "` + dir + `/xfrd.state"
    xfrdir: "` + dir + `"
    pidfile: "` + dir + `/nsd.pid"
    verbosity: 2
    # NSD reloads a transferred zone at most once a second by default:
    # 0 shows what signpost itself takes.
    xfrd-reload-timeout: 0
    server-count: 1
remote-control:
    control-enable: no
` + signposttest.DocFile(t, "docs/secondaries/nsd.conf",
		"BASE64SECRET", b64,
		"request-xfr: 10.0.0.5@53", "request-xfr: 127.0.0.1@"+spPort,
		"allow-notify: 10.0.0.5", "allow-notify: 127.0.0.1")
	confFile := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(filepath.Dir(nsd), "nsd-checkconf"), confFile).CombinedOutput(); err != nil {
		t.Fatalf("nsd-checkconf: %v\n%s\n%s", err, out, conf)
	}
	signposttest.Run(t, nsd, "-d", "-c", confFile)
	secondary := "127.0.0.1:" + strconv.Itoa(nsdPort)
	type question struct {
		name  string
		qtype uint16
	}
	questions := []question{
		{"calc." + zone, dns.TypeSRV}, {"calc." + zone, dns.TypeA},
		{"_calc._tcp." + zone, dns.TypeSRV}, {"_calc._tcp." + zone, dns.TypePTR},
		{"calc-1.calc." + zone, dns.TypeA}, {"calc-1.calc." + zone, dns.TypeTXT},
		{"calc-3.calc." + zone, dns.TypeA},
		{"calc-1._calc._tcp." + zone, dns.TypeSRV}, {"calc-1._calc._tcp." + zone, dns.TypeTXT},
		{"_services._dns-sd._udp." + zone, dns.TypePTR}, {zone, dns.TypeSOA},
		{"big." + zone, dns.TypeSRV}, {"big-299-5f2c1d9e8a7b6c5d4e3f2a1b.big." + zone, dns.TypeA},
	}
	check := func() error {
		for _, q := range questions {
			if err := sameAnswers(sp.DNSAddr(), secondary, q.name, q.qtype); err != nil {
				return err
			}
		}
		return nil
	}
	took := waitFor(t, "NSD answering signpost's zone after its first transfer", 60*time.Second, check)
	t.Logf("NSD started, transferred and answered in %s", took.Round(time.Millisecond))

	// The NOTIFY of the first registrations, sent before NSD listened,
	// is retried until NSD acknowledges it; only then are the figures
	// below signpost's alone.
	waitFor(t, "NSD acknowledging a NOTIFY", 30*time.Second, func() error {
		if n := metricstest.Counter(t, sp.Registry(), "signpost_xfr_notify_total", "result", "acked"); n < 1 {
			return fmt.Errorf("NOTIFY acknowledged: %v", n)
		}
		return nil
	})
	// A registration, then a deregistration: NOTIFY, transfer, answers.
	for _, step := range []struct {
		what   string
		change func() error
	}{
		{"registration", func() error { _, err := api.Register(ctx, inst(3)); return err }},
		{"deregistration", func() error { _, err := api.Deregister(ctx, "calc-1"); return err }},
	} {
		before := incremental(t, sp)
		start := time.Now()
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		fetched := waitFor(t, "NSD fetching the "+step.what+" by IXFR", 30*time.Second, func() error {
			if n := incremental(t, sp); n <= before {
				return fmt.Errorf("incremental transfers: %v", n)
			}
			return nil
		})
		waitFor(t, "NSD answering the "+step.what, 30*time.Second, check)
		t.Logf("%s: NSD fetched it by IXFR %s after the API acknowledged it (NOTIFY coalescing: 200ms), and answers it %s after", step.what, fetched.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
}

// incremental is how many incremental IXFR signpost served.
func incremental(t *testing.T, sp *signposttest.Server) float64 {
	return metricstest.Counter(t, sp.Registry(), "signpost_xfr_requests_total", "answer", "ixfr_incremental")
}

// waitFor polls cond until it holds, and returns how long that took.
func waitFor(t *testing.T, what string, within time.Duration, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not after %s: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
