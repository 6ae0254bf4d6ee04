package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/fleet/history"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Zone is the fleet's DNS zone (the servers' default).
const Zone = "servicediscovery.internal."

// Recorder collects a run's history from every client, with one clock.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	h     history.History
}

// NewRecorder starts a history now.
func NewRecorder(seed int64, scenario string, b history.Bounds) *Recorder {
	r := &Recorder{start: time.Now()}
	r.h = history.History{Seed: seed, Scenario: scenario, Start: r.start, Bounds: b}
	return r
}

// Now is the time since the history's start, in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// At converts a wall time to the history's clock.
func (r *Recorder) At(t time.Time) int64 { return int64(t.Sub(r.start)) }

func (r *Recorder) op(o history.Op) {
	r.mu.Lock()
	r.h.Ops = append(r.h.Ops, o)
	r.mu.Unlock()
}

func (r *Recorder) dns(a history.DNSAnswer) {
	r.mu.Lock()
	r.h.DNS = append(r.h.DNS, a)
	r.mu.Unlock()
}

func (r *Recorder) watch(e history.WatchEvent) {
	r.mu.Lock()
	r.h.Watches = append(r.h.Watches, e)
	r.mu.Unlock()
}

func (r *Recorder) stream(w history.WatchStream) {
	r.mu.Lock()
	r.h.Streams = append(r.h.Streams, w)
	r.mu.Unlock()
}

// Fault records one injected fault.
func (r *Recorder) Fault(f history.Fault) {
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, f)
	r.mu.Unlock()
}

// Stop notes that the traffic stopped now.
func (r *Recorder) Stop() {
	r.mu.Lock()
	r.h.End = r.Now()
	r.mu.Unlock()
}

// History is what was recorded, with the store's history truth.
func (r *Recorder) History(servers []string, truth []history.Change) *history.History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Servers = servers
	h.Truth = truth
	if h.End == 0 {
		h.End = r.Now()
	}
	sort.SliceStable(h.Ops, func(i, j int) bool { return h.Ops[i].Invoke < h.Ops[j].Invoke })
	return &h
}

// outcome classifies a client error: a 4xx is the server's refusal
// before the store was asked (the write did not happen); anything else
// (a 5xx, a timeout, a broken connection) may have been applied.
func outcome(err error) history.Outcome {
	if err == nil {
		return history.OK
	}
	// A client of several servers fails when all did: certainly not
	// applied only if no attempt may have been.
	if errs := attempts(err); len(errs) > 0 {
		for _, e := range errs {
			if outcome(e) != history.Failed {
				return history.Unknown
			}
		}
		return history.Failed
	}
	var e *apiclient.Error
	if errors.As(err, &e) && e.Status >= 400 && e.Status < 500 {
		return history.Failed
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return history.Failed
	}
	return history.Unknown
}

