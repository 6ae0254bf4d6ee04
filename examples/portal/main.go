// Command portal is the web front of signpost's examples: a page with a
// time-format field and a formula field, and GET /time/{format} and
// GET /calc/{formula}, which it passes to instances of the "time" and
// "calc" services that it finds through DNS SRV with package discovery,
// sending the basic-auth credentials from TIME_USERNAME/TIME_PASSWORD and
// CALC_USERNAME/CALC_PASSWORD. When a service is missing or down it answers
// 503 with a JSON error naming it, and keeps serving.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/signpost-dns/signpost/discovery"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(logger); err != nil {
		logger.Error("portal stopped", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	listen := flag.String("listen", envOr("LISTEN_ADDR", ":8080"), "address to listen on (env LISTEN_ADDR)")
	dnsServer := flag.String("dns", envOr("SIGNPOST_DNS", "127.0.0.1:8053"), "DNS server host:port to find services with (env SIGNPOST_DNS)")
	zone := flag.String("zone", envOr("SIGNPOST_ZONE", "servicediscovery.internal"), "DNS zone of the services (env SIGNPOST_ZONE)")
	timeService := flag.String("time-service", envOr("TIME_SERVICE", "time"), "service name of the time service (env TIME_SERVICE)")
	calcService := flag.String("calc-service", envOr("CALC_SERVICE", "calc"), "service name of the calculator (env CALC_SERVICE)")
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, logger, *listen, h)
}

// serve runs an HTTP server on addr until ctx is done, then shuts it down.
func serve(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) error {
	srv := &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: time.Minute,
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
