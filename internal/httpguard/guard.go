package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// Config configures a Guard.
type Config struct {
	// Limits are the bounds applied (zero fields take Defaults).
	Limits Limits
	// WriteToken, when set, is required as "Authorization: Bearer <token>"
	// on every write.
	WriteToken string
	// ReadToken, when set, is required on every read but /healthz (the
	// write token is accepted too). Reads are open by default: DNS gives
	// the same answers to anyone who can query it.
	ReadToken string
	// OpenReads are exact paths, or prefixes when they end in "/" ("/"
	// itself is exact), that a read may fetch
	// without the read token: pages that hold no registry data, such as
	// the web UI's files, which a browser opens without a header (the
	// page then sends the token with its own API reads).
	OpenReads []string
	// ListenAddr is the API's listen address; its host name is an allowed
	// Host header.
	ListenAddr string
	// AllowedHosts are further names clients reach the API by (see
	// CheckHost).
	AllowedHosts []string
	// CheckHost turns the Host header check on. Set it for a server that
	// takes writes without a token (a web page could otherwise write
	// through DNS rebinding); a server with a write token may skip it,
	// since a browser does not have the token.
	CheckHost bool
	// Classify says what kind a request is.
	Classify func(*http.Request) Kind
	// StreamQuiet is the longest a watch or blocking query may go
	// without writing (the API's longest wait; default 10m): past it
	// plus WriteTimeout, its connection is closed.
	StreamQuiet time.Duration
	// Registerer gets the guard's metrics (default: none).
	Registerer prometheus.Registerer
	// Log gets the guard's logs (default slog.Default()).
	Log *slog.Logger
}

// Guard is the middleware in front of the API. Build one with New, wrap
// the handler with Handler, and serve it with Server and Listen.
type Guard struct {
	cfg     Config
	lim     Limits
	hosts   hosts
	log     *slog.Logger
	streams streams
	bodies  inFlight

	refused     *prometheus.CounterVec
	streamsOpen prometheus.Gauge
	connsOpen   prometheus.Gauge
	bodyBytes   prometheus.Gauge
}

// New builds a guard and registers its metrics.
func New(cfg Config) (*Guard, error) {
	if cfg.Classify == nil {
		return nil, errors.New("httpguard: Classify is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.StreamQuiet <= 0 {
		cfg.StreamQuiet = 10 * time.Minute
	}
	g := &Guard{
		cfg:     cfg,
		lim:     cfg.Limits.withDefaults(),
		hosts:   newHosts(cfg.ListenAddr, cfg.AllowedHosts),
		log:     cfg.Log,
		streams: streams{byClient: map[string]int{}},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_http_refused_total",
			Help: "HTTP requests and connections refused at the door, by reason.",
		}, []string{"reason"}),
		streamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_http_streams",
			Help: "Watches and blocking queries open.",
		}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_http_connections",
			Help: "HTTP connections open on the API listener.",
		}),
		bodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_http_body_bytes_in_flight",
			Help: "Bytes of instance and node set bodies being read (as declared, or their limit).",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{g.refused, g.streamsOpen, g.connsOpen, g.bodyBytes} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register HTTP guard metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Limits are the limits in force, defaults filled in.
func (g *Guard) Limits() Limits { return g.lim }

// Handler wraps next with every check, in order: Host header, token,
// Content-Type of writes, body size, and the stream slots and deadlines of
// watches and blocking queries.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.cfg.CheckHost && !g.hosts.allows(r.Host) {
			g.deny(w, r, http.StatusForbidden, "host", fmt.Sprintf("Host %q is not a name of this server (DNS rebinding?): reach it by IP address or localhost, or add the name to --allowed-hosts", r.Host))
			return
		}
		kind := g.cfg.Classify(r)
		if msg := g.authorize(r, kind.IsWrite()); msg != "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="signpost"`)
			g.deny(w, r, http.StatusUnauthorized, "token", msg)
			return
		}
		if kind.IsWrite() {
			if err := checkContentType(r); err != nil {
				g.deny(w, r, http.StatusUnsupportedMediaType, "content_type", err.Error())
				return
			}
		}
		r, release, ok := g.limitBody(w, r, kind)
		if !ok {
			return
		}
		defer release()
		if kind == Stream {
			g.stream(w, r, next)
			return
		}
		next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: g.lim.WriteTimeout}, r)
	})
}

// deny refuses r before its body is read, counting the refusal under
// reason. A request that declared a body is answered with its connection
// closed at once: the server neither reads nor waits for a body it will
// not use (it would otherwise drain up to 256 KiB of it, for as long as
// the read timeout lets the client dawdle).
func (g *Guard) deny(w http.ResponseWriter, r *http.Request, status int, reason, msg string) {
	g.refused.WithLabelValues(reason).Inc()
	if r.ContentLength != 0 && g.answerAndClose(w, status, msg) {
		return
	}
	refuse(w, status, msg)
}

// rstAvoidance is how long a refused connection stays half-closed before
// it is closed, as net/http waits in the same case: long enough for the
// client, still sending its body, to read the answer before the reset
// that closing over unread data sends.
const rstAvoidance = 500 * time.Millisecond

// answerAndClose writes the refusal on the connection itself, then
// half-closes it at once and closes it after rstAvoidance, never reading
// the body. Closing it outright (what net/http does when it cannot drain
// a body) resets it over the unread body, and a client still sending may
// lose the answer with it. It reports false when the connection cannot be
// taken over (then the caller answers as usual).
func (g *Guard) answerAndClose(w http.ResponseWriter, status int, msg string) bool {
	h := w.Header().Clone()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	var body bytes.Buffer
	_ = json.NewEncoder(&body).Encode(apiclient.ErrorResponse{Error: msg})
	h.Set("Content-Type", "application/json")
	resp := &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: h, Close: true,
		ContentLength: int64(body.Len()), Body: io.NopCloser(&body)}
	_ = conn.SetWriteDeadline(time.Now().Add(g.lim.WriteTimeout))
	if resp.Write(buf) != nil || buf.Flush() != nil {
		_ = conn.Close()
		return true
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	time.AfterFunc(rstAvoidance, func() { _ = conn.Close() })
	return true
}

// Server returns an http.Server for h (a Handler) with the guard's
// timeouts and header limit; Listen hooks the connection limits in.
func (g *Guard) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: g.lim.ReadHeaderTimeout,
		MaxHeaderBytes:    g.lim.MaxHeaderBytes,
		ReadTimeout:       g.lim.ReadTimeout,
		WriteTimeout:      g.lim.WriteTimeout,
		IdleTimeout:       g.lim.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// Listen wraps l with the connection limits, and hooks their tracking into
// srv (from Server).
func (g *Guard) Listen(l net.Listener, srv *http.Server) net.Listener {
	cl := newConnLimiter(l, g)
	srv.ConnState = cl.connState
	return cl
}
