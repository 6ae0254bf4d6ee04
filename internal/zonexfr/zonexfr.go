// Package zonexfr serves signpost's zone to secondary name servers (BIND,
// NSD, Knot): AXFR (RFC 5936) and IXFR (RFC 1995) from a bounded journal
// of the zone's recent differences, NOTIFY (RFC 1996) on change, access
// by source address and TSIG (RFC 8945). The DNS server hands it the
// queries that are its own (dnsserver.SetTransfers); it reads the zone
// through dnsserver.ZoneView, so that a transfer carries exactly what the
// server answers.
package zonexfr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
)

// Transfers serves the zone of one DNS server to its secondaries.
type Transfers struct {
	cfg     Config
	dns     *dnsserver.Server
	zone    string
	j       *journal
	slots   chan struct{} // one per transfer running
	conns   *handOff
	srv     *dns.Server
	notify  *notifier
	metrics *metrics
	log     *slog.Logger
	// lastRefusal is when a refusal was last logged (Unix nanoseconds):
	// at most one a second, so that a client cannot flood the log.
	lastRefusal atomic.Int64
}

// refusal logs a refused request, unless one was logged less than a
// second ago (the metrics count them all).
func (t *Transfers) refusal(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := t.lastRefusal.Load()
	if now-last < int64(time.Second) || !t.lastRefusal.CompareAndSwap(last, now) {
		return
	}
	t.log.Warn(msg, args...)
}

// New returns the transfers of s's zone. Hand them to s with
// s.SetTransfers, then call Run.
func New(cfg Config, s *dnsserver.Server) (*Transfers, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	j := &journal{src: s, maxDeltas: cfg.JournalSerials, maxRecords: cfg.JournalRecords}
	m, err := newMetrics(cfg.Registerer, j)
	if err != nil {
		return nil, err
	}
	t := &Transfers{
		cfg:     cfg,
		dns:     s,
		zone:    s.Zone(),
		j:       j,
		slots:   make(chan struct{}, cfg.MaxTransfers),
		conns:   newHandOff(),
		metrics: m,
		log:     cfg.Log,
	}
	t.srv = &dns.Server{
		Listener:   t.conns,
		Handler:    dns.HandlerFunc(t.serveDNS),
		TsigSecret: cfg.Key.secrets(),
		// The handed-over connection's first query is waiting already;
		// later ones get the DNS server's idle timeout.
		ReadTimeout:   cfg.WriteTimeout,
		IdleTimeout:   func() time.Duration { return cfg.WriteTimeout },
		MaxTCPQueries: 16,
	}
	t.notify = newNotifier(t)
	s.OnZoneChange(func(uint32) { t.notify.kick() })
	return t, nil
}

// Run serves handed-over connections and sends NOTIFY until ctx is done.
func (t *Transfers) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- t.srv.ActivateAndServe() }()
	go t.notify.run(ctx)
	select {
	case <-ctx.Done():
		t.conns.close()
		_ = t.srv.Shutdown()
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("zone transfers: %w", err)
	}
}

// ServeTCP implements dnsserver.Transfers: it serves the connection,
// first query req, until the client closes it, it idles out or
// Config.Timeout passes.
func (t *Transfers) ServeTCP(c net.Conn, req []byte) {
	hc := newConn(c, req, t.cfg.Timeout, t.cfg.WriteTimeout)
	if !t.conns.offer(hc, t.cfg.WriteTimeout) {
		return
	}
	<-hc.done
}

// serveDNS answers one query of a handed-over TCP connection.
func (t *Transfers) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	from := addrOf(w.RemoteAddr())
	r := &reply{w: w, req: req, tsig: req.IsTsig(), tsigErr: w.TsigStatus()}
	if r.tsig != nil && t.cfg.Key == nil {
		r.tsigErr = dns.ErrSecret // miekg/dns checks nothing without keys
	}
	if len(req.Question) != 1 {
		r.rcode(dns.RcodeFormatError)
		return
	}
	if r.tsig != nil && r.tsigErr != nil {
		t.metrics.requests.WithLabelValues("badtsig").Inc()
		t.refusal("zone transfer: bad TSIG", "client", from, "key", r.tsig.Hdr.Name, "err", r.tsigErr)
		r.badTSIG()
		return
	}
	switch req.Question[0].Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		t.transferTCP(r, from)
	default:
		t.plain(r, true)
	}
}

// transferTCP answers AXFR or IXFR over TCP.
func (t *Transfers) transferTCP(r *reply, from netip.Addr) {
	q := r.req.Question[0]
	if !t.admit(r, from) {
		return
	}
	select {
	case t.slots <- struct{}{}:
		defer func() { <-t.slots }()
	default:
		t.metrics.requests.WithLabelValues("busy").Inc()
		t.refusal("zone transfer refused: too many at once", "client", from, "max", t.cfg.MaxTransfers)
		r.rcode(dns.RcodeRefused)
		return
	}
	t.metrics.active.Inc()
	defer t.metrics.active.Dec()
	start := time.Now()
	v, kind, deltas, ok := t.plan(r, q.Qtype)
	if !ok {
		return
	}
	label := answerLabel(q.Qtype, kind)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan *dns.Envelope)
	go func() {
		defer close(ch)
		b := &chunker{ctx: ctx, ch: ch}
		t.stream(v, kind, deltas, b.add)
		b.flush()
	}()
	tr := new(dns.Transfer)
	err := tr.Out(r.w, r.req, ch)
	cancel()
	for range ch {
		// Let the producer see the cancellation and end.
	}
	if err != nil {
		t.metrics.requests.WithLabelValues("failed").Inc()
		t.log.Warn("zone transfer cut", "client", from, "type", dns.TypeToString[q.Qtype], "serial", v.Serial(), "err", err)
		_ = r.w.Close() // half a transfer: nothing more to say on it
		return
	}
	t.metrics.requests.WithLabelValues(label).Inc()
	t.log.Info("zone transferred", "client", from, "answer", label, "serial", v.Serial(), "took", time.Since(start).Round(10*time.Microsecond))
}

