// Package service is the plumbing that signpost's example services (time,
// calc and portal) share: a JSON logger, flags with environment defaults,
// the container and instance ids they report, basic auth that leaves
// /health open, JSON answers, and an HTTP server that stops cleanly on
// SIGINT or SIGTERM.
//
// It is internal to the examples, which import nothing of signpost's own
// internal/ packages: only this package and the public discovery package.
package service

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// WriteTimeout is the write time-out of a service that answers by itself,
// as time and calc do. The portal, which waits for another service, allows
// more.
const WriteTimeout = 10 * time.Second

// NewLogger returns the logger every example uses: JSON to stderr.
func NewLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, nil))
}

// Run runs a service's run with the examples' logger and returns the
// process's exit code: 0, or 1 after logging "NAME stopped" with the error
// run returned. A command's main is os.Exit(service.Run("name", run)).
func Run(name string, run func(*slog.Logger) error) int {
	logger := NewLogger()
	if err := run(logger); err != nil {
		logger.Error(name+" stopped", "err", err)
		return 1
	}
	return 0
}

// Settings are what a service behind basic auth (time, calc) is started
// with.
type Settings struct {
	// Listen is the address to listen on.
	Listen string
	// ContainerID and InstanceID identify the instance; see the functions
	// ContainerID and InstanceID.
	ContainerID, InstanceID string
	// Username and Password protect every endpoint but /health.
	Username, Password string
}

// RunProtected is the whole of a service behind basic auth, such as time:
// with the examples' logger it reads its Settings (see ParseSettings),
// builds its handler with newHandler and serves it until SIGINT or SIGTERM.
// It returns the process's exit code as Run does.
func RunProtected(name, prefix, listen string, newHandler func(Settings, *slog.Logger) http.Handler) int {
	return Run(name, func(logger *slog.Logger) error {
		s, err := ParseSettings(prefix, listen)
		if err != nil {
			return err
		}
		return ServeUntilSignal(logger, s.Listen, newHandler(s, logger), WriteTimeout)
	})
}

// ParseSettings defines -listen (default from LISTEN_ADDR, else listen),
// parses the command line, and reads the ids and the credentials from
// PREFIX_USERNAME and PREFIX_PASSWORD (see Credentials), which it requires.
func ParseSettings(prefix, listen string) (Settings, error) {
	addr := ListenFlag(listen)
	flag.Parse()
	username, password, err := Credentials(prefix)
	if err != nil {
		return Settings{}, err
	}
	return Settings{
		Listen:      *addr,
		ContainerID: ContainerID(), InstanceID: InstanceID(),
		Username: username, Password: password,
	}, nil
}

// EnvOr returns the value of the environment variable key, or def when it
// is unset or empty.
func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// StringFlag defines a string flag on the default flag set whose default is
// the environment variable env, or def when env is unset or empty. The
// usage says which variable: usage + " (env ENV)".
func StringFlag(name, env, def, usage string) *string {
	return flag.String(name, EnvOr(env, def), usage+" (env "+env+")")
}

// ListenFlag defines -listen, the address to listen on, from LISTEN_ADDR or
// def.
func ListenFlag(def string) *string {
	return StringFlag("listen", "LISTEN_ADDR", def, "address to listen on")
}

// ContainerID is the host name, which Docker sets to the short container
// id: HOSTNAME, else the system's host name, else "unknown".
func ContainerID() string {
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// InstanceID is INSTANCE_ID (the container host, as the demo passes it), or
// "unknown".
func InstanceID() string {
	return EnvOr("INSTANCE_ID", "unknown")
}

// Credentials returns the username and password of a service from
// PREFIX_USERNAME and PREFIX_PASSWORD, such as TIME_USERNAME and
// TIME_PASSWORD for prefix "TIME". It fails when either is unset or empty.
func Credentials(prefix string) (username, password string, err error) {
	userKey, passKey := prefix+"_USERNAME", prefix+"_PASSWORD"
	username, password = os.Getenv(userKey), os.Getenv(passKey)
	if username == "" || password == "" {
		return "", "", fmt.Errorf("set %s and %s: every endpoint but /health needs basic auth", userKey, passKey)
	}
	return username, password, nil
}

// ErrorBody is the JSON answer {"error": "..."}.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteJSON answers with status and v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// Health answers {"status":"OK"}; it is the handler of GET /health.
func Health(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "OK"})
}

// Protect serves GET /health without auth and passes every other request
// to api behind basic auth (see BasicAuth).
func Protect(realm, username, password string, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", Health)
	mux.Handle("/", BasicAuth(realm, username, password, api))
	return mux
}

// BasicAuth lets a request through to next only with the right username
// and password, compared in constant time. Any other request gets 401 with
// a Basic challenge for realm and {"error":"authentication required"}.
func BasicAuth(realm, username, password string, next http.Handler) http.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(username)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
			WriteJSON(w, http.StatusUnauthorized, ErrorBody{Error: "authentication required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ServeUntilSignal is Serve until the process gets SIGINT or SIGTERM.
func ServeUntilSignal(logger *slog.Logger, addr string, h http.Handler, writeTimeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Serve(ctx, logger, addr, h, writeTimeout)
}

// Serve runs an HTTP server for h on addr, with writeTimeout and the
// examples' other time-outs, until ctx is done; then it shuts the server
// down, giving requests in flight 5 s to finish. It logs "listening" once
// it has started listening, and fails when it cannot listen.
func Serve(ctx context.Context, logger *slog.Logger, addr string, h http.Handler, writeTimeout time.Duration) error {
	srv := &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: writeTimeout, IdleTimeout: time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("listening", "addr", addr)
	select {
	case err := <-errc:
		return fmt.Errorf("listen on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
