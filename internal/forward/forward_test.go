package forward_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/forward"
	"github.com/signpost-dns/signpost/internal/metricstest"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

const zone = "servicediscovery.internal."

// upstream is a fake upstream resolver on loopback: www.example.test has
// one address, big.example.test sixty, anything else is NXDOMAIN; with
// silent set it never answers.
type upstream struct {
	addr    string
	queries atomic.Int64
	silent  atomic.Bool
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		if u.silent.Load() {
			return
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		switch strings.ToLower(req.Question[0].Name) {
		case "www.example.test.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		case "big.example.test.":
			for i := range 60 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i+1))})
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			m.Truncate(dns.MinMsgSize)
			if o := req.IsEdns0(); o != nil {
				m.Truncate(int(o.UDPSize()))
			}
		}
		_ = w.WriteMsg(m)
	})
	u.addr = serve(t, h)
	return u
}

// serve answers with h on a free loopback port, UDP and TCP, until the
// test ends, and returns the address.
func serve(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, l := listenBoth(t)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// start runs a signpost server with its resolver for containers on a
// loopback port, with calc registered, and returns the resolver's address.
// listenBoth binds UDP and TCP on one free loopback port.
func listenBoth(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		_ = pc.Close()
	}
	t.Fatal("no loopback port free for UDP and TCP")
	return nil, nil
}

func start(t *testing.T, rc forward.Config) string {
	t.Helper()
	return startServer(t, rc).ResolverAddr()
}

// startServer is start, returning the server.
func startServer(t *testing.T, rc forward.Config) *signposttest.Server {
	t.Helper()
	rc.Addr = "127.0.0.1:0"
	srv := signposttest.Start(t, server.Config{DNS: dnsserver.Config{FailOpen: true}, Resolver: rc})
	api := srv.Client(t)
	in := registry.Instance{ID: "calc-1", Service: "calc", Address: netip.MustParseAddr("10.0.0.5"), Port: 8081}
	if _, err := api.Register(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	return srv
}

func ask(t *testing.T, addr, netw, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second, UDPSize: edns}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], netw, err)
	}
	return r
}

func TestZoneForEveryoneAndRecursionForAllowed(t *testing.T) {
	up := startUpstream(t)
	addr := start(t, forward.Config{Upstreams: []string{up.addr}})
	for _, netw := range []string{"udp", "tcp"} {
		r := ask(t, addr, netw, "calc."+zone, dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.5" || !r.Authoritative {
			t.Errorf("%s: calc A through the resolver = %v, want signpost's own answer", netw, r)
		}
		r = ask(t, addr, netw, "WWW.example.test.", dns.TypeA, 1232)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" || !r.RecursionAvailable {
			t.Errorf("%s: www.example.test A = %v, want the upstream's answer", netw, r)
		}
		if r.Question[0].Name != "WWW.example.test." {
			t.Errorf("%s: question not echoed as asked: %v", netw, r.Question)
		}
		if r := ask(t, addr, netw, "nothing.example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError || r.IsEdns0() != nil {
			t.Errorf("%s: nothing.example.test = %v, want NXDOMAIN without OPT (the client sent none)", netw, r)
		}
	}
	if up.queries.Load() == 0 {
		t.Error("the upstream was never asked")
	}
}

