// Command calc is the calculator of signpost's examples: GET /calc/{formula}
// evaluates + - * / ^, parentheses, unary minus and decimals, and answers
// {"value": 24, "containerid": ..., "instanceid": ...}. GET /health needs no
// auth; everything else needs basic auth from CALC_USERNAME/CALC_PASSWORD.
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
		logger.Error("calc stopped", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	listen := flag.String("listen", envOr("LISTEN_ADDR", ":8081"), "address to listen on (env LISTEN_ADDR)")
	flag.Parse()
	cfg := config{
		ContainerID: containerID(),
		InstanceID:  envOr("INSTANCE_ID", "unknown"),
		Username:    os.Getenv("CALC_USERNAME"),
		Password:    os.Getenv("CALC_PASSWORD"),
		Logger:      logger,
	}
	if cfg.Username == "" || cfg.Password == "" {
		return errors.New("set CALC_USERNAME and CALC_PASSWORD: every endpoint but /health needs basic auth")
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
