// Package forward is signpost's resolver for containers: a DNS listener
// on an address containers can use as their only name server (docker run
// --dns, or a user network's embedded DNS forwarding to it). It answers
// the signpost zone for everyone, exactly as signpost's own listener
// does, and forwards every other name to upstream resolvers (the host's
// resolv.conf by default), but only for clients in the allowed networks
// (loopback and the host's Docker bridge networks by default): everyone
// else gets REFUSED, so that it is never an open resolver. It is off
// unless an address is configured, as Consul's recursors are.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
)

// Defaults of Config.
const (
	DefaultResolvConf  = "/etc/resolv.conf"
	DefaultTimeout     = 2 * time.Second
	DefaultMaxInflight = 256
	DefaultMaxTCPConns = 256
	// DefaultMaxTCPConnsPerClient is each client's share of the TCP
	// connections.
	DefaultMaxTCPConnsPerClient = 32
)

// upstreamUDPSize is the EDNS0 size asked of upstreams (DNS flag day 2020).
const upstreamUDPSize = 1232

// Zone answers the signpost zone: *dnsserver.Server.
type Zone interface {
	// Zone is the zone's name, fully qualified.
	Zone() string
	// Respond answers one packed query; nil means drop.
	Respond(req []byte, tcp bool) []byte
}

// Config is the resolver's configuration, plain data. Zero values take
// the defaults named on each field.
type Config struct {
	// Addr is the address to listen on, UDP and TCP, such as
	// "172.17.0.1:53" (docker0's address). Empty means off.
	Addr string
	// Upstreams are the resolvers ("host:port") other names go to, tried
	// in order; default: the name servers of ResolvConf.
	Upstreams []string
	// ResolvConf is read for Upstreams when none are given (default
	// /etc/resolv.conf).
	ResolvConf string
	// Allow are the networks whose clients may resolve names outside the
	// zone; default: DefaultAllow (loopback and the host's Docker bridge
	// networks, looked up again when an unknown client asks).
	Allow []netip.Prefix
	// Timeout bounds each exchange with an upstream (default 2s).
	Timeout time.Duration
	// MaxInflight caps queries being forwarded at once; past it a query
	// gets SERVFAIL at once (default 256).
	MaxInflight int
	// MaxTCPConns caps open TCP connections; past it new ones wait in the
	// kernel's backlog (default 256).
	MaxTCPConns int
	// MaxTCPConnsPerClient is each client's share of MaxTCPConns (an
	// IPv4 address, or an IPv6 /64): past it, its new connections are
	// closed at once, so that one client cannot hold every connection
	// (default DefaultMaxTCPConnsPerClient).
	MaxTCPConnsPerClient int
	// Log gets the resolver's logs (default slog.Default()).
	Log *slog.Logger
	// Registerer gets the resolver's metrics (default: none kept).
	Registerer prometheus.Registerer
}

// Resolver is the listening resolver for containers.
type Resolver struct {
	cfg      Config
	zone     Zone
	zoneName string
	allow    *allowList
	inflight chan struct{}
	warned   atomic.Int64 // unix time of the last overload log
	metrics  *metrics
	log      *slog.Logger

	udp net.PacketConn
	tcp net.Listener

	mu      sync.Mutex
	servers []*dns.Server
	closed  bool

	// done ends with Close: exchanges with upstreams in flight stop then.
	done     context.Context
	closeAll context.CancelFunc
}