// plan finds what a transfer request gets; it answers FORMERR itself (an
// IXFR without the client's SOA) and reports false.
func (t *Transfers) plan(r *reply, qtype uint16) (*dnsserver.ZoneView, answerKind, []delta, bool) {
	if qtype == dns.TypeAXFR {
		return t.j.sync(), whole, nil, true
	}
	var soa *dns.SOA
	if len(r.req.Ns) == 1 {
		soa, _ = r.req.Ns[0].(*dns.SOA)
	}
	if soa == nil {
		r.rcode(dns.RcodeFormatError)
		return nil, 0, nil, false
	}
	v, kind, deltas := t.j.since(soa.Serial)
	return v, kind, deltas, true
}

func answerLabel(qtype uint16, kind answerKind) string {
	if qtype == dns.TypeAXFR {
		return "axfr"
	}
	return [...]string{"ixfr_current", "ixfr_incremental", "ixfr_whole"}[kind]
}

// admit checks that the client may transfer: its address is allowed and,
// with a key, the request is signed with it. It answers REFUSED itself
// and reports false when not, and for any name but the zone.
func (t *Transfers) admit(r *reply, from netip.Addr) bool {
	why := ""
	switch {
	case !dns.IsFqdn(r.req.Question[0].Name) || dns.CanonicalName(r.req.Question[0].Name) != t.zone:
		why = "not the zone's apex"
	case !t.allowed(from):
		why = "address not in --xfr-allow"
	case t.cfg.Key != nil && (r.tsig == nil || dns.CanonicalName(r.tsig.Hdr.Name) != t.cfg.Key.Name || dns.CanonicalName(r.tsig.Algorithm) != t.cfg.Key.Algorithm):
		why = "not signed with the TSIG key " + t.cfg.Key.Name
	default:
		return true
	}
	t.metrics.requests.WithLabelValues("refused").Inc()
	t.refusal("zone transfer refused", "client", from, "name", r.req.Question[0].Name, "why", why)
	r.rcode(dns.RcodeRefused)
	return false
}

func (t *Transfers) allowed(a netip.Addr) bool {
	for _, p := range t.cfg.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// stream emits the records of an answer in order, until emit reports
// false: the current SOA; then the deltas (RFC 1995: each the old SOA,
// what it deleted, the new SOA, what it added) or every record of the
// zone; and the current SOA again. A single SOA when current.
func (t *Transfers) stream(v *dnsserver.ZoneView, kind answerKind, deltas []delta, emit func(dns.RR) bool) {
	if !emit(v.SOA(v.Serial())) || kind == current {
		return
	}
	if kind == incremental {
		for _, d := range deltas {
			if !emitAll(emit, v.SOA(d.from)) || !emitAll(emit, d.del...) || !emitAll(emit, v.SOA(d.to)) || !emitAll(emit, d.add...) {
				return
			}
		}
	} else {
		if !emitAll(emit, v.Apex()...) {
			return
		}
		for _, name := range v.Services() {
			if !emitAll(emit, v.Records(name)...) {
				return
			}
		}
	}
	emit(v.SOA(v.Serial()))
}

func emitAll(emit func(dns.RR) bool, rrs ...dns.RR) bool {
	for _, rr := range rrs {
		if !emit(rr) {
			return false
		}
	}
	return true
}

// chunkBytes is the most record bytes in one transfer message (they go
// uncompressed, under TCP's 65,535 with room for TSIG).
const chunkBytes = 32 << 10

// chunker groups records into the messages of a transfer.
type chunker struct {
	ctx  context.Context
	ch   chan<- *dns.Envelope
	rrs  []dns.RR
	size int
}

func (b *chunker) add(rr dns.RR) bool {
	n := dns.Len(rr)
	if b.size+n > chunkBytes && !b.flush() {
		return false
	}
	b.rrs = append(b.rrs, rr)
	b.size += n
	return true
}

func (b *chunker) flush() bool {
	if len(b.rrs) == 0 {
		return true
	}
	select {
	case b.ch <- &dns.Envelope{RR: b.rrs}:
		b.rrs, b.size = nil, 0
		return true
	case <-b.ctx.Done():
		return false
	}
}

// plain answers a query that is no transfer (one signed with TSIG, or a
// later query on a handed-over connection) as the DNS server does, signed
// when the query was.
func (t *Transfers) plain(r *reply, tcp bool) {
	q := r.req.Copy()
	if r.tsig != nil {
		q.Extra = q.Extra[:len(q.Extra)-1]
	}
	raw, err := q.Pack()
	if err != nil {
		r.rcode(dns.RcodeFormatError)
		return
	}
	out := t.dns.Respond(raw, tcp)
	if out == nil {
		return
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		r.rcode(dns.RcodeServerFailure)
		return
	}
	m.Compress = true
	r.send(m)
}

// addrOf returns the IP address of a client.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// errClosed is what a handed-over connection's listener says once closed.
var errClosed = errors.New("zone transfers closed")
