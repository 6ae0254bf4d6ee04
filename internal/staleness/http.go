package staleness

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Header names set on every API read.
const (
	// HeaderLastContact is the milliseconds since the store last
	// answered (as Consul's X-Consul-LastContact).
	HeaderLastContact = "X-Signpost-Last-Contact"
	// HeaderStale is "true" while the server is stale or stepped aside,
	// absent while current.
	HeaderStale = "X-Signpost-Stale"
)

// Info is a server's store contact, as /healthz shows it under
// "store_contact" and peers read it.
type Info struct {
	// State is "current", "stale" or "stepped_aside".
	State string `json:"state"`
	// LastContact is when the store last answered (RFC 3339).
	LastContact time.Time `json:"last_contact"`
	// LastContactMS is how long ago, in milliseconds.
	LastContactMS int64 `json:"last_contact_ms"`
	// StaleAfterMS and MaxStaleMS are the monitor's thresholds.
	StaleAfterMS int64 `json:"stale_after_ms"`
	MaxStaleMS   int64 `json:"max_stale_ms"`
	// Peers is how many other servers are known.
	Peers int `json:"peers"`
}

// Info returns the store contact now.
func (m *Monitor) Info() Info {
	last := m.LastContact()
	return Info{
		State:         m.State().String(),
		LastContact:   last.UTC(),
		LastContactMS: time.Since(last).Milliseconds(),
		StaleAfterMS:  m.cfg.StaleAfter.Milliseconds(),
		MaxStaleMS:    m.cfg.MaxStale.Milliseconds(),
		Peers:         len(m.peers.peers()),
	}
}

// Check is nil while current, else says since when the store has not
// answered and what DNS does meanwhile (for /healthz).
func (m *Monitor) Check() error {
	st := m.State()
	if st == Current {
		return nil
	}
	last := m.LastContact()
	what := fmt.Sprintf("answering DNS from memory with a TTL of at most %ds", StaleTTL)
	if st == SteppedAside {
		what = fmt.Sprintf("stale for over %s while a peer server is current: answering SERVFAIL for the zone", m.cfg.MaxStale)
	}
	return fmt.Errorf("stale: no answer from the store for %s, since %s; %s", time.Since(last).Round(time.Millisecond), last.UTC().Format(time.RFC3339Nano), what)
}

// Header is middleware that sets HeaderLastContact, and HeaderStale while
// not current, on every GET and HEAD answer of next.
func (m *Monitor) Header(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h := w.Header()
			h.Set(HeaderLastContact, strconv.FormatInt(m.Age().Milliseconds(), 10))
			if m.State() != Current {
				h.Set(HeaderStale, "true")
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (m *Monitor) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "signpost_store_last_contact_seconds",
			Help: "Seconds since the store last answered a request that needs its quorum.",
		}, func() float64 { return m.Age().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "signpost_store_stale_state",
			Help: "What DNS does about the store's last contact: 0 current, 1 stale (answers from memory, TTL at most 1 s), 2 stepped aside (SERVFAIL for the zone: a peer server is current).",
		}, func() float64 { return float64(m.State()) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register store contact metrics: %w", err)
		}
	}
	return nil
}
