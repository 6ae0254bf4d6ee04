// Package server assembles a signpost server: a store, the in-memory index
// that follows it, the DNS server and the HTTP API. `signpost server` and
// `signpost up` run one; tests start one on random loopback ports.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/signpost-dns/signpost/internal/api"
	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/forward"
	"github.com/signpost-dns/signpost/internal/httpguard"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/staleness"
	"github.com/signpost-dns/signpost/internal/store/embedded"
	etcdstore "github.com/signpost-dns/signpost/internal/store/etcd"
	"github.com/signpost-dns/signpost/internal/ui"
	"github.com/signpost-dns/signpost/internal/zonexfr"
)

// Config is everything `signpost server` takes.
type Config struct {
	// DNSAddr is where DNS listens, UDP and TCP (default 127.0.0.1:8053).
	DNSAddr string
	// HTTPAddr is where the API listens (default 127.0.0.1:8080).
	HTTPAddr string
	// DataDir holds the embedded store (default ./signpost-data).
	DataDir string
	// TokenFile, when set, holds the bearer token every write needs.
	TokenFile string
	// ReadTokenFile, when set, holds a bearer token every read but
	// /healthz needs (the write token is accepted too). Reads are open by
	// default: DNS answers the same questions to anyone.
	ReadTokenFile string
	// AllowedHosts are the names, beside IP addresses, localhost and the
	// listen address, that clients may send as the Host header. The check
	// (against DNS rebinding) runs when there is no write token, or when
	// AllowedHosts is set.
	AllowedHosts []string
	// HTTPLimits bound what API clients may hold (zero fields: defaults).
	HTTPLimits httpguard.Limits
	// PprofAddr, when set, serves Go's net/http/pprof profiles there (a
	// loopback address: profiles show internals).
	PprofAddr string
	// UDPSockets is how many UDP sockets DNS reads (0: one per two cores).
	UDPSockets int
	// DNS is the DNS server's configuration.
	DNS dnsserver.Config
	// Xfr, when Xfr.Allow is set, serves the zone to secondaries (AXFR,
	// IXFR, NOTIFY; internal/zonexfr).
	Xfr zonexfr.Config
	// Resolver, when Resolver.Addr is set, also answers on that address
	// as the resolver of containers (internal/forward): the zone for
	// everyone, other names forwarded for allowed clients only.
	Resolver forward.Config
	// DefaultTTL is the node lease TTL when an agent names none.
	DefaultTTL time.Duration
	// StoreKind is "embedded" (default: bbolt in DataDir) or "etcd".
	StoreKind string
	// Etcd configures the etcd store when StoreKind is "etcd".
	Etcd etcdstore.Options
	// SkyDNS, with the etcd store, also keeps every serving instance in
	// the SkyDNS layout under /skydns/, for CoreDNS's etcd plugin.
	SkyDNS bool
	// AllowLinkLocal accepts registrations of link-local addresses
	// (169.254.0.0/16, fe80::/10), refused by default.
	AllowLinkLocal bool
	// Store, when set, is used as it is, whatever StoreKind says. The
	// server closes it on exit.
	Store registry.Store
	Log   *slog.Logger
	// HealthChecks are more checks /healthz reports, by name (see
	// api.Config.HealthChecks).
	HealthChecks map[string]func() error
	// StaleAfter is how long a remote store (etcd) may go without
	// answering before the server says it is stale and caps its DNS
	// TTLs at 1 s (default staleness.DefaultStaleAfter, 2 s).
	StaleAfter time.Duration
	// MaxStale is how long the server may be stale before it steps aside
	// (SERVFAIL for the zone) when a peer server is current (default
	// staleness.DefaultMaxStale, 5 s).
	MaxStale time.Duration
	// Advertise is the host (an address or a name) other servers and
	// clients reach this one at; with the etcd store it is announced
	// with the API and DNS ports. Default: the --http listen host, which
	// must then be a specific address (not 0.0.0.0 or ::).
	Advertise string
}

// Server is a running signpost server.
type Server struct {
	cfg   Config
	store registry.Store
	index *registry.Index
	dns   *dnsserver.Server
	xfr   *zonexfr.Transfers // nil when transfers are off
	fwd   *forward.Resolver
	api   *api.API
	stale *staleness.Monitor // nil for a local store
	self  etcdstore.ServerRecord
	mux   *http.ServeMux // the API, and the web UI under /ui/
	guard *httpguard.Guard
	log   *slog.Logger

	reg   *prometheus.Registry
	dnsl  dnsserver.Listeners
	http  net.Listener
	pprof net.Listener
}

