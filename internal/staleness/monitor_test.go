package staleness

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// switchable is a store probe the test turns off (refused or hanging) and on.
type switchable struct{ mode atomic.Int32 } // 0 answers, 1 refuses, 2 hangs

func (s *switchable) probe(ctx context.Context) error {
	switch s.mode.Load() {
	case 1:
		return errors.New("connection refused")
	case 2:
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func waitState(t *testing.T, m *Monitor, want State, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if m.State() == want {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("state %s after %s; want %s", m.State(), within, want)
	return 0
}

func startMonitor(t *testing.T, cfg Config) *Monitor {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// A store that stops answering makes the server stale after StaleAfter,
// never stepped aside without a current peer, and current again within
// an interval of the heal, also when every probe sent into the cut hangs.
func TestStaleWithoutPeers(t *testing.T) {
	for _, mode := range []int32{1, 2} {
		st := &switchable{}
		var states []State
		statec := make(chan State, 16)
		m := startMonitor(t, Config{Probe: st.probe, Interval: 50 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond,
			StaleAfter: 300 * time.Millisecond, MaxStale: 400 * time.Millisecond, OnState: func(s State) { statec <- s }})
		waitState(t, m, Current, time.Second)
		st.mode.Store(mode)
		cut := time.Now()
		waitState(t, m, Stale, 3*time.Second)
		if took := time.Since(cut); took < 250*time.Millisecond {
			t.Errorf("mode %d: stale %s after the cut; want no sooner than StaleAfter (300ms) less one probe interval (the last contact is when its probe was sent)", mode, took)
		}
		if err := m.Check(); err == nil || !strings.Contains(err.Error(), "TTL of at most 1s") {
			t.Errorf("mode %d: Check while stale = %v; want it to say DNS answers with TTL at most 1s", mode, err)
		}
		time.Sleep(600 * time.Millisecond) // past MaxStale
		if s := m.State(); s != Stale {
			t.Errorf("mode %d: no peers, past MaxStale: state %s; want stale (never stepped aside without a current peer)", mode, s)
		}
		st.mode.Store(0)
		if took := waitState(t, m, Current, 2*time.Second); took > 300*time.Millisecond {
			t.Errorf("mode %d: current %s after the heal; want within a few probe intervals (50ms)", mode, took)
		}
		for len(states) < 2 {
			select {
			case s := <-statec:
				states = append(states, s)
			case <-time.After(2 * time.Second):
				t.Fatalf("mode %d: OnState got %v; want stale then current", mode, states)
			}
		}
		if states[0] != Stale || states[1] != Current {
			t.Errorf("mode %d: OnState got %v; want [stale current]", mode, states)
		}
	}
}

// peerServer answers /healthz as a peer would, with body.
func peerServer(t *testing.T, body func() string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(body()))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func currentBody() string {
	b, _ := json.Marshal(map[string]any{"store_contact": Info{State: "current"}})
	return string(b)
}

// A stale server steps aside past MaxStale only while a peer says it is
// current; a peer that answers garbage, too much, or stale does not count.
func TestStepsAsideForACurrentPeer(t *testing.T) {
	var peerBody atomic.Value
	peerBody.Store(currentBody())
	good := peerServer(t, func() string { return peerBody.Load().(string) })
	huge := peerServer(t, func() string {
		return `{"store_contact":{"state":"current"},"x":"` + strings.Repeat("a", MaxPeerBody) + `"}`
	})
	junk := peerServer(t, func() string { return "<html>not json" })
	list := func(context.Context) ([]Peer, error) {
		return []Peer{{ID: "huge", API: huge}, {ID: "junk", API: junk}, {ID: "good", API: good}}, nil
	}
	st := &switchable{}
	m := startMonitor(t, Config{Probe: st.probe, Interval: 50 * time.Millisecond, StaleAfter: 300 * time.Millisecond, MaxStale: 600 * time.Millisecond,
		Peers: PeerConfig{List: list, Refresh: 50 * time.Millisecond, Timeout: 300 * time.Millisecond}})
	waitState(t, m, Current, time.Second)
	time.Sleep(200 * time.Millisecond) // the peer list is read while connected
	st.mode.Store(1)
	cut := time.Now()
	waitState(t, m, SteppedAside, 5*time.Second)
	if took := time.Since(cut); took < 550*time.Millisecond {
		t.Errorf("stepped aside %s after the cut; want no sooner than MaxStale (600ms) less one probe interval", took)
	}
	// The peer goes stale too: no server is current, keep answering.
	b, _ := json.Marshal(map[string]any{"store_contact": Info{State: "stale"}})
	peerBody.Store(string(b))
	waitState(t, m, Stale, 5*time.Second)
	st.mode.Store(0)
	waitState(t, m, Current, 2*time.Second)
	// Only junk and oversized peers: never step aside.
	peerBody.Store("{}")
	st.mode.Store(1)
	waitState(t, m, Stale, 3*time.Second)
	time.Sleep(time.Second)
	if s := m.State(); s != Stale {
		t.Errorf("with no peer answering a usable current state: %s; want stale", s)
	}
}

func TestHeaderOnReads(t *testing.T) {
	st := &switchable{}
	m := startMonitor(t, Config{Probe: st.probe, Interval: 50 * time.Millisecond, StaleAfter: 200 * time.Millisecond, MaxStale: 300 * time.Millisecond})
	h := m.Header(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	get := func(method string) http.Header {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/v1/services", nil))
		return rec.Header()
	}
	waitState(t, m, Current, time.Second)
	if hd := get("GET"); hd.Get(HeaderLastContact) == "" || hd.Get(HeaderStale) != "" {
		t.Errorf("current GET headers %v; want %s and no %s", hd, HeaderLastContact, HeaderStale)
	}
	if hd := get("PUT"); hd.Get(HeaderLastContact) != "" {
		t.Errorf("PUT got %s; want it on reads only", HeaderLastContact)
	}
	st.mode.Store(1)
	waitState(t, m, Stale, 3*time.Second)
	if hd := get("GET"); hd.Get(HeaderStale) != "true" {
		t.Errorf("stale GET headers %v; want %s: true", hd, HeaderStale)
	}
}

func TestConfigRefused(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a probe: no error")
	}
	st := &switchable{}
	if _, err := New(Config{Probe: st.probe, StaleAfter: 5 * time.Second, MaxStale: time.Second}); err == nil || !strings.Contains(err.Error(), "max stale") {
		t.Errorf("MaxStale under StaleAfter: %v; want an error naming max stale", err)
	}
}
