package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/staleness"
	etcdstore "github.com/signpost-dns/signpost/internal/store/etcd"
)

// barrierAfter is how long a probe waits for the index to reach etcd's
// revision on its own before it writes a barrier.
const barrierAfter = 100 * time.Millisecond

// newMonitor tracks the last contact with a remote store: /healthz, the
// metric and the API's header say it, DNS caps its TTLs while stale and
// steps aside for a current peer past MaxStale (see docs/etcd.md, "A
// server cut off from etcd").
func (s *Server) newMonitor(p registry.Pinger) (*staleness.Monitor, error) {
	probe := p.Ping
	var peers staleness.PeerConfig
	if st, ok := s.store.(*etcdstore.Store); ok {
		// Contact is the store answering while the index follows it: a
		// store that answers pings while the index's watch is down and
		// its lists fail (a member cut off from its leader, say) leaves
		// this server's answers behind however well the pings go.
		probe = func(ctx context.Context) error {
			rev, err := st.ProbeRev(ctx)
			if err != nil {
				return err
			}
			if err := s.index.FollowErr(); err != nil {
				s.index.Retry() // the store answers: follow it again now
				return fmt.Errorf("etcd answers, but the registry does not follow it: %w", err)
			}
			// A watch whose member's packets are lost or held (its TCP
			// connection backing off) fails nothing for seconds, but its
			// events wait as long.
			if h := st.WatchHeard(); !h.IsZero() && time.Since(h) > st.WatchTolerance() {
				return fmt.Errorf("etcd answers, but the registry's watch has heard nothing from it for %s", time.Since(h).Round(time.Millisecond))
			}
			// Caught up: the index has reached the revision etcd answered
			// at. Just after a cut heals the watch replays what it missed;
			// until then this server answers an old state (the fleet
			// test saw 6 s old answers with the full TTL for 0.3 s). A
			// revision not yet reached may be a change on its way, or a
			// key outside the registry: after a moment, a barrier write
			// tells which, since its event comes after every change
			// before it.
			if s.index.Rev() < rev {
				wctx, cancel := context.WithTimeout(ctx, barrierAfter)
				err := s.index.WaitRev(wctx, rev)
				cancel()
				if err != nil {
					b, err := st.Barrier(ctx)
					if err != nil {
						return fmt.Errorf("etcd answers, but the registry cannot check it follows: %w", err)
					}
					if err := s.index.WaitRev(ctx, b); err != nil {
						return fmt.Errorf("etcd answers at revision %d, but the registry has reached only %d", b, s.index.Rev())
					}
				}
			}
			return nil
		}
		peers.List = func(ctx context.Context) ([]staleness.Peer, error) {
			recs, err := st.Servers(ctx)
			out := make([]staleness.Peer, 0, len(recs))
			for _, r := range recs {
				out = append(out, staleness.Peer{ID: r.ID, API: r.API, DNS: r.DNS})
			}
			return out, err
		}
		// Self is set once the listeners are bound (advertise).
	}
	return staleness.New(staleness.Config{
		Probe:      probe,
		StaleAfter: s.cfg.StaleAfter,
		MaxStale:   s.cfg.MaxStale,
		Peers:      peers,
		OnProbe: func(err error) {
			s.index.SetStoreErr(err)
			if err == nil {
				if _, _, ierr := s.index.Status(); ierr != nil {
					s.index.Retry() // the store answers: follow it again now
				}
			}
		},
		OnState: func(st staleness.State) {
			var took any
			switch st {
			case staleness.Current:
				s.dns.SetStepAside(false)
				took = s.dns.LimitTTL(0)
			case staleness.Stale:
				s.dns.SetStepAside(false)
				took = s.dns.LimitTTL(staleness.StaleTTL)
			case staleness.SteppedAside:
				took = s.dns.LimitTTL(staleness.StaleTTL)
				s.dns.SetStepAside(true)
			}
			s.log.Info("DNS answers follow the store contact", "state", st, "ttl", s.dns.CurrentTTL(), "servfail", s.dns.SteppedAside(), "repack_took", took)
		},
		Registerer: s.reg,
		Log:        s.log,
	})
}

// advertise is what this server announces to its peers: the API's URL and
// the DNS address, at the advertised host.
func (s *Server) advertise() (etcdstore.ServerRecord, error) {
	_, hport, _ := net.SplitHostPort(s.HTTPAddr())
	_, dport, _ := net.SplitHostPort(s.DNSAddr())
	host := s.cfg.Advertise
	if host == "" {
		h, _, _ := net.SplitHostPort(s.HTTPAddr())
		if ip, err := netip.ParseAddr(h); err != nil || ip.IsUnspecified() {
			return etcdstore.ServerRecord{}, fmt.Errorf("--http %s listens on every address, which is none other servers can reach this one at: set --advertise to this machine's address (servers on one etcd ask each other whether they are current)", s.cfg.HTTPAddr)
		}
		host = h
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return etcdstore.ServerRecord{}, fmt.Errorf("--advertise %q: not an address others can reach; give this machine's address or name", host)
	} else if err != nil {
		if !hostName(host) {
			return etcdstore.ServerRecord{}, fmt.Errorf("--advertise %q: want an IP address or a host name", host)
		}
	}
	api := net.JoinHostPort(host, hport)
	rec := etcdstore.ServerRecord{ID: api, API: "http://" + api, DNS: net.JoinHostPort(host, dport)}
	s.stale.SetSelf(rec.ID)
	return rec, nil
}

// hostName reports whether h is a plausible host name.
func hostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