// ReadToken reads a bearer token from path: the first line, trimmed.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file %q: %w", path, err)
	}
	lines := strings.Split(string(b), "\n")
	tok := strings.TrimSpace(lines[0])
	if tok == "" {
		for i, l := range lines[1:] {
			if strings.TrimSpace(l) != "" {
				return "", fmt.Errorf("token file %q: line 1 is empty and the token is on line %d: put it on the first line", path, i+2)
			}
		}
		return "", fmt.Errorf("token file %q: empty", path)
	}
	return tok, nil
}

// MinTokenLen is the shortest token that is not warned about.
const MinTokenLen = 16

// TokenFileWarnings says what is weak about a token file and its token:
// a token shorter than MinTokenLen, a file that others than its owner may
// read, text after the first line (ignored).
func TokenFileWarnings(path, token string) []string {
	var out []string
	if len(token) < MinTokenLen {
		out = append(out, fmt.Sprintf("token in %q is %d bytes: use at least %d random bytes (e.g. openssl rand -hex 32)", path, len(token), MinTokenLen))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		out = append(out, fmt.Sprintf("token file %q has mode %v: group and others can read it; chmod 600 it", path, fi.Mode().Perm()))
	}
	if b, err := os.ReadFile(path); err == nil {
		if _, rest, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(rest) != "" {
			out = append(out, fmt.Sprintf("token file %q: only the first line is the token; the lines after it are ignored", path))
		}
	}
	return out
}

// readTokenFile reads a token file and logs its weaknesses.
func readTokenFile(log *slog.Logger, path string) (string, error) {
	tok, err := ReadToken(path)
	if err != nil {
		return "", err
	}
	for _, w := range TokenFileWarnings(path, tok) {
		log.Warn(w)
	}
	return tok, nil
}

