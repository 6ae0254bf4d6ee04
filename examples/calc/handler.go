package main

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/signpost-dns/signpost/examples/internal/service"
)

// config is what the handler needs: who it is and whom it lets in.
type config struct {
	// Settings' ContainerID and InstanceID are reported in every answer;
	// its Username and Password protect every endpoint but /health.
	service.Settings
	Logger *slog.Logger
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
			service.WriteJSON(w, http.StatusBadRequest, body)
			return
		}
		service.WriteJSON(w, http.StatusOK, result{Value: v, ContainerID: cfg.ContainerID, InstanceID: cfg.InstanceID})
	})
	return service.Protect("calc", cfg.Username, cfg.Password, api)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
