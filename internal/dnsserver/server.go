// Package dnsserver is signpost's authoritative DNS server for one zone. It
// answers from the registry's in-memory index. Every answer is packed once
// per name and type and kept until its service changes: a service's lists
// (SRV, A, AAAA, PTR) as records that can follow one another in any order,
// so that a query copies as many whole records as fit, starting where the
// weighted rotation is; other answers as whole messages. Only the ID and
// the question are patched per query. Large services are packed by a
// background builder, off the packet path.
package dnsserver

import (
	"bytes"
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
	// MaxTCPConns caps open TCP connections (default 1000). A new
	// connection past it closes the connection idle the longest, or is
	// itself closed when none is idle.
	MaxTCPConns int
	// MaxTCPConnsPerClient is each client address's share of MaxTCPConns
	// (default 100): past it, the client's own connection idle the longest
	// is closed, so that one client cannot lock others out.
	MaxTCPConnsPerClient int
	// Locality orders (LocalityOrder) or narrows (LocalityPrefer) the
	// SRV, A and AAAA answers at a service's names (calc.Z, _calc._tcp.Z)
	// to the instances in the asker's zone; default off.
	Locality Locality
	// LocalityZones map askers' source addresses to zones, the longest
	// prefix winning; an instance is in the zone its metadata key "zone"
	// (registry.MetaZone) names. At most 256.
	LocalityZones []LocalityZone
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
	loc     *locality

	// ttl and negTTL are the TTLs packed into answers now: the
	// configured ones, or less while the store is stale (LimitTTL).
	ttl, negTTL atomic.Uint32
	// stepAside answers SERVFAIL for the zone on the server's own
	// listeners (SetStepAside).
	stepAside atomic.Bool
	// rebuildMu serializes repacking: the index's change hook and
	// LimitTTL.
	rebuildMu sync.Mutex

	serial                       atomic.Uint32
	transfers                    atomic.Pointer[Transfers]
	zoneHooks                    []func(serial uint32)
	soaTail                      atomic.Pointer[[]byte]
	apexSOA, apexNS, nsA, nsAAAA slot

	mu        sync.Mutex
	closed    bool
	conns     []io.Closer
	tcpConns  map[*tcpConn]struct{}
	perClient map[netip.Addr]int
	wg        sync.WaitGroup
}

// browseLabels is the wire length of _services._dns-sd._udp, the labels
// of the DNS-SD browsing name above the zone.
const browseLabels = 1 + len("_services") + 1 + len("_dns-sd") + 1 + len("_udp")

// tcpConn is one DNS-over-TCP connection and since when it has been idle.
type tcpConn struct {
	c      *net.TCPConn
	client netip.Addr
	// lastQuery is when the connection was accepted or its last query
	// arrived (Unix nanoseconds): the idle the longest is the one whose
	// last query is oldest. It is stamped on arrival, not after the
	// answer is written: a client that asks on a second connection once
	// the first has answered always stamps later, however the answering
	// goroutines are scheduled.
	lastQuery atomic.Int64
	// busy is set while a query is being answered.
	busy atomic.Bool
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
	if cfg.MaxTCPConnsPerClient <= 0 {
		cfg.MaxTCPConnsPerClient = 100
	}
	cfg.MaxTCPConnsPerClient = min(cfg.MaxTCPConnsPerClient, cfg.MaxTCPConns)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	wire := make([]byte, 256)
	n, err := dns.PackDomainName(cfg.Zone, wire, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("zone %q: %w", cfg.Zone, err)
	}
	loc, err := newLocality(cfg.Locality, cfg.LocalityZones)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		index:     ix,
		names:     names{zone: cfg.Zone},
		zoneWire:  wire[:n],
		zone:      zone{services: map[string]*service{}},
		metrics:   m,
		loc:       loc,
		log:       cfg.Log,
		tcpConns:  map[*tcpConn]struct{}{},
		perClient: map[netip.Addr]int{},
	}
	if n+browseLabels > registry.MaxName {
		s.log.Warn("DNS-SD browsing is unavailable: _services._dns-sd._udp under this zone would be over 255 bytes; services still resolve", "zone", cfg.Zone, "zone_bytes", n)
	}
	s.ttl.Store(cfg.TTL)
	s.negTTL.Store(cfg.NegTTL)
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
		conns = append(conns, c.c)
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

