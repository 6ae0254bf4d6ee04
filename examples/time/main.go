// Command time is the time service of signpost's examples: GET /time/{format}
// formats the current time with a Go layout ("15:04 Jan 2") and answers
// {"value": "10:04 Mar 5", "containerid": ..., "instanceid": ...}.
// GET /health needs no auth; everything else needs basic auth from
// TIME_USERNAME/TIME_PASSWORD.
package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/signpost-dns/signpost/examples/internal/service"
)

func main() {
	os.Exit(service.RunProtected("time", "TIME", ":8081", func(s service.Settings, logger *slog.Logger) http.Handler {
		return newHandler(config{Settings: s, Logger: logger})
	}))
}
