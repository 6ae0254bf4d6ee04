package staleness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Limits of asking peers.
const (
	// MaxPeers is the most peers kept from the store's list and asked.
	MaxPeers = 16
	// MaxPeerBody is the most bytes read of a peer's /healthz answer.
	MaxPeerBody = 16 << 10
	// DefaultPeerTimeout bounds each question to a peer.
	DefaultPeerTimeout = 500 * time.Millisecond
	// DefaultRefresh is how often the peer list is read from the store
	// while it answers.
	DefaultRefresh = 5 * time.Second
	// peerAsk is how often peers are asked while the server is stale,
	// and how old an answer may be to decide on.
	peerAsk = 500 * time.Millisecond
)

// Peer is another server of the same store.
type Peer struct {
	// ID names the server (its advertised API address).
	ID string `json:"id"`
	// API is its API's base URL, such as http://10.0.0.12:8080.
	API string `json:"api"`
	// DNS is where it answers DNS, HOST:PORT.
	DNS string `json:"dns"`
}

// PeerConfig configures how a server finds and asks its peers.
type PeerConfig struct {
	// Self is this server's ID, left out of the list.
	Self string
	// List reads the servers from the store (nil: no peers).
	List func(ctx context.Context) ([]Peer, error)
	// Client asks the peers (default: a client of its own, no proxy).
	Client *http.Client
	// Timeout bounds each question to a peer (default DefaultPeerTimeout).
	Timeout time.Duration
	// Refresh is how often the list is read while the store answers
	// (default DefaultRefresh).
	Refresh time.Duration
}

// peerSet keeps the last known peers and whether one was current when
// last asked.
type peerSet struct {
	cfg PeerConfig
	log *slog.Logger

	mu        sync.Mutex
	list      []Peer
	current   string    // a peer that said it was current, "" if none
	askedAt   time.Time // when current was learned
	refreshed time.Time
}

func newPeerSet(cfg PeerConfig, log *slog.Logger) *peerSet {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultPeerTimeout
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}}
	}
	return &peerSet{cfg: cfg, log: log}
}

func (p *peerSet) self() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Self
}

// Peers returns the last known peers.
func (p *peerSet) peers() []Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.list)
}

// someCurrent reports whether a peer said it was current, recently.
func (p *peerSet) someCurrent() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current != "" && time.Since(p.askedAt) < 3*peerAsk
}

// run refreshes the list while the store answers and asks the peers while
// the server is stale, until ctx is done.
func (p *peerSet) run(ctx context.Context, m *Monitor) {
	if p.cfg.List == nil {
		return
	}
	t := time.NewTicker(peerAsk)
	defer t.Stop()
	for {
		if m.Age() <= m.cfg.StaleAfter {
			p.mu.Lock()
			due := time.Since(p.refreshed) >= p.cfg.Refresh
			p.current = ""
			p.mu.Unlock()
			if due {
				p.refresh(ctx)
			}
		} else {
			p.ask(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh reads the peer list from the store; a failed read keeps the
// last known list.
func (p *peerSet) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout*2)
	list, err := p.cfg.List(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.log.Debug("peer servers: cannot read the list from the store; keeping the last known", "err", err)
		}
		return
	}
	out := make([]Peer, 0, min(len(list), MaxPeers))
	for _, pe := range list {
		if pe.ID == p.self() || pe.API == "" {
			continue
		}
		if len(out) == MaxPeers {
			p.log.Warn("peer servers: more than the most asked; the rest are left out", "max", MaxPeers, "servers", len(list))
			break
		}
		out = append(out, pe)
	}
	p.mu.Lock()
	p.list, p.refreshed = out, time.Now()
	p.mu.Unlock()
}

// ask asks every known peer at once whether it is current.
func (p *peerSet) ask(ctx context.Context) {
	list := p.peers()
	found := make(chan string, len(list))
	var wg sync.WaitGroup
	for _, pe := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.status(ctx, pe)
			if err != nil {
				p.log.Debug("peer server did not say its state", "peer", pe.ID, "err", err)
				return
			}
			if st.State == Current.String() {
				found <- pe.ID
			}
		}()
	}
	wg.Wait()
	close(found)
	cur := <-found // "" when none
	p.mu.Lock()
	if cur != p.current {
		if cur != "" {
			p.log.Warn("a peer server is current while this one is stale", "peer", cur)
		} else if p.current != "" {
			p.log.Warn("no peer server is current: answering the last known state", "peers", len(list))
		}
	}
	p.current, p.askedAt = cur, time.Now()
	p.mu.Unlock()
}

// status asks a peer's /healthz for its store contact.
func (p *peerSet) status(ctx context.Context, pe Peer) (*Info, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pe.API+"/healthz", nil)
	if err != nil {
		return nil, fmt.Errorf("peer %s: API URL %q: %w", pe.ID, pe.API, err)
	}
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", pe.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxPeerBody+1))
	if err != nil {
		return nil, fmt.Errorf("peer %s: read /healthz: %w", pe.ID, err)
	}
	if len(b) > MaxPeerBody {
		return nil, fmt.Errorf("peer %s: /healthz answer over %d bytes", pe.ID, MaxPeerBody)
	}
	var body struct {
		Contact *Info `json:"store_contact"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("peer %s: decode /healthz (HTTP %d): %w", pe.ID, resp.StatusCode, err)
	}
	if body.Contact == nil {
		return nil, fmt.Errorf("peer %s: /healthz (HTTP %d) says nothing of its store contact", pe.ID, resp.StatusCode)
	}
	return body.Contact, nil
}