// isLoopback reports whether a listen address only takes local clients.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// New opens the store and binds every listener, so that the addresses are
// known (and port 0 resolved) before Run.
func New(cfg Config) (_ *Server, err error) {
	if cfg.DNSAddr == "" {
		cfg.DNSAddr = "127.0.0.1:8053"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "signpost-data"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP address %q: want HOST:PORT: %w", cfg.HTTPAddr, err)
	}
	// The API's decoder reads no more than api.MaxBodyBytes, whatever
	// the guard in front lets in.
	for _, b := range []struct {
		flag string
		n    int64
	}{{"--max-instance-body", cfg.HTTPLimits.InstanceBody}, {"--max-node-set-body", cfg.HTTPLimits.NodeSetBody}} {
		if b.n > api.MaxBodyBytes {
			return nil, fmt.Errorf("%s %d: over the API's limit of %d bytes", b.flag, b.n, api.MaxBodyBytes)
		}
	}
	token, readToken := "", ""
	if cfg.ReadTokenFile != "" {
		if readToken, err = readTokenFile(cfg.Log, cfg.ReadTokenFile); err != nil {
			return nil, err
		}
	}
	if cfg.TokenFile != "" {
		if token, err = readTokenFile(cfg.Log, cfg.TokenFile); err != nil {
			return nil, err
		}
	} else if !isLoopback(cfg.HTTPAddr) {
		return nil, fmt.Errorf("refusing to take writes on %s without --token-file: anyone who reaches it could rewrite DNS; listen on loopback or set a token", cfg.HTTPAddr)
	}
	s := &Server{cfg: cfg, log: cfg.Log}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	s.store = cfg.Store
	switch {
	case s.store != nil:
	case cfg.StoreKind == "" || cfg.StoreKind == "embedded":
		st, err := embedded.Open(cfg.DataDir, embedded.Options{Log: cfg.Log})
		if err != nil {
			return nil, err
		}
		s.store = st
	case cfg.StoreKind == "etcd":
		if len(cfg.Etcd.Endpoints) == 0 {
			return nil, errors.New("etcd store: no endpoints (--etcd-endpoints)")
		}
		ecfg := cfg.Etcd
		ecfg.Log = cfg.Log
		st, err := etcdstore.Open(ecfg)
		if err != nil {
			return nil, err
		}
		s.store = st
	default:
		return nil, fmt.Errorf("store %q: want embedded or etcd", cfg.StoreKind)
	}
	if _, isEtcd := s.store.(*etcdstore.Store); cfg.SkyDNS && !isEtcd {
		return nil, errors.New("the SkyDNS mirror (--skydns) needs the etcd store (--store etcd)")
	}
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register process metrics: %w", err)
		}
	}
	s.reg = reg
	s.index = registry.NewIndex(cfg.Log)
	dcfg := cfg.DNS
	dcfg.Log = cfg.Log
	dcfg.Registerer = reg
	s.dnsl, err = dnsserver.Listen(cfg.DNSAddr, cfg.UDPSockets)
	if err != nil {
		return nil, err
	}
	if len(dcfg.NSAddrs) == 0 {
		if ap, perr := netip.ParseAddrPort(s.dnsl.Addr()); perr == nil && !ap.Addr().IsUnspecified() {
			dcfg.NSAddrs = []netip.Addr{ap.Addr().Unmap()}
		}
	}
	if s.dns, err = dnsserver.New(dcfg, s.index); err != nil {
		return nil, err
	}
	if cfg.Xfr.Enabled() {
		xcfg := cfg.Xfr
		xcfg.Log, xcfg.Registerer = cfg.Log, reg
		if xcfg.WriteTimeout == 0 {
			xcfg.WriteTimeout = dcfg.TCPIdleTimeout
		}
		if s.xfr, err = zonexfr.New(xcfg, s.dns); err != nil {
			return nil, err
		}
		s.dns.SetTransfers(s.xfr)
	} else if len(cfg.Xfr.Notify) > 0 {
		return nil, fmt.Errorf("NOTIFY to %s (--xfr-notify) needs the secondaries' addresses in --xfr-allow", cfg.Xfr.Notify[0])
	}
	if cfg.Resolver.Addr != "" {
		rcfg := cfg.Resolver
		rcfg.Log = cfg.Log
		rcfg.Registerer = reg
		if s.fwd, err = forward.New(rcfg, s.dns); err != nil {
			return nil, err
		}
	}
	// Writes are checked against the zone before they reach the store:
	// what is accepted can be served.
	names, err := registry.NewDNSNames(s.dns.Zone(), s.dns.ReservedServices())
	if err != nil {
		return nil, err
	}
	names.ReservedIDs = s.dns.ReservedIDs()
	names.AllowLinkLocal = cfg.AllowLinkLocal
	checks := cfg.HealthChecks
	var infos map[string]func() any
	if p, ok := s.store.(registry.Pinger); ok {
		if s.stale, err = s.newMonitor(p); err != nil {
			return nil, err
		}
		checks = maps.Clone(checks)
		if checks == nil {
			checks = map[string]func() error{}
		}
		checks["store_stale"] = s.stale.Check
		infos = map[string]func() any{"store_contact": func() any { return s.stale.Info() }}
	}
	s.api, err = api.New(api.Config{Store: names.Guard(s.store), Index: s.index, DefaultTTL: cfg.DefaultTTL, Registry: reg, Log: cfg.Log, HealthChecks: checks, HealthInfo: infos})
	if err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.mux.Handle("/", s.api)
	if err := ui.Register(s.mux, ui.Config{Zone: s.dns.Zone(), DNSAddr: s.DNSAddr(), TTL: time.Duration(s.dns.TTL()) * time.Second}); err != nil {
		return nil, err
	}
	lim := cfg.HTTPLimits
	nofile, ferr := httpguard.RaiseFileLimit()
	if ferr != nil {
		cfg.Log.Warn("cannot read or raise the open file limit", "err", ferr)
	}
	if lim.MaxConns <= 0 {
		lim.MaxConns = httpguard.ConnsForFileLimit(nofile)
	}
	s.guard, err = httpguard.New(httpguard.Config{
		Limits:     lim,
		WriteToken: token,
		ReadToken:  readToken,
		// The UI's files carry no registry data; its page asks for the
		// read token and sends it with every API read.
		OpenReads:    []string{"/", ui.Prefix},
		ListenAddr:   cfg.HTTPAddr,
		AllowedHosts: cfg.AllowedHosts,
		CheckHost:    token == "" || len(cfg.AllowedHosts) > 0,
		Classify:     api.Classify,
		StreamQuiet:  api.MaxWait,
		Registerer:   reg,
		Log:          cfg.Log,
	})
	if err != nil {
		return nil, err
	}
	cfg.Log.Debug("HTTP limits", "open_files", nofile, "max_conns", lim.MaxConns)
	if s.http, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("listen on HTTP address %q: %w", cfg.HTTPAddr, err)
	}
	if cfg.PprofAddr != "" {
		if !isLoopback(cfg.PprofAddr) {
			return nil, fmt.Errorf("pprof address %q: profiles show internals; listen on loopback", cfg.PprofAddr)
		}
		if s.pprof, err = net.Listen("tcp", cfg.PprofAddr); err != nil {
			return nil, fmt.Errorf("listen on pprof address %q: %w", cfg.PprofAddr, err)
		}
	}
	if _, isEtcd := s.store.(*etcdstore.Store); isEtcd {
		if s.self, err = s.advertise(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) closeAll() {
	_ = s.dnsl.Close()
	if s.fwd != nil {
		_ = s.fwd.Close()
	}
	if s.http != nil {
		_ = s.http.Close()
	}
	if s.pprof != nil {
		_ = s.pprof.Close()
	}
	if s.store != nil {
		_ = s.store.Close()
	}
}

// DNSAddr is the address DNS answers on.
func (s *Server) DNSAddr() string { return s.dnsl.Addr() }

// ResolverAddr is the address of the resolver for containers, or "" when
// it is off.
func (s *Server) ResolverAddr() string {
	if s.fwd == nil {
		return ""
	}
	return s.fwd.Addr()
}

// HTTPAddr is the address the API answers on.
func (s *Server) HTTPAddr() string { return s.http.Addr().String() }

// URL is the API's base URL.
func (s *Server) URL() string { return "http://" + s.HTTPAddr() }

// Index is the server's registry index.
func (s *Server) Index() *registry.Index { return s.index }

// Registry is the Prometheus registry behind /metrics, for components that
// run in the same process (the agent of `signpost up`).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Store is the server's store.
func (s *Server) Store() registry.Store { return s.store }

// Run serves until ctx is done, then shuts down and closes the store.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 6)
	go func() { errc <- s.index.Run(ctx, s.store) }()
	// Answer nothing until the registry is loaded: an empty zone would
	// tell clients that every service is gone.
	start := time.Now()
	for {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.index.WaitSynced(wctx)
		wcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			s.closeAll()
			return nil
		}
		s.log.Warn("still loading the registry from the store", "waited", time.Since(start).Round(time.Second), "err", err)
	}
	s.log.Info("registry loaded", "instances", s.index.Len(), "revision", s.index.Rev(), "took", time.Since(start).Round(time.Millisecond))
	// Loading a large registry leaves a lot of garbage (the decoded list,
	// the events applied from it): give it back to the OS now rather than
	// carry it as resident memory.
	debug.FreeOSMemory()
	go func() { errc <- s.dns.Serve(ctx, s.dnsl) }()
	if s.fwd != nil {
		go func() { errc <- s.fwd.Serve(ctx) }()
	}
	if s.xfr != nil {
		go func() { errc <- s.xfr.Run(ctx) }()
	}
	var announced chan struct{}
	if s.stale != nil {
		// The registry was just listed: that is a contact.
		s.stale.Contact(time.Now())
		go s.stale.Run(ctx)
	}
	if st, ok := s.store.(*etcdstore.Store); ok && s.self.ID != "" {
		announced = make(chan struct{})
		go func() {
			defer close(announced)
			st.Announce(ctx, s.self)
		}()
	}
	if st, ok := s.store.(*etcdstore.Store); ok && s.cfg.SkyDNS {
		go func() { _ = st.MirrorSkyDNS(ctx, s.dns.Zone(), s.dns.TTL()) }()
	}
	if s.pprof != nil {
		go func() {
			ps := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
			go func() { <-ctx.Done(); _ = ps.Close() }()
			s.log.Info("serving pprof", "addr", "http://"+s.pprof.Addr().String()+"/debug/pprof/")
			_ = ps.Serve(s.pprof)
		}()
	}
	var handler http.Handler = s.mux
	if s.stale != nil {
		handler = s.stale.Header(handler)
	}
	hs := s.guard.Server(s.guard.Handler(handler))
	// Long-lived watches end when the server does.
	hs.BaseContext = func(net.Listener) context.Context { return ctx }
	hl := s.guard.Listen(s.http, hs)
	go func() {
		err := hs.Serve(hl)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	where := "data_dir=" + s.cfg.DataDir
	if s.cfg.StoreKind == "etcd" {
		where = "etcd=" + strings.Join(s.cfg.Etcd.Endpoints, ",")
	}
	s.log.Info("signpost server running", "zone", s.dns.Zone(), "dns", s.DNSAddr(), "http", s.URL(), "ui", s.URL()+ui.Prefix, "store", where)
	var first error
	select {
	case <-ctx.Done():
		s.log.Info("signpost server shutting down", "why", context.Cause(ctx))
	case first = <-errc:
		s.log.Error("signpost server shutting down: a listener failed", "err", first)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	_ = s.dns.Close()
	if s.fwd != nil {
		_ = s.fwd.Close()
	}
	if announced != nil {
		<-announced // its lease revoked: peers forget this server now
	}
	if err := s.store.Close(); err != nil && first == nil {
		first = err
	}
	s.log.Info("signpost server stopped", "instances", s.index.Len(), "revision", s.index.Rev())
	return first
}

func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}