func TestRefusedOutsideAllowedNetworks(t *testing.T) {
	up := startUpstream(t)
	srv := startServer(t, forward.Config{Upstreams: []string{up.addr}, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	addr := srv.ResolverAddr()
	for _, netw := range []string{"udp", "tcp"} {
		if r := ask(t, addr, netw, "www.example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || r.RecursionAvailable {
			t.Errorf("%s: a client outside --allow-recursion got %v, want REFUSED", netw, r)
		}
		if r := ask(t, addr, netw, "calc."+zone, dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s: the zone is for everyone, got %v", netw, r)
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("the upstream was asked %d times for a refused client", n)
	}
	if n := metricstest.Counter(t, srv.Registry(), "signpost_resolver_queries_total", "result", "refused"); n != 2 {
		t.Errorf("signpost_resolver_queries_total{result=refused} = %v, want 2", n)
	}
	if n := metricstest.Counter(t, srv.Registry(), "signpost_resolver_queries_total", "result", "zone"); n != 2 {
		t.Errorf("signpost_resolver_queries_total{result=zone} = %v, want 2", n)
	}
}

func TestZoneAnswersAsSignpostDoes(t *testing.T) {
	srv := startServer(t, forward.Config{Upstreams: []string{startUpstream(t).addr}})
	api := srv.Client(t)
	for i := range 40 {
		in := registry.Instance{ID: fmt.Sprintf("big-%02d", i), Service: "big", Address: netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), Port: 9000}
		if _, err := api.Register(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []uint16{0, 1232} {
		direct := ask(t, srv.DNSAddr(), "udp", "_big._tcp."+zone, dns.TypeSRV, size)
		via := ask(t, srv.ResolverAddr(), "udp", "_big._tcp."+zone, dns.TypeSRV, size)
		if via.Truncated != direct.Truncated || len(via.Answer) != len(direct.Answer) || via.Rcode != direct.Rcode {
			t.Errorf("bufsize %d over UDP: through the resolver TC=%v with %d records, signpost itself TC=%v with %d", size, via.Truncated, len(via.Answer), direct.Truncated, len(direct.Answer))
		}
	}
	if r := ask(t, srv.ResolverAddr(), "tcp", "_big._tcp."+zone, dns.TypeSRV, 0); r.Truncated || len(r.Answer) != 40 {
		t.Errorf("over TCP through the resolver: TC=%v with %d records, want all 40", r.Truncated, len(r.Answer))
	}
}

func TestTruncatedForUDPWholeOverTCP(t *testing.T) {
	up := startUpstream(t)
	addr := start(t, forward.Config{Upstreams: []string{up.addr}})
	r := ask(t, addr, "udp", "big.example.test.", dns.TypeA, 0)
	r.Compress = true // as it came on the wire
	if !r.Truncated || r.Len() > dns.MinMsgSize {
		t.Errorf("UDP without EDNS0: TC=%v, %d bytes, want TC within 512", r.Truncated, r.Len())
	}
	if r := ask(t, addr, "tcp", "big.example.test.", dns.TypeA, 0); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP: TC=%v with %d records, want all 60", r.Truncated, len(r.Answer))
	}
}

func TestNextUpstreamWhenOneFails(t *testing.T) {
	down := startUpstream(t)
	down.silent.Store(true)
	refusing := startRefusing(t)
	up := startUpstream(t)
	addr := start(t, forward.Config{Upstreams: []string{down.addr, refusing, up.addr}, Timeout: 300 * time.Millisecond})
	if r := ask(t, addr, "udp", "www.example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("with the first upstreams silent and refusing: %v, want the third's answer", r)
	}
}

// startRefusing runs an upstream that answers REFUSED to everything.
func startRefusing(t *testing.T) string {
	t.Helper()
	return serve(t, dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
		_ = w.WriteMsg(m)
	}))
}

func TestUpstreamDownIsServfail(t *testing.T) {
	up := startUpstream(t)
	up.silent.Store(true)
	addr := start(t, forward.Config{Upstreams: []string{up.addr}, Timeout: 300 * time.Millisecond})
	if r := ask(t, addr, "udp", "www.example.test.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("with no upstream answering: %v, want SERVFAIL", r)
	}
	// The zone does not depend on upstreams.
	if r := ask(t, addr, "udp", "calc."+zone, dns.TypeA, 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("calc with the upstream down: %v", r)
	}
}

func TestInflightIsBounded(t *testing.T) {
	up := startUpstream(t)
	up.silent.Store(true)
	addr := start(t, forward.Config{Upstreams: []string{up.addr}, Timeout: 2 * time.Second, MaxInflight: 2})
	var wg sync.WaitGroup
	var servfail atomic.Int64
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("q%d.example.test.", i), dns.TypeA)
			r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
			if err == nil && r.Rcode == dns.RcodeServerFailure {
				servfail.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := up.queries.Load(); n > 2 {
		t.Errorf("the upstream got %d queries at once, want at most MaxInflight=2", n)
	}
	if n := servfail.Load(); n != 10 {
		t.Errorf("%d of 10 queries got SERVFAIL, want all", n)
	}
}

type zoneOnly struct{}

func (zoneOnly) Zone() string                    { return zone }
func (zoneOnly) Respond(_ []byte, _ bool) []byte { return nil }

func TestConfigErrors(t *testing.T) {
	pc, l := listenBoth(t)
	own := pc.LocalAddr().String()
	_, _ = pc.Close(), l.Close()
	if _, err := forward.New(forward.Config{Addr: own, Upstreams: []string{own}}, zoneOnly{}); err == nil || !strings.Contains(err.Error(), "itself") {
		t.Errorf("upstream = own address: %v, want an error about the loop", err)
	}
	if _, err := forward.New(forward.Config{Addr: "127.0.0.1:0", Upstreams: []string{"no-port"}}, zoneOnly{}); err == nil || !strings.Contains(err.Error(), "no-port") {
		t.Errorf("bad upstream: %v, want an error naming it", err)
	}
	if _, err := forward.New(forward.Config{Addr: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:53"}, Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, zoneOnly{}); err == nil || !strings.Contains(err.Error(), "open resolver") {
		t.Errorf("allow 0.0.0.0/0: %v, want a refusal to be an open resolver", err)
	}
	if _, err := forward.New(forward.Config{Addr: "127.0.0.1:0", ResolvConf: "/nonexistent/resolv.conf"}, zoneOnly{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/resolv.conf") {
		t.Errorf("missing resolv.conf: %v, want an error naming it", err)
	}
}

func TestDefaultAllowHasLoopback(t *testing.T) {
	got := forward.DefaultAllow()
	for _, a := range []string{"127.0.0.1", "::1"} {
		ok := false
		for _, p := range got {
			ok = ok || p.Contains(netip.MustParseAddr(a))
		}
		if !ok {
			t.Errorf("DefaultAllow() = %v lacks %s", got, a)
		}
	}
	for _, p := range got {
		if p.Bits() == 0 || p.Addr().IsLinkLocalUnicast() {
			t.Errorf("DefaultAllow() = %v allows everyone, or every link-local address", got)
		}
	}
}

// TestNoLoopThroughAWildcardAddress: listening on every address, the
// resolver is its own upstream at any local address with its port
// (resolv.conf saying nameserver 127.0.0.1 on a host that points itself
// at the resolver): each forwarded query would come back to it.
func TestNoLoopThroughAWildcardAddress(t *testing.T) {
	pc, l := listenBoth(t)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	_, _ = pc.Close(), l.Close()
	for _, up := range []string{"127.0.0.1", "127.0.0.53", "[::1]", "0.0.0.0"} {
		self := fmt.Sprintf("%s:%d", up, port)
		r, err := forward.New(forward.Config{Addr: fmt.Sprintf("0.0.0.0:%d", port), Upstreams: []string{self}}, zoneOnly{})
		if err == nil {
			_ = r.Close()
			t.Errorf("listening on 0.0.0.0:%d with upstream %s: no error, want one about the loop", port, self)
		} else if !strings.Contains(err.Error(), "itself") {
			t.Errorf("upstream %s: %v, want an error about the loop", self, err)
		}
	}
	// Another port of the same host is another server.
	r, err := forward.New(forward.Config{Addr: fmt.Sprintf("0.0.0.0:%d", port), Upstreams: []string{fmt.Sprintf("127.0.0.1:%d", port+1)}}, zoneOnly{})
	if err != nil {
		t.Fatalf("upstream on another port: %v", err)
	}
	_ = r.Close()
}

// TestTCPShareOfOneClient: one client holding every TCP connection it
// can (each kept busy, one query at a time) does not lock another client
// out of TCP, which it needs for truncated answers.
func TestTCPShareOfOneClient(t *testing.T) {
	addr := start(t, forward.Config{Upstreams: []string{startUpstream(t).addr}, MaxTCPConns: 4, MaxTCPConnsPerClient: 2})
	held := 0
	for range 4 {
		co, err := dns.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = co.Close() })
		m := new(dns.Msg)
		m.SetQuestion("calc."+zone, dns.TypeA)
		_ = co.SetDeadline(time.Now().Add(2 * time.Second))
		if err := co.WriteMsg(m); err == nil {
			if r, err := co.ReadMsg(); err == nil && r.Rcode == dns.RcodeSuccess {
				held++
			}
		}
	}
	if held != 2 {
		t.Errorf("one client got %d TCP connections answered, want its share of 2", held)
	}
	// Another client (127.0.0.2) still gets in.
	c := &dns.Client{Net: "tcp", Timeout: 3 * time.Second, Dialer: &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
	m := new(dns.Msg)
	m.SetQuestion("calc."+zone, dns.TypeA)
	if r, _, err := c.Exchange(m, addr); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("another client over TCP while the first holds its share: %v %v", r, err)
	}
}
