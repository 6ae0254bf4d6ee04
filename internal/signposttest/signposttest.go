// Package signposttest runs signpost in tests: a real server on random
// loopback ports inside the test process, and the signpost binary built
// once per test run for tests that need a process to kill.
package signposttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/server"
)

// Server is a signpost server running in a test.
type Server struct {
	*server.Server
	cancel  context.CancelFunc
	done    chan error
	stopped atomic.Bool
	t       testing.TB
}

// Start runs a server for cfg until the test ends (or Stop), and returns
// once it answers. Empty addresses become random loopback ports and an
// empty data dir a temporary one.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	if cfg.DNSAddr == "" {
		cfg.DNSAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("start signpost server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Server: srv, cancel: cancel, done: make(chan error, 1), t: t}
	go func() { s.done <- srv.Run(ctx) }()
	t.Cleanup(s.Stop)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := srv.Index().WaitSynced(wctx); err != nil {
		t.Fatalf("signpost server did not load its store: %v", err)
	}
	return s
}

// Client returns an API client of the server, without a token.
func (s *Server) Client(t testing.TB) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(s.URL(), "")
	if err != nil {
		t.Fatalf("API client of %s: %v", s.URL(), err)
	}
	return c
}

// Stop stops the server and waits for it; calling it again does nothing.
func (s *Server) Stop() {
	if s.stopped.Swap(true) {
		return
	}
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("signpost server: %v", err)
		}
	case <-time.After(10 * time.Second):
		s.t.Errorf("signpost server did not stop within 10s")
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of cmd/signpost, built once per test run.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "signpost-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "signpost")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, "github.com/signpost-dns/signpost/cmd/signpost").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build cmd/signpost: %w: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
