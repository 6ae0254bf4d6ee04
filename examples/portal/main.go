// Command portal is the web front of signpost's examples: a page with a
// time-format field and a formula field, and GET /time/{format} and
// GET /calc/{formula}, which it passes to instances of the "time" and
// "calc" services that it finds through DNS SRV with package discovery,
// sending the basic-auth credentials from TIME_USERNAME/TIME_PASSWORD and
// CALC_USERNAME/CALC_PASSWORD. When a service is missing or down it answers
// 503 with a JSON error naming it, and keeps serving.
package main

import (
	"flag"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/signpost-dns/signpost/discovery"
	"github.com/signpost-dns/signpost/examples/internal/service"
)

// writeTimeout leaves the portal time to wait for a service (5 s) and
// answer.
const writeTimeout = 15 * time.Second

func main() {
	os.Exit(service.Run("portal", run))
}

func run(logger *slog.Logger) error {
	listen := service.ListenFlag(":8080")
	dnsServer := service.StringFlag("dns", "SIGNPOST_DNS", "127.0.0.1:8053", "DNS server host:port to find services with")
	zone := service.StringFlag("zone", "SIGNPOST_ZONE", "servicediscovery.internal", "DNS zone of the services")
	timeService := service.StringFlag("time-service", "TIME_SERVICE", "time", "service name of the time service")
	calcService := service.StringFlag("calc-service", "CALC_SERVICE", "calc", "service name of the calculator")
	flag.Parse()

	resolver := &discovery.Resolver{Server: *dnsServer, Zone: *zone, Logger: logger}
	transport := resolver.Transport()
	// A new connection, and so a new weighted pick, for every request: the
	// page then shows the traffic spread over the instances.
	transport.DisableKeepAlives = true
	h := newHandler(config{
		Client:  &http.Client{Transport: transport},
		Time:    backend{Service: *timeService, Username: os.Getenv("TIME_USERNAME"), Password: os.Getenv("TIME_PASSWORD")},
		Calc:    backend{Service: *calcService, Username: os.Getenv("CALC_USERNAME"), Password: os.Getenv("CALC_PASSWORD")},
		Timeout: 5 * time.Second,
		Logger:  logger,
	})
	logger.Info("finding services through DNS", "server", *dnsServer, "zone", *zone,
		"time", *timeService, "calc", *calcService)
	return service.ServeUntilSignal(logger, *listen, h, writeTimeout)
}
