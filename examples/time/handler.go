package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/signpost-dns/signpost/examples/internal/service"
)

// maxLayoutBytes is the longest layout /time accepts.
const maxLayoutBytes = 256

// config is what the handler needs: who it is, whom it lets in, and a clock.
type config struct {
	// Settings' ContainerID and InstanceID are reported in every answer;
	// its Username and Password protect every endpoint but /health.
	service.Settings
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
			service.WriteJSON(w, http.StatusBadRequest, service.ErrorBody{Error: `empty format: give a Go time layout, such as "15:04 Jan 2"`})
			return
		case len(layout) > maxLayoutBytes:
			service.WriteJSON(w, http.StatusBadRequest, service.ErrorBody{Error: fmt.Sprintf("format is %d bytes long, the limit is %d", len(layout), maxLayoutBytes)})
			return
		}
		service.WriteJSON(w, http.StatusOK, result{Value: now().Format(layout), ContainerID: cfg.ContainerID, InstanceID: cfg.InstanceID})
	})
	return service.Protect("time", cfg.Username, cfg.Password, api)
}
