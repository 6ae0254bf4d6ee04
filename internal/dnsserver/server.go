// Package dnsserver is signpost's authoritative DNS server for one zone. It
// answers from the registry's in-memory index; every answer is packed once
// per name and type when first asked for, kept until that service changes,
// and handed out in rotating order with only the ID and question patched
// per query.
package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Config is the DNS server's configuration. Zero values take the defaults
// named on each field.
type Config struct {
	// Zone the server is authoritative for (default servicediscovery.internal).
	Zone string
	// TTL of positive answers in seconds (default 5).
	TTL uint32
	// NegTTL is the SOA minimum and negative-answer TTL in seconds (default 5).
	NegTTL uint32
	// NSName is the label of the zone's name server host (default "ns").
	NSName string
	// NSAddrs are the addresses published for NSName.Zone.
	NSAddrs []netip.Addr
	// FailOpen answers with every critical instance of a service when none
	// passes (as Route 53 does). Defaults to false in the struct; the
	// command line turns it on by default.
	FailOpen bool
	// MaxUDPSize is the largest UDP response sent to an EDNS0 client
	// (default 1232, the DNS flag day 2020 value).
	MaxUDPSize int
	// TCPIdleTimeout closes idle TCP connections (default 10s).
	TCPIdleTimeout time.Duration
	// UDPBatch is how many datagrams one system call reads or writes
	// (recvmmsg/sendmmsg; default 32, 1 turns batching off).
	UDPBatch int
	// MaxTCPConns caps open TCP connections; past it new ones are closed
	// at once (default 1000).
	MaxTCPConns int
	// Log gets the server's logs (default slog.Default()).
	Log *slog.Logger
	// Registerer gets the server's metrics (default: none kept).
	Registerer prometheus.Registerer
}

// Server answers DNS queries for one zone from a registry index.
type Server struct {
	cfg      Config
	index    *registry.Index
	names    names
	zoneWire []byte
	zone     zone
	metrics  *metrics
	log      *slog.Logger

	builder builder

	serial                       atomic.Uint32
	soaTail                      atomic.Pointer[[]byte]
	apexSOA, apexNS, nsA, nsAAAA slot

	mu       sync.Mutex
	closed   bool
	conns    []io.Closer
	tcpConns map[*net.TCPConn]struct{}
	wg       sync.WaitGroup
}

// New returns a server for cfg that answers from ix. It registers itself as
// ix's change hook, so call it before ix.Run.
func New(cfg Config, ix *registry.Index) (*Server, error) {
	if cfg.Zone == "" {
		cfg.Zone = "servicediscovery.internal"
	}
	cfg.Zone = dns.CanonicalName(cfg.Zone)
	if _, ok := dns.IsDomainName(cfg.Zone); !ok || cfg.Zone == "." {
		return nil, fmt.Errorf("zone %q: not a domain name", cfg.Zone)
	}
	if cfg.TTL == 0 {
		cfg.TTL = 5
	}
	if cfg.NegTTL == 0 {
		cfg.NegTTL = 5
	}
	if cfg.NSName == "" {
		cfg.NSName = "ns"
	}
	cfg.NSName = strings.ToLower(cfg.NSName)
	if err := registry.CheckLabel(cfg.NSName); err != nil {
		return nil, fmt.Errorf("name server label %q: %w", cfg.NSName, err)
	}
	if cfg.MaxUDPSize == 0 {
		cfg.MaxUDPSize = 1232
	}
	if cfg.MaxUDPSize < 512 || cfg.MaxUDPSize > 65535-optLen {
		return nil, fmt.Errorf("max UDP size %d: want 512-65000", cfg.MaxUDPSize)
	}
	if cfg.TCPIdleTimeout <= 0 {
		cfg.TCPIdleTimeout = 10 * time.Second
	}
	if cfg.UDPBatch <= 0 {
		cfg.UDPBatch = defaultUDPBatch
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = 1000
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	wire := make([]byte, 256)
	n, err := dns.PackDomainName(cfg.Zone, wire, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("zone %q: %w", cfg.Zone, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		index:    ix,
		names:    names{zone: cfg.Zone},
		zoneWire: wire[:n],
		zone:     zone{services: map[string]*service{}},
		metrics:  m,
		log:      cfg.Log,
		tcpConns: map[*net.TCPConn]struct{}{},
	}
	s.zone.browse.Store(emptySet)
	s.setSerial(uint32(ix.Rev()))
	ix.OnChange(s.rebuild)
	if names := ix.ServiceNames(); len(names) > 0 {
		s.rebuild(names)
	}
	return s, nil
}

// TTL returns the TTL of positive answers, in seconds.
func (s *Server) TTL() uint32 { return s.cfg.TTL }

// Zone returns the zone the server answers for, as a fully qualified name.
func (s *Server) Zone() string { return s.cfg.Zone }

// Serve answers on l until ctx is done or Close is called.
func (s *Server) Serve(ctx context.Context, l Listeners) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("dns server closed")
	}
	s.conns = append(s.conns, l)
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	s.log.Info("dns listening", "zone", s.cfg.Zone, "addr", l.Addr(), "udp_sockets", len(l.UDP))
	for _, uc := range l.UDP {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveUDP(uc)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveTCP(l.TCP)
	}()
	s.wg.Wait()
	return nil
}

// Close stops serving and waits for the workers.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := s.conns
	for c := range s.tcpConns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

func (s *Server) serveTCP(tl *net.TCPListener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var delay time.Duration
	for {
		c, err := tl.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off, as net/http does.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			s.log.Warn("dns tcp accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(c)
		}()
	}
}

// serveConn answers queries on one TCP connection (RFC 7766: pipelined
// queries are answered in order) until it idles out or the server closes.
func (s *Server) serveConn(c *net.TCPConn) {
	defer c.Close()
	s.mu.Lock()
	if s.closed || len(s.tcpConns) >= s.cfg.MaxTCPConns {
		s.mu.Unlock()
		s.metrics.dropped.Inc()
		return
	}
	s.tcpConns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.tcpConns, c)
		s.mu.Unlock()
	}()
	req := make([]byte, 65535)
	out := make([]byte, 2+65536+optLen)
	var lenBuf [2]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, req[:n]); err != nil {
			return
		}
		resp := s.respond(req[:n], out[2:], true)
		if resp == nil {
			continue
		}
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := c.Write(out[:2+len(resp)]); err != nil {
			return
		}
	}
}

// ReservedServices returns the service names that cannot be registered in
// this zone, each with the reason: their names would collide with the
// zone's own.
func (s *Server) ReservedServices() map[string]string {
	return map[string]string{
		s.cfg.NSName: "the zone's name server is " + s.nsFQDN(),
		"dns-sd":     "_dns-sd._udp." + s.cfg.Zone + " holds DNS-SD browsing (RFC 6763)",
		"services":   "_services is DNS-SD's browsing label (RFC 6763)",
		"tcp":        "_tcp is a protocol label",
		"udp":        "_udp is a protocol label",
	}
}
