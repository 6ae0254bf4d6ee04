// Command time is the time service of signpost's examples: GET /time/{format}
// formats the current time with a Go layout ("15:04 Jan 2") and answers
// {"value": "10:04 Mar 5", "containerid": ..., "instanceid": ...}.
// GET /health needs no auth; everything else needs basic auth from
// TIME_USERNAME/TIME_PASSWORD.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(logger); err != nil {
		logger.Error("time stopped", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	listen := flag.String("listen", envOr("LISTEN_ADDR", ":8081"), "address to listen on (env LISTEN_ADDR)")
	flag.Parse()
	cfg := config{
		ContainerID: containerID(),
		InstanceID:  envOr("INSTANCE_ID", "unknown"),
		Username:    os.Getenv("TIME_USERNAME"),
		Password:    os.Getenv("TIME_PASSWORD"),
		Logger:      logger,
	}
	if cfg.Username == "" || cfg.Password == "" {
		return errors.New("set TIME_USERNAME and TIME_PASSWORD: every endpoint but /health needs basic auth")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, logger, *listen, newHandler(cfg))
}

// serve runs an HTTP server on addr until ctx is done, then shuts it down.
func serve(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) error {
	srv := &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute,
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

// containerID is the host name, which Docker sets to the short container id.
func containerID() string {
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
