// Command calc is the calculator of signpost's examples: GET /calc/{formula}
// evaluates + - * / ^, parentheses, unary minus and decimals, and answers
// {"value": 24, "containerid": ..., "instanceid": ...}. GET /health needs no
// auth; everything else needs basic auth from CALC_USERNAME/CALC_PASSWORD.
package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/signpost-dns/signpost/examples/internal/service"
)

func main() {
	os.Exit(service.RunProtected("calc", "CALC", ":8081", func(s service.Settings, logger *slog.Logger) http.Handler {
		return newHandler(config{Settings: s, Logger: logger})
	}))
}