// clientKey is what shares a client's TCP connections: its IPv4 address,
// or its IPv6 /64 (one host's usual allocation, which it can fill with
// addresses at will).
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.WithZone("").Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// admit registers c, making room by closing the oldest idle connection of
// the same client when it is at its share, or the oldest idle of all when
// the server is full. It reports false when c must be closed instead.
func (s *Server) admit(c *tcpConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.perClient[c.client] >= s.cfg.MaxTCPConnsPerClient {
		if !s.evictLocked(c.client, true) {
			s.metrics.tcpClosed[tcpRefused].Inc()
			return false
		}
		s.metrics.tcpClosed[tcpClientShare].Inc()
	} else if len(s.tcpConns) >= s.cfg.MaxTCPConns {
		if !s.evictLocked(netip.Addr{}, false) {
			s.metrics.tcpClosed[tcpRefused].Inc()
			return false
		}
		s.metrics.tcpClosed[tcpServerFull].Inc()
	}
	s.tcpConns[c] = struct{}{}
	s.perClient[c.client]++
	return true
}

// evictLocked closes the connection idle the longest, of client when
// sameClient, else of all. It reports false when none is idle.
func (s *Server) evictLocked(client netip.Addr, sameClient bool) bool {
	var oldest *tcpConn
	var since int64
	for c := range s.tcpConns {
		if sameClient && c.client != client {
			continue
		}
		if t := c.lastQuery.Load(); !c.busy.Load() && (oldest == nil || t < since) {
			oldest, since = c, t
		}
	}
	if oldest == nil {
		return false
	}
	s.dropLocked(oldest)
	_ = oldest.c.Close()
	return true
}

func (s *Server) dropLocked(c *tcpConn) {
	if _, ok := s.tcpConns[c]; !ok {
		return
	}
	delete(s.tcpConns, c)
	if s.perClient[c.client]--; s.perClient[c.client] <= 0 {
		delete(s.perClient, c.client)
	}
}

// serveConn answers queries on one TCP connection (RFC 7766: pipelined
// queries are answered in order) until it idles out, is closed to make
// room, or the server closes.
func (s *Server) serveConn(nc *net.TCPConn) {
	defer nc.Close()
	c := &tcpConn{c: nc}
	var from netip.Addr
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		from = ap.Addr()
		c.client = clientKey(from)
	}
	c.lastQuery.Store(time.Now().UnixNano())
	if !s.admit(c) {
		return
	}
	defer func() {
		s.mu.Lock()
		s.dropLocked(c)
		s.mu.Unlock()
	}()
	// The query grows with the bytes that arrive (queries are small),
	// and the answer buffer is taken only to answer: an idle or half-sent
	// connection holds a few hundred bytes, not 128 KiB.
	var req bytes.Buffer
	var lenBuf [2]byte
	for {
		// Waiting for a query, even one half sent, counts as idle: such a
		// connection is the first to go when room is needed.
		c.busy.Store(false)
		_ = nc.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(nc, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		req.Reset()
		if _, err := req.ReadFrom(&io.LimitedReader{R: nc, N: int64(n)}); err != nil || req.Len() != n {
			return
		}
		c.lastQuery.Store(time.Now().UnixNano())
		c.busy.Store(true)
		if !s.answerTCP(nc, req.Bytes(), from) {
			return
		}
	}
}

// handOffTCP gives the connection, whose query req is theirs, to the
// transfers (SetTransfers); the connection is done with when it returns.
// A transfer counts as busy, never idle.
func (s *Server) handOffTCP(nc net.Conn, req []byte) {
	if t := s.transfers.Load(); t != nil {
		(*t).ServeTCP(nc, req)
	}
}

// tcpOut holds answer buffers for TCP, taken per query.
var tcpOut = sync.Pool{New: func() any { return new([2 + 65536 + optLen]byte) }}

// answerTCP writes the answer to req on nc, and reports false when the
// connection failed.
func (s *Server) answerTCP(nc net.Conn, req []byte, from netip.Addr) bool {
	out := tcpOut.Get().(*[2 + 65536 + optLen]byte)
	resp, handed := s.respondOrHandOff(req, out[2:], true, s.stepAside.Load(), true, from)
	if handed {
		tcpOut.Put(out)
		s.handOffTCP(nc, req)
		return false
	}
	defer tcpOut.Put(out)
	if resp == nil {
		return true
	}
	binary.BigEndian.PutUint16(out[:], uint16(len(resp)))
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
	_, err := nc.Write(out[:2+len(resp)])
	return err == nil
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

// ReservedIDs returns the instance IDs that cannot be registered in this
// zone, each with the reason: the instance's SRV target, <id>.<service>.Z,
// would be a name the zone's own names use.
func (s *Server) ReservedIDs() map[string]string {
	return map[string]string{
		"tag": "tag.<service>." + s.cfg.Zone + " is above the service's tag names, <tag>.tag.<service>." + s.cfg.Zone,
	}
}
