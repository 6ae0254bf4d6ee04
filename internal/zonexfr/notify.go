package zonexfr

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// notifier tells the configured secondaries of changes (RFC 1996),
// coalesced: one round of NOTIFY at most every Config.NotifyDelay, for
// the serial at that time, however many changes came meanwhile. Each
// secondary has its own sender, which tries Config.NotifyTries times
// until answered, and moves on to a newer serial when one comes.
type notifier struct {
	t       *Transfers
	changed chan struct{}
	targets map[netip.AddrPort]chan uint32
	last    uint32 // the serial notified last (or the one at start)
	// sent, when set (tests), is called after each NOTIFY is answered.
	sent func(target netip.AddrPort, serial uint32)
}

func newNotifier(t *Transfers) *notifier {
	n := &notifier{t: t, changed: make(chan struct{}, 1), targets: map[netip.AddrPort]chan uint32{}, last: t.j.sync().Serial()}
	for _, a := range t.cfg.Notify {
		n.targets[a] = make(chan uint32, 1)
	}
	return n
}

// kick says the zone changed; it never blocks.
func (n *notifier) kick() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

func (n *notifier) run(ctx context.Context) {
	for a, ch := range n.targets {
		go n.send(ctx, a, ch)
	}
	last := n.last
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.changed:
		}
		// Let the burst gather, and space rounds apart.
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.t.cfg.NotifyDelay):
		}
		select {
		case <-n.changed:
		default:
		}
		// The journal takes the change now, not at the first transfer.
		serial := n.t.j.sync().Serial()
		if serial == last {
			continue
		}
		last = serial
		for _, ch := range n.targets {
			// Replace what the sender has not taken yet.
			select {
			case <-ch:
			default:
			}
			ch <- serial
		}
	}
}

// send notifies one secondary of each serial it is given.
func (n *notifier) send(ctx context.Context, target netip.AddrPort, ch chan uint32) {
	cfg := n.t.cfg
	c := &dns.Client{Net: "udp", Timeout: cfg.NotifyTimeout, TsigSecret: cfg.Key.secrets()}
	for {
		var serial uint32
		select {
		case <-ctx.Done():
			return
		case serial = <-ch:
		}
	tries:
		for try := 1; ; try++ {
			start := time.Now()
			m := n.message(serial)
			r, _, err := c.ExchangeContext(ctx, m, target.String())
			switch {
			case ctx.Err() != nil:
				return
			case err == nil && r.Rcode == dns.RcodeSuccess:
				n.t.metrics.notify.WithLabelValues("acked").Inc()
				n.t.log.Debug("NOTIFY acknowledged", "secondary", target, "serial", serial, "tries", try)
				if n.sent != nil {
					n.sent(target, serial)
				}
				break tries
			case err == nil:
				n.t.metrics.notify.WithLabelValues("error").Inc()
				n.t.log.Warn("NOTIFY answered with an error", "secondary", target, "serial", serial, "rcode", dns.RcodeToString[r.Rcode])
				break tries
			case try >= cfg.NotifyTries:
				n.t.metrics.notify.WithLabelValues("unanswered").Inc()
				n.t.log.Warn("NOTIFY unanswered; the secondary will find the change at its next refresh", "secondary", target, "serial", serial, "tries", try, "err", err)
				break tries
			}
			// Tries are NotifyTimeout apart, even when refused at once.
			select {
			case <-ctx.Done():
				return
			case newer := <-ch:
				serial, try = newer, 0
			case <-time.After(cfg.NotifyTimeout - time.Since(start)):
			}
		}
	}
}

// message is the NOTIFY for serial: the zone's SOA question, with the
// SOA as a hint (RFC 1996 s3.7), signed when there is a key.
func (n *notifier) message(serial uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetNotify(n.t.zone)
	m.Authoritative = true
	v := n.t.j.sync()
	m.Answer = []dns.RR{v.SOA(serial)}
	if k := n.t.cfg.Key; k != nil {
		m.SetTsig(k.Name, k.Algorithm, 300, time.Now().Unix())
	}
	return m
}
