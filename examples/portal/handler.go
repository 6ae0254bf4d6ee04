package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/signpost-dns/signpost/discovery"
	"github.com/signpost-dns/signpost/examples/internal/service"
)

//go:embed static/index.html
var static embed.FS

// maxBackendBody is the most of a backend's answer the portal passes on.
const maxBackendBody = 64 << 10

// backend is a service the portal calls, and the credentials it sends.
type backend struct {
	// Service is the name to look up in DNS, such as "calc".
	Service            string
	Username, Password string
}

// config is what the portal's handler needs.
type config struct {
	// Client sends the requests to the services; its transport must
	// resolve the host of "http://calc/..." as a service, as
	// discovery.Resolver.Transport does.
	Client     *http.Client
	Time, Calc backend
	// Timeout bounds each call to a service; 5 s if zero.
	Timeout time.Duration
	Logger  *slog.Logger
}

// errorBody is the JSON answer when a service cannot answer.
type errorBody struct {
	Error   string `json:"error"`
	Service string `json:"service"`
}

// newHandler serves the page at /, GET /health, and proxies
// GET /time/{format} and GET /calc/{formula} to the services.
func newHandler(cfg config) http.Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, "static/index.html")
	})
	mux.HandleFunc("GET /health", service.Health)
	mux.HandleFunc("GET /time/{format...}", func(w http.ResponseWriter, r *http.Request) {
		proxy(w, r, cfg, cfg.Time, "/time/", r.PathValue("format"))
	})
	mux.HandleFunc("GET /calc/{formula...}", func(w http.ResponseWriter, r *http.Request) {
		proxy(w, r, cfg, cfg.Calc, "/calc/", r.PathValue("formula"))
	})
	return mux
}

// proxy asks b for prefix+arg and passes its answer on. When the service
// cannot be found or reached it answers 503 with a JSON error naming it.
func proxy(w http.ResponseWriter, r *http.Request, cfg config, b backend, prefix, arg string) {
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout)
	defer cancel()
	target := "http://" + b.Service + prefix + url.PathEscape(arg)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		service.WriteJSON(w, http.StatusBadRequest, errorBody{Error: err.Error(), Service: b.Service})
		return
	}
	if b.Username != "" || b.Password != "" {
		req.SetBasicAuth(b.Username, b.Password)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		msg := describe(b.Service, err)
		cfg.Logger.WarnContext(ctx, "service call failed", "service", b.Service, "err", err)
		service.WriteJSON(w, http.StatusServiceUnavailable, errorBody{Error: msg, Service: b.Service})
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBackendBody))
	if err != nil {
		service.WriteJSON(w, http.StatusBadGateway, errorBody{Error: fmt.Sprintf("service %q: reading its answer: %v", b.Service, err), Service: b.Service})
		return
	}
	if resp.StatusCode == http.StatusUnauthorized {
		cfg.Logger.ErrorContext(ctx, "service rejected the portal's credentials", "service", b.Service)
		service.WriteJSON(w, http.StatusBadGateway, errorBody{
			Error:   fmt.Sprintf("service %q rejected the portal's credentials: check the portal's username and password for it", b.Service),
			Service: b.Service,
		})
		return
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	w.Write(body) //nolint:errcheck // the client went away
}

// describe says in one sentence why service could not answer.
func describe(service string, err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // drop the "Get http://calc/..." prefix
	}
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return fmt.Sprintf("no instance of service %q is registered (%v)", service, err)
	case errors.Is(err, discovery.ErrUnreachable):
		return fmt.Sprintf("cannot reach the DNS server to find service %q (%v)", service, err)
	case errors.Is(err, discovery.ErrUnavailable):
		return fmt.Sprintf("every instance of service %q is down (%v)", service, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("service %q did not answer in time", service)
	}
	return fmt.Sprintf("service %q could not answer (%v)", service, err)
}
