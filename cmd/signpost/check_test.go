package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestCheckDryRun runs `signpost check --dry-run --failures 1` against a
// server holding an endpoint nobody listens on: the output says "would
// remove", never "removed", and the endpoint is still registered.
func TestCheckDryRun(t *testing.T) {
	srv, c := serverWithDeadEndpoint(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := commands["check"].run(ctx, []string{"--server=" + srv.URL(), "--dry-run", "--failures", "1", "--timeout", "1s", "--log-level", "error"}, &out); err != nil {
		t.Fatalf("check --dry-run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 would remove") || !strings.Contains(out.String(), "would remove db-1 (db") || strings.Contains(out.String(), "removed") {
		t.Errorf("check --dry-run printed:\n%s\nwant \"would remove\" and no \"removed\"", out.String())
	}
	list, _, err := c.Instances(ctx, "")
	if err != nil || len(list) != 1 {
		t.Fatalf("after check --dry-run the server holds %v (%v), want db-1", list, err)
	}
}

// TestCheckSweeps runs `signpost check --sweeps 3 --interval 10ms
// --failures 3` against an endpoint nobody listens on: three summaries,
// the endpoint removed by the third; --sweeps without --interval is a
// usage error.
func TestCheckSweeps(t *testing.T) {
	srv, c := serverWithDeadEndpoint(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := commands["check"].run(ctx, []string{"--server=" + srv.URL(), "--sweeps", "2", "--log-level", "error"}, &out); err == nil || !strings.Contains(err.Error(), "--sweeps") {
		t.Errorf("--sweeps without --interval: %v, want a usage error naming --sweeps", err)
	}
	if err := commands["check"].run(ctx, []string{"--server=" + srv.URL(), "--sweeps", "3", "--interval", "10ms", "--failures", "3", "--timeout", "1s", "--log-level", "error"}, &out); err != nil {
		t.Fatalf("check --sweeps 3: %v\n%s", err, out.String())
	}
	if got := strings.Count(out.String(), "checked 1:"); got != 3 || !strings.Contains(out.String(), "1 removed\nremoved db-1") {
		t.Errorf("check --sweeps 3 printed:\n%s\nwant three summaries, db-1 removed by the third", out.String())
	}
	if list, _, err := c.Instances(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("after check --sweeps 3 the server holds %v (%v), want nothing", list, err)
	}
}

// serverWithDeadEndpoint starts a server holding db-1, an endpoint nobody
// listens on, and returns it with a client of it.
func serverWithDeadEndpoint(t *testing.T) (*signposttest.Server, *apiclient.Client) {
	t.Helper()
	srv := signposttest.Start(t, server.Config{})
	c := srv.Client(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	if _, err := c.Register(context.Background(), registry.Instance{ID: "db-1", Service: "db", Address: netip.MustParseAddr("127.0.0.1"), Port: port}); err != nil {
		t.Fatal(err)
	}
	return srv, c
}