// New binds cfg.Addr (so that Addr is known before Serve) and returns a
// resolver answering zone there.
func New(cfg Config, zone Zone) (*Resolver, error) {
	if cfg.Addr == "" {
		return nil, errors.New("resolver: no listen address")
	}
	if zone == nil {
		return nil, errors.New("resolver: no zone")
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.MaxTCPConnsPerClient <= 0 {
		cfg.MaxTCPConnsPerClient = DefaultMaxTCPConnsPerClient
	}
	cfg.MaxTCPConnsPerClient = min(cfg.MaxTCPConnsPerClient, cfg.MaxTCPConns)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Resolver{
		cfg:      cfg,
		zone:     zone,
		zoneName: dns.CanonicalName(zone.Zone()),
		inflight: make(chan struct{}, cfg.MaxInflight),
		log:      cfg.Log,
	}
	r.done, r.closeAll = context.WithCancel(context.Background())
	for _, p := range cfg.Allow {
		if !p.IsValid() || p.Bits() == 0 {
			return nil, fmt.Errorf("resolver: allowed network %q: would let anyone use signpost as a resolver (an open resolver); name the networks of your clients", p)
		}
	}
	if len(cfg.Allow) > 0 {
		r.allow = fixedAllow(cfg.Allow)
	} else {
		r.allow = hostAllow()
	}
	var err error
	if r.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	if err := r.listen(); err != nil {
		return nil, err
	}
	bound := r.Addr()
	if len(r.cfg.Upstreams) == 0 {
		if r.cfg.Upstreams, err = ReadResolvConf(cfg.ResolvConf); err != nil {
			_ = r.Close()
			return nil, err
		}
	}
	// Never forward to ourselves: a loop that would eat every slot.
	r.cfg.Upstreams = slices.DeleteFunc(slices.Clone(r.cfg.Upstreams), func(u string) bool { return sameAddr(u, bound) })
	if len(r.cfg.Upstreams) == 0 {
		_ = r.Close()
		return nil, fmt.Errorf("resolver: no upstream but itself (%s): set --recursor", bound)
	}
	for _, u := range r.cfg.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("resolver: upstream %q: want host:port: %w", u, err)
		}
	}
	return r, nil
}

// listen binds UDP and TCP on the same port; with port 0, another port
// when the first one is free for UDP only.
func (r *Resolver) listen() error {
	anyPort := strings.HasSuffix(r.cfg.Addr, ":0")
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", r.cfg.Addr)
		if err != nil {
			return fmt.Errorf("resolver: listen on %q (udp): %w", r.cfg.Addr, err)
		}
		bound := udp.LocalAddr().String()
		tcp, err := net.Listen("tcp", bound)
		if err != nil {
			_ = udp.Close()
			if anyPort && attempt < 10 {
				continue
			}
			return fmt.Errorf("resolver: listen on %q (tcp): %w", bound, err)
		}
		r.udp, r.tcp = udp, tcp
		return nil
	}
}

// Addr is the address the resolver answers on.
func (r *Resolver) Addr() string { return r.udp.LocalAddr().String() }

// Upstreams are the resolvers other names are forwarded to.
func (r *Resolver) Upstreams() []string { return slices.Clone(r.cfg.Upstreams) }

// Serve answers until ctx is done or Close is called.
func (r *Resolver) Serve(ctx context.Context) error {
	h := dns.HandlerFunc(r.serveDNS)
	udp := &dns.Server{PacketConn: r.udp, Handler: h}
	tcpl := newShareListener(netutil.LimitListener(r.tcp, r.cfg.MaxTCPConns), r.cfg.MaxTCPConnsPerClient, r.metrics.tcpShare.Inc)
	tcp := &dns.Server{Listener: tcpl, Handler: h,
		ReadTimeout: r.cfg.Timeout, WriteTimeout: r.cfg.Timeout, IdleTimeout: func() time.Duration { return 10 * time.Second },
		MaxTCPQueries: 128}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("resolver closed")
	}
	r.servers = []*dns.Server{udp, tcp}
	r.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = r.Close() })
	defer stop()
	r.log.Info("resolver for containers listening", "addr", r.Addr(), "zone", r.zoneName, "upstreams", r.cfg.Upstreams, "allow", r.allow.String())
	errc := make(chan error, 2)
	for _, s := range r.servers {
		go func() { errc <- s.ActivateAndServe() }()
	}
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil && !r.isClosed() {
			first = err
			_ = r.Close()
		}
	}
	return first
}

func (r *Resolver) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Close stops serving.
func (r *Resolver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	servers := r.servers
	r.mu.Unlock()
	r.closeAll()
	for _, s := range servers {
		_ = s.Shutdown()
	}
	return errors.Join(r.udp.Close(), r.tcp.Close())
}

