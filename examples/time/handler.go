package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// maxLayoutBytes is the longest layout /time accepts.
const maxLayoutBytes = 256

// config is what the handler needs: who it is, whom it lets in, and a clock.
type config struct {
	// ContainerID and InstanceID are reported in every answer.
	ContainerID, InstanceID string
	// Username and Password protect every endpoint but /health.
	Username, Password string
	// Now is the clock; time.Now if nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// result is the JSON answer of /time.
type result struct {
	Value       string `json:"value"`
	ContainerID string `json:"containerid"`
	InstanceID  string `json:"instanceid"`
}

// errorBody is the JSON answer to a bad request.
type errorBody struct {
	Error string `json:"error"`
}

// newHandler serves GET /health without auth and GET /time/{format}
// behind basic auth. format is a Go time layout such as "15:04 Jan 2".
func newHandler(cfg config) http.Handler {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	api := http.NewServeMux()
	api.HandleFunc("GET /time/{format...}", func(w http.ResponseWriter, r *http.Request) {
		layout := r.PathValue("format")
		switch {
		case layout == "":
			writeJSON(w, http.StatusBadRequest, errorBody{Error: `empty format: give a Go time layout, such as "15:04 Jan 2"`})
			return
		case len(layout) > maxLayoutBytes:
			writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("format is %d bytes long, the limit is %d", len(layout), maxLayoutBytes)})
			return
		}
		writeJSON(w, http.StatusOK, result{Value: now().Format(layout), ContainerID: cfg.ContainerID, InstanceID: cfg.InstanceID})
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "OK"})
	})
	mux.Handle("/", basicAuth("time", cfg.Username, cfg.Password, api))
	return mux
}

// basicAuth lets a request through to next only with the right username
// and password, compared in constant time.
func basicAuth(realm, username, password string, next http.Handler) http.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(username)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "authentication required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