// status is the HTTP status of a server's refusal, 0 if err is none.
func status(err error) int {
	var e *apiclient.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// attempts are the errors of each server a failover client tried, when
// err wraps them all.
func attempts(err error) []error {
	for err != nil {
		if m, ok := err.(interface{ Unwrap() []error }); ok {
			return m.Unwrap()
		}
		err = errors.Unwrap(err)
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// clientFor is an API client of the given servers whose connections
// start on h.
func clientFor(h *Host, urls []string) *apiclient.Client {
	c, err := apiclient.NewServers(urls, Token)
	if err != nil {
		panic(err) // the fleet's own URLs: a bug in the harness
	}
	c.SetTransport(&http.Transport{DialContext: apiclient.AbortOnClose(h.DialContext), MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second})
	return c
}

// Traffic is the fleet's load: writers, readers, DNS askers, watchers
// and heartbeating nodes, every one recording what it did and saw.
type Traffic struct {
	Rec      *Recorder
	Client   *Host
	Servers  []*Server
	Services []string
	seq      atomic.Int64
}

// instAddr gives each instance a unique address:port, so that a DNS
// answer names the instances it holds.
func instAddr(n int64) (netip.Addr, uint16) {
	return netip.AddrFrom4([4]byte{10, 200, byte(n >> 8), byte(n)}), uint16(8000 + n%1000)
}

// Writer registers new instances and deregisters some of its own, each
// op on one server (no failover: the history says which server).
func (tr *Traffic) Writer(ctx context.Context, name string, rng *rand.Rand, every time.Duration) {
	clients := make([]*apiclient.Client, len(tr.Servers))
	for i, s := range tr.Servers {
		clients[i] = clientFor(tr.Client, []string{s.URL})
	}
	var mine []registry.Instance
	for ctx.Err() == nil {
		i := rng.IntN(len(clients))
		o := history.Op{Client: name, Server: tr.Servers[i].Name}
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if len(mine) > 3 && rng.IntN(3) == 0 {
			k := rng.IntN(len(mine))
			in := mine[k]
			mine = append(mine[:k], mine[k+1:]...)
			o.Kind, o.ID, o.Service = history.Deregister, in.ID, in.Service
			o.Invoke = tr.Rec.Now()
			resp, err := clients[i].Deregister(octx, in.ID)
			o.Return, o.Outcome, o.Rev, o.Err, o.Status = tr.Rec.Now(), outcome(err), resp.Index, errText(err), status(err)
			// A 404 (not there: its register was not applied, or it is
			// gone already) changed nothing, so it is recorded as failed;
			// a write lost that way shows in the reads.
		} else {
			n := tr.seq.Add(1)
			addr, port := instAddr(n)
			in := registry.Instance{
				ID: fmt.Sprintf("%s-%d", name, n), Service: tr.Services[int(n)%len(tr.Services)],
				Protocol: "tcp", Address: addr, Port: port,
				Health: registry.Health{Status: registry.HealthPassing},
			}
			o.Kind, o.ID, o.Service, o.Addr = history.Register, in.ID, in.Service, netip.AddrPortFrom(addr, port).String()
			o.Invoke = tr.Rec.Now()
			resp, err := clients[i].Register(octx, in)
			o.Return, o.Outcome, o.Rev, o.Err, o.Status = tr.Rec.Now(), outcome(err), resp.Index, errText(err), status(err)
			if o.Outcome != history.Failed {
				mine = append(mine, in)
			}
		}
		cancel()
		tr.Rec.op(o)
		sleep(ctx, every)
	}
}

// Reader reads each service from one server.
func (tr *Traffic) Reader(ctx context.Context, s *Server, every time.Duration) {
	c := clientFor(tr.Client, []string{s.URL})
	for ctx.Err() == nil {
		for _, svc := range tr.Services {
			o := history.Op{Client: "reader-" + s.Name, Server: s.Name, Kind: history.Read, Service: svc}
			octx, cancel := context.WithTimeout(ctx, 3*time.Second)
			o.Invoke = tr.Rec.Now()
			resp, err := c.Service(octx, svc, 0, 0)
			o.Return = tr.Rec.Now()
			cancel()
			if apiclient.IsStatus(err, http.StatusNotFound) {
				err = nil // no instance yet
			}
			o.Outcome, o.Err = outcome(err), errText(err)
			if err == nil {
				o.Rev, o.Stale = resp.Index, resp.Stale
				for _, in := range resp.Instances {
					o.IDs = append(o.IDs, in.ID)
				}
				sort.Strings(o.IDs)
			}
			if ctx.Err() == nil {
				tr.Rec.op(o)
			}
		}
		sleep(ctx, every)
	}
}

// Asker asks one server for each service's SRV records over UDP.
func (tr *Traffic) Asker(ctx context.Context, s *Server, every time.Duration) {
	var conn *dns.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	for ctx.Err() == nil {
		for _, svc := range tr.Services {
			if conn == nil {
				nc, err := tr.Client.DialContext(ctx, "udp", s.DNS)
				if err != nil {
					sleep(ctx, every)
					continue
				}
				conn = &dns.Conn{Conn: nc}
			}
			m := new(dns.Msg)
			m.SetQuestion("_"+svc+"._tcp."+Zone, dns.TypeSRV)
			m.SetEdns0(1232, false)
			a := history.DNSAnswer{Server: s.Name, Service: svc, Sent: tr.Rec.Now()}
			r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
			if err != nil {
				// A lost datagram: a new socket, so that a late answer
				// is not taken for the next one's.
				conn.Close()
				conn = nil
				if ctx.Err() == nil {
					tr.Rec.dns(a)
				}
				continue
			}
			if r.Truncated || !glued(r) {
				// Too large for UDP (truncated, or without the targets'
				// addresses, which the server leaves out first): ask again
				// over TCP, as a resolver would.
				if r, err = tr.askTCP(ctx, s, m); err != nil {
					tr.Rec.dns(a)
					continue
				}
			}
			a.Got, a.Rcode, a.Targets, a.MinTTL = tr.Rec.Now(), r.Rcode, targets(r), minTTL(r)
			tr.Rec.dns(a)
		}
		sleep(ctx, every)
	}
}

// askTCP asks m of s over a new TCP connection.
func (tr *Traffic) askTCP(ctx context.Context, s *Server, m *dns.Msg) (*dns.Msg, error) {
	nc, err := tr.Client.DialContext(ctx, "tcp", s.DNS)
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: nc}
	defer conn.Close()
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	return r, err
}

// glued reports whether every SRV target of r has its address in r.
func glued(r *dns.Msg) bool {
	has := map[string]bool{}
	for _, rr := range r.Extra {
		switch rr.(type) {
		case *dns.A, *dns.AAAA:
			has[strings.ToLower(rr.Header().Name)] = true
		}
	}
	for _, rr := range r.Answer {
		if srv, ok := rr.(*dns.SRV); ok && !has[strings.ToLower(srv.Target)] {
			return false
		}
	}
	return true
}

// targets are an SRV answer's instances as address:port.
func targets(r *dns.Msg) []string {
	addrs := map[string]string{}
	for _, rr := range r.Extra {
		switch a := rr.(type) {
		case *dns.A:
			addrs[strings.ToLower(a.Hdr.Name)] = a.A.String()
		case *dns.AAAA:
			addrs[strings.ToLower(a.Hdr.Name)] = a.AAAA.String()
		}
	}
	var out []string
	for _, rr := range r.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			host := addrs[strings.ToLower(srv.Target)]
			if host == "" {
				host = strings.ToLower(srv.Target)
			}
			out = append(out, net.JoinHostPort(host, fmt.Sprint(srv.Port)))
		}
	}
	sort.Strings(out)
	return out
}

