package lastmile

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/discovery"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// bigService is how many instances the large service has: more than fit
// in a UDP answer of 1232 bytes.
const bigService = 40

// propagationBound is the documented bound (docs/resolvers.md) on how long
// a change takes to show through a caching resolver: the TTL, plus the
// resolver's own delay, well under twice the TTL.
const propagationBound = 2 * ttl

// startDnsmasq runs dnsmasq with docs/resolvers/dnsmasq.conf, pointed at
// sp, with stop-dns-rebind on (as many distributions ship it) and no
// other upstream, and returns its address. Each of drop is a documented
// line left out.
func startDnsmasq(t *testing.T, sp *signpost, drop ...string) string {
	t.Helper()
	prog := need(t, "dnsmasq")
	conf := docConfig(t, "dnsmasq.conf", append([]string{"127.0.0.1#8053", strings.Replace(sp.DNSAddr(), ":", "#", 1)}, dropping(drop)...)...)
	path := filepath.Join(t.TempDir(), "dnsmasq.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	run(t, prog, "--keep-in-foreground", "--conf-file="+path, "--port="+strconv.Itoa(port),
		"--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--pid-file", "--log-facility=-", "--stop-dns-rebind")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitUp(t, "dnsmasq", addr)
	return addr
}

// startUnbound runs Unbound with docs/resolvers/unbound.conf, pointed at
// sp, with private-address 10.0.0.0/8 set (against DNS rebinding), and
// returns its address. Only the zone is resolved: every other name is
// refused, so that nothing leaves loopback. Each of drop is a documented
// line left out.
func startUnbound(t *testing.T, sp *signpost, drop ...string) string {
	t.Helper()
	prog := need(t, "unbound")
	dir := t.TempDir()
	doc := docConfig(t, "unbound.conf", append([]string{"127.0.0.1@8053", strings.Replace(sp.DNSAddr(), ":", "@", 1)}, dropping(drop)...)...)
	docPath := filepath.Join(dir, "signpost.conf")
	if err := os.WriteFile(docPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`server:
    interface: 127.0.0.1@%d
    port: %d
    do-ip6: no
    username: ""
    chroot: ""
    directory: %q
    pidfile: ""
    use-syslog: no
    logfile: ""
    do-daemonize: no
    num-threads: 1
    outgoing-range: 64
    num-queries-per-thread: 32
    so-reuseport: no
    private-address: 10.0.0.0/8
    # Nothing but the zone is resolved: no query leaves loopback.
    local-zone: "." refuse
    local-zone: "servicediscovery.internal." transparent
include: %q
`, port, port, dir, docPath)
	path := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(prog+"-checkconf", path).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf %s: %v\n%s", path, err, out)
	}
	run(t, prog, "-d", "-c", path)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitUp(t, "unbound", addr)
	return addr
}

// dropping turns lines into docConfig replacements that remove them.
func dropping(lines []string) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l, "")
	}
	return out
}

