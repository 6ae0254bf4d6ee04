package api

import (
	"net/http"
	"strings"

	"github.com/signpost-dns/signpost/internal/httpguard"
)

// Classify says what kind of request r is, for the limits of
// httpguard: which body limit applies, and which reads are watches or
// blocking queries that may stay open.
func Classify(r *http.Request) httpguard.Kind {
	p := r.URL.Path
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		if p == "/v1/watch" {
			return httpguard.Stream
		}
		if (p == "/v1/instances" || strings.HasPrefix(p, "/v1/services/")) && r.URL.Query().Get("index") != "" {
			return httpguard.Stream
		}
		return httpguard.Read
	case http.MethodPut:
		switch {
		case strings.HasPrefix(p, "/v1/instances/"):
			return httpguard.WriteInstance
		case strings.HasPrefix(p, "/v1/nodes/"):
			return httpguard.WriteNodeSet
		}
	}
	return httpguard.Write
}