func minTTL(r *dns.Msg) uint32 {
	var m uint32
	for i, rr := range r.Answer {
		if ttl := rr.Header().Ttl; i == 0 || ttl < m {
			m = ttl
		}
	}
	return m
}

// Watcher follows /v1/watch on one server, resuming from its last index
// whenever the stream breaks.
func (tr *Traffic) Watcher(ctx context.Context, name string, s *Server) {
	c := clientFor(tr.Client, []string{s.URL})
	c.WatchStall = 3 * time.Second
	tr.Rec.stream(history.WatchStream{Stream: name, Server: s.Name})
	var index int64
	for ctx.Err() == nil {
		err := c.Watch(ctx, "", index, func(ev apiclient.WatchEvent) error {
			e := history.WatchEvent{Stream: name, Server: s.Name, Service: ev.Service, Index: ev.Index, Got: tr.Rec.Now()}
			if ev.Reset != nil {
				e.Reset = true
				e.Services = append(e.Services, ev.Reset.Services...)
				e.Service = ""
			} else {
				for _, in := range ev.Instances {
					e.IDs = append(e.IDs, in.ID)
				}
				sort.Strings(e.IDs)
			}
			if ev.Index > index {
				index = ev.Index
			}
			if ctx.Err() == nil {
				tr.Rec.watch(e)
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