// TestBrokenSettings checks what docs/resolvers.md says breaks without
// each documented setting, so that every line there is needed.
func TestBrokenSettings(t *testing.T) {
	sp := startSignpost(t)
	sp.register(t, "calc", instanceID("calc", 1), "10.1.0.1", 8081)
	aOf := func(addr string) (*dns.Msg, error) { return resolve(addr, "calc."+zone, dns.TypeA) }

	t.Run("dnsmasq_without_rebind-domain-ok", func(t *testing.T) {
		addr := startDnsmasq(t, sp, "rebind-domain-ok=/servicediscovery.internal/")
		r, err := aOf(addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrsOf(r.Answer)) != 0 {
			t.Errorf("with stop-dns-rebind and no rebind-domain-ok, dnsmasq passed %v", r.Answer)
		}
	})
	t.Run("unbound_without_do-not-query-localhost", func(t *testing.T) {
		addr := startUnbound(t, sp, "do-not-query-localhost: no")
		r, err := aOf(addr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeServerFailure {
			t.Errorf("without do-not-query-localhost: no, Unbound answered %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("unbound_without_private-domain", func(t *testing.T) {
		addr := startUnbound(t, sp, `private-domain: "servicediscovery.internal"`)
		r, err := aOf(addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrsOf(r.Answer)) != 0 {
			t.Errorf("with private-address 10.0.0.0/8 and no private-domain, Unbound passed %v", r.Answer)
		}
	})
}

// needPartialTruncation fails a test whose assertions need signpost's
// truncated UDP answers to carry the whole records that fit (issue 13)
// when signpost's own answer for qname carries none.
func needPartialTruncation(t *testing.T, sp *signpost, qname string) {
	t.Helper()
	r, err := ask(sp.DNSAddr(), "udp", qname, dns.TypeSRV, 1232)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Fatalf("%s SRV over UDP at 1232 bytes is not truncated: the test needs a larger service", qname)
	}
	if len(r.Answer) == 0 {
		t.Fatalf("%s SRV over UDP at 1232 bytes: TC with no records; a truncated answer must carry the whole records that fit", qname)
	}
}

// waitUp waits until a resolver answers (anything) for the zone's SOA.
func waitUp(t *testing.T, what, addr string) {
	t.Helper()
	waitFor(t, what+" answering", 20*time.Second, func() error {
		_, err := ask(addr, "udp", zone, dns.TypeSOA, 1232)
		return err
	})
}

func TestDnsmasq(t *testing.T) {
	sp := startSignpost(t)
	addr := startDnsmasq(t, sp)
	testResolver(t, sp, "dnsmasq", addr)
	// dnsmasq 2.90 strips the records from a truncated reply it relays
	// ("reply is truncated"), so a UDP client's first answer is TC with
	// none and it asks again over TCP. The TCP answer fills dnsmasq's
	// cache, and from then on its UDP answers carry the whole records
	// that fit, with TC: what HAProxy can use.
	t.Run("truncated_udp_answer_carries_records", func(t *testing.T) {
		needPartialTruncation(t, sp, "_big._tcp."+zone)
		r, err := ask(addr, "tcp", "_big._tcp."+zone, dns.TypeSRV, 1232)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(srvs(r)); n != bigService {
			t.Fatalf("dnsmasq over TCP: %d SRV records, want %d", n, bigService)
		}
		for _, size := range []uint16{512, 1232} {
			r, err := ask(addr, "udp", "_big._tcp."+zone, dns.TypeSRV, size)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(srvs(r)); !r.Truncated || n == 0 || n >= bigService {
				t.Errorf("dnsmasq, bufsize %d: big SRV over UDP from its cache: TC=%v with %d whole records, want TC with some (not all %d)", size, r.Truncated, n, bigService)
			}
		}
	})
}

func TestUnbound(t *testing.T) {
	sp := startSignpost(t)
	addr := startUnbound(t, sp)
	testResolver(t, sp, "unbound", addr)
}

// testResolver checks what an application sees through a resolver that
// forwards the zone to sp.
func testResolver(t *testing.T, sp *signpost, what, addr string) {
	calc1 := sp.register(t, "calc", instanceID("calc", 1), "10.1.0.1", 8081)
	for i := range bigService {
		sp.register(t, "big", instanceID("big", i), fmt.Sprintf("10.2.0.%d", i+1), uint16(9000+i))
	}

	t.Run("srv_a_nxdomain", func(t *testing.T) {
		r, err := resolve(addr, "_calc._tcp."+zone, dns.TypeSRV)
		if err != nil {
			t.Fatal(err)
		}
		if s := srvs(r); r.Rcode != dns.RcodeSuccess || len(s) != 1 || s[0].Port != 8081 || s[0].Target != calc1+".calc."+zone {
			t.Errorf("%s: _calc._tcp SRV = %v", what, r)
		}
		r, err = resolve(addr, "calc."+zone, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		// A private address, through stop-dns-rebind / private-address.
		if got := addrsOf(r.Answer); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"10.1.0.1"}) {
			t.Errorf("%s: calc A = %v, want 10.1.0.1:\n%v", what, got, r)
		}
		r, err = resolve(addr, calc1+".calc."+zone, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := addrsOf(r.Answer); !slices.Equal(got, []string{"10.1.0.1"}) {
			t.Errorf("%s: SRV target A = %v, want 10.1.0.1", what, got)
		}
		r, err = resolve(addr, "nothing."+zone, dns.TypeSRV)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s: nothing SRV = %s with %d records, want NXDOMAIN", what, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	})

	t.Run("forty_instances", func(t *testing.T) {
		r, err := resolve(addr, "_big._tcp."+zone, dns.TypeSRV)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(srvs(r)); got != bigService {
			t.Errorf("%s: big SRV (UDP, then TCP when truncated) has %d records, want %d", what, got, bigService)
		}
		t.Logf("%s: big SRV over TCP: %d records, %d glue addresses", what, len(srvs(r)), len(addrsOf(r.Extra)))
		// The discovery client resolves targets the resolver sent
		// without glue.
		res := &discovery.Resolver{Server: addr, Zone: "servicediscovery.internal"}
		ins, err := res.Lookup(context.Background(), "big")
		if err != nil {
			t.Fatalf("%s: discovery lookup of big: %v", what, err)
		}
		withAddr := 0
		for _, in := range ins {
			if strings.HasPrefix(in.Address(), "10.2.0.") {
				withAddr++
			}
		}
		if len(ins) != bigService || withAddr != bigService {
			t.Errorf("%s: discovery found %d instances, %d with an address, want %d with addresses", what, len(ins), withAddr, bigService)
		}
		// So does `signpost lookup`.
		out, err := exec.Command(signposttest.Binary(t), "lookup", "--dns", addr, "big").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: signpost lookup big: %v\n%s", what, err, out)
		}
		if n := strings.Count(string(out), " 10.2.0."); n != bigService {
			t.Errorf("%s: signpost lookup printed %d addresses, want %d:\n%s", what, n, bigService, out)
		}
	})

	t.Run("propagation", func(t *testing.T) {
		// The worst case: a change right after the resolver cached the
		// answer, which it then hands out with the full TTL.
		count := func() (int, error) {
			r, err := resolve(addr, "_calc._tcp."+zone, dns.TypeSRV)
			if err != nil {
				return 0, err
			}
			return len(srvs(r)), nil
		}
		fresh := func(want int) {
			waitFor(t, what+": a freshly cached answer", 3*ttl, func() error {
				r, err := resolve(addr, "_calc._tcp."+zone, dns.TypeSRV)
				if err != nil {
					return err
				}
				if s := srvs(r); len(s) != want || s[0].Hdr.Ttl != uint32(ttl/time.Second) {
					return fmt.Errorf("%d records, TTL %v", len(s), r.Answer)
				}
				return nil
			})
		}
		fresh(1)
		calc2 := sp.register(t, "calc", instanceID("calc", 2), "10.1.0.2", 8082)
		added := waitFor(t, what+": added instance shows", propagationBound, func() error {
			if n, err := count(); err != nil || n != 2 {
				return fmt.Errorf("%d instances (%v)", n, err)
			}
			return nil
		})
		fresh(2)
		sp.deregister(t, calc1)
		sp.deregister(t, calc2)
		gone := waitFor(t, what+": removed service is gone", propagationBound, func() error {
			r, err := resolve(addr, "_calc._tcp."+zone, dns.TypeSRV)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeNameError {
				return fmt.Errorf("%s with %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
			}
			return nil
		})
		t.Logf("%s (TTL %s): an added instance showed after %s, a removed service after %s", what, ttl, added.Round(time.Millisecond), gone.Round(time.Millisecond))
	})
}
