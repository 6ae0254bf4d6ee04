package httpguard

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// streams counts the watches and blocking queries open, per client IP and
// in all.
type streams struct {
	mu       sync.Mutex
	total    int
	byClient map[string]int
}

// acquire takes a stream slot for ip, or says which limit is full.
func (g *Guard) acquireStream(ip string) (release func(), status int, msg string) {
	s := &g.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byClient[ip] >= g.lim.MaxStreamsPerClient {
		return nil, http.StatusTooManyRequests, fmt.Sprintf("too many watches and blocking queries from %s: at most %d at once (--http-max-streams-per-client)", ip, g.lim.MaxStreamsPerClient)
	}
	if s.total >= g.lim.MaxStreams {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("too many watches and blocking queries on this server: at most %d at once (--http-max-streams); retry later", g.lim.MaxStreams)
	}
	s.total++
	s.byClient[ip]++
	g.streamsOpen.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.byClient[ip]--; s.byClient[ip] <= 0 {
				delete(s.byClient, ip)
			}
			g.streamsOpen.Dec()
		})
	}, 0, ""
}

// stream runs a watch or blocking query: it takes a slot, replaces the
// server's whole-request deadlines (a blocking query may wait minutes and
// a watch runs for as long as the client stays) with StreamQuiet plus
// WriteTimeout for the first write, and answers through a writer that
// gives each write a fresh WriteTimeout. The read deadline is lifted: a
// stream has no body, and a client that goes away is seen at once.
func (g *Guard) stream(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.ContentLength != 0 {
		// Lifting the read deadline is only safe once the body is read:
		// a stream takes none.
		g.deny(w, r, http.StatusBadRequest, "stream_with_body", "a watch or blocking query takes no request body")
		return
	}
	release, status, msg := g.acquireStream(clientIP(r.RemoteAddr))
	if release == nil {
		reason := "streams_per_client"
		if status == http.StatusServiceUnavailable {
			reason = "streams_total"
		}
		w.Header().Set("Retry-After", strconv.Itoa(5))
		g.deny(w, r, status, reason, msg)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(g.cfg.StreamQuiet + g.lim.WriteTimeout))
	next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, timeout: g.lim.WriteTimeout}, r)
}