// serveDNS answers one query: the zone in process, anything else from an
// upstream for an allowed client.
func (r *Resolver) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		r.reply(w, req, dns.RcodeNotImplemented)
		return
	}
	q := req.Question[0]
	if dns.IsSubDomain(r.zoneName, dns.CanonicalName(q.Name)) {
		packed, err := req.Pack()
		if err != nil {
			r.reply(w, req, dns.RcodeFormatError)
			return
		}
		r.metrics.zone.Inc()
		if resp := r.zone.Respond(packed, tcp); resp != nil {
			_, _ = w.Write(resp)
		}
		return
	}
	client := addrOf(w.RemoteAddr())
	if !r.allow.contains(client) {
		r.log.Debug("resolver: refused a name outside the zone", "client", client, "name", q.Name)
		r.metrics.refused.Inc()
		r.reply(w, req, dns.RcodeRefused)
		return
	}
	select {
	case r.inflight <- struct{}{}:
		r.metrics.inflight.Inc()
		defer func() { <-r.inflight; r.metrics.inflight.Dec() }()
	default:
		r.metrics.overloaded.Inc()
		if now := time.Now().Unix(); r.warned.Swap(now) < now-10 { // at most one log line per 10 s
			r.log.Warn("resolver: too many queries being forwarded; answering SERVFAIL", "max_inflight", r.cfg.MaxInflight, "name", q.Name)
		}
		r.reply(w, req, dns.RcodeServerFailure)
		return
	}
	resp := r.forward(req)
	if resp == nil {
		r.metrics.failed.Inc()
		r.reply(w, req, dns.RcodeServerFailure)
		return
	}
	r.metrics.forwarded.Inc()
	if !tcp {
		resp.Compress = true
		resp.Truncate(clientUDPSize(req))
	}
	_ = w.WriteMsg(resp)
}

// forward asks each upstream in turn and returns the first answer that
// is neither SERVFAIL nor REFUSED (or else the last answer), made the
// answer to req; nil when none answers.
func (r *Resolver) forward(req *dns.Msg) *dns.Msg {
	m := req.Copy()
	m.Id = dns.Id() // an ID of our own: the client's could be guessed
	m.RecursionDesired = true
	opt := m.IsEdns0()
	if opt == nil {
		m.SetEdns0(upstreamUDPSize, false)
	} else {
		opt.SetUDPSize(upstreamUDPSize)
	}
	var last *dns.Msg
	for _, u := range r.cfg.Upstreams {
		ctx, cancel := context.WithTimeout(r.done, r.cfg.Timeout)
		c := &dns.Client{Net: "udp", UDPSize: upstreamUDPSize, Timeout: r.cfg.Timeout}
		in, _, err := c.ExchangeContext(ctx, m, u)
		if err == nil && in.Truncated {
			c.Net = "tcp"
			in, _, err = c.ExchangeContext(ctx, m, u)
		}
		cancel()
		if err != nil {
			r.log.Debug("resolver: upstream did not answer", "upstream", u, "name", req.Question[0].Name, "err", err)
			continue
		}
		in.Id = req.Id
		in.Question = req.Question // the client's spelling
		if req.IsEdns0() == nil {
			in.Extra = slices.DeleteFunc(in.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
		}
		if in.Rcode != dns.RcodeServerFailure && in.Rcode != dns.RcodeRefused {
			return in
		}
		r.log.Debug("resolver: upstream failed the query; trying the next", "upstream", u, "name", req.Question[0].Name, "rcode", dns.RcodeToString[in.Rcode])
		last = in
	}
	return last
}

// reply answers req with an empty answer and rcode.
func (r *Resolver) reply(w dns.ResponseWriter, req *dns.Msg, rcode int) {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = rcode != dns.RcodeRefused
	_ = w.WriteMsg(m)
}

// clientUDPSize is the largest UDP answer the client takes: 512, or its
// EDNS0 size up to upstreamUDPSize.
func clientUDPSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(min(max(opt.UDPSize(), dns.MinMsgSize), upstreamUDPSize))
	}
	return dns.MinMsgSize
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// sameAddr reports whether upstream a reaches the socket bound at b: the
// same address and port, or, when either is a wildcard (0.0.0.0, ::),
// the other is an address of this host (loopback or an interface's) with
// the same port. Listening on 0.0.0.0:53, an upstream 127.0.0.1:53 from
// resolv.conf is the resolver itself.
func sameAddr(a, b string) bool {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	if errA != nil || errB != nil || pa.Port() != pb.Port() {
		return false
	}
	x, y := pa.Addr().Unmap(), pb.Addr().Unmap()
	switch {
	case x == y:
		return true
	case x.IsUnspecified():
		return isLocal(y)
	case y.IsUnspecified():
		return isLocal(x)
	}
	return false
}

// isLocal reports whether a is an address of this host.
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.WithZone("") {
				return true
			}
		}
	}
	return false
}

// ReadResolvConf returns the name servers of a resolv.conf file as
// host:port addresses.
func ReadResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolver: upstreams from %s: %w", path, err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("resolver: %s names no name server: set --recursor", path)
	}
	return out, nil
}
