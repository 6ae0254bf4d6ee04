package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
)

// config is what the handler needs: who it is and whom it lets in.
type config struct {
	// ContainerID and InstanceID are reported in every answer.
	ContainerID, InstanceID string
	// Username and Password protect every endpoint but /health.
	Username, Password string
	Logger             *slog.Logger
}

// result is the JSON answer of /calc.
type result struct {
	Value       float64 `json:"value"`
	ContainerID string  `json:"containerid"`
	InstanceID  string  `json:"instanceid"`
}

// errorBody is the JSON answer to a bad request.
type errorBody struct {
	Error string `json:"error"`
	// Position is the 1-based character position of a formula error.
	Position int `json:"position,omitempty"`
}

// newHandler serves GET /health without auth and GET /calc/{formula}
// behind basic auth.
func newHandler(cfg config) http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /calc/{formula...}", func(w http.ResponseWriter, r *http.Request) {
		formula := r.PathValue("formula")
		v, err := evaluate(formula)
		if err != nil {
			body := errorBody{Error: err.Error()}
			var fe *FormulaError
			if errors.As(err, &fe) {
				body.Position = fe.Pos
			}
			cfg.Logger.InfoContext(r.Context(), "bad formula", "formula", truncate(formula, 80), "err", err)
			writeJSON(w, http.StatusBadRequest, body)
			return
		}
		writeJSON(w, http.StatusOK, result{Value: v, ContainerID: cfg.ContainerID, InstanceID: cfg.InstanceID})
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "OK"})
	})
	mux.Handle("/", basicAuth("calc", cfg.Username, cfg.Password, api))
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
