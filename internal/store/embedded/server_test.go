package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/httpguard"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	"github.com/signpost-dns/signpost/internal/store/embedded"
)

// startServer runs a server on the embedded store in dir, and a client.
//
// The test's many concurrent writes stand for many clients, but all come
// from 127.0.0.1: the per-client connection share is raised above them.
func startServer(t *testing.T, dir string) (*signposttest.Server, *apiclient.Client) {
	t.Helper()
	// 150 concurrent writes from this one client: above the default
	// share of connections per client (the tests are about the store).
	srv := signposttest.Start(t, server.Config{DataDir: dir, HTTPLimits: httpguard.Limits{MaxConnsPerClient: 256}})
	c := srv.Client(t)
	return srv, c
}

// TestBadWriteBesideGoodOnes is issue 12's "150 concurrent good writes
// all succeed beside a bad one", against a real server on loopback: the
// bad one is a node set with a 10,000-character node name (one of
// 40,000 no longer gets past the 16 KiB header limit) and no
// instances. It is refused with a 4xx that shows neither the database
// path nor another client's data, and leaves no lease behind.
func TestBadWriteBesideGoodOnes(t *testing.T) {
	dir := t.TempDir()
	_, c := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	badNode := strings.Repeat("n", 10000)

	const good = 150
	errs := make(chan error, good)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range good {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			in := registry.Instance{ID: fmt.Sprintf("good-%d", i), Service: "calc", Address: netip.MustParseAddr("10.1.2.3"), Port: uint16(1000 + i)}
			if _, err := c.Register(ctx, in); err != nil {
				errs <- err
			}
		}()
	}
	var badErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		_, badErr = c.ReplaceNode(ctx, badNode, 10*time.Second, nil)
	}()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a good write failed beside the bad one: %v", err)
	}
	var ae *apiclient.Error
	if !errors.As(badErr, &ae) || ae.Status/100 != 4 {
		t.Fatalf("the node set with a 10,000-character name: err = %.300v, want a 4xx", badErr)
	}
	msg := ae.ErrorResponse.Error
	if strings.Contains(msg, dir) || strings.Contains(msg, "good-") {
		t.Errorf("the bad write's error shows the data dir or another client's data: %.300q", msg)
	}
	t.Logf("bad node set: %d: %.200s", ae.Status, msg)

	all, err := c.Services(ctx)
	if err != nil || len(all) != 1 || all[0].Instances != good {
		t.Errorf("services after the writes = %+v, %v; want calc with %d instances", all, err, good)
	}
	leases, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.Node == badNode {
			t.Error("the refused node set holds a lease (listed in /v1/nodes)")
		}
	}
	if err := c.Heartbeat(ctx, badNode); !apiclient.IsStatus(err, 404) && !apiclient.IsStatus(err, 400) {
		t.Errorf("heartbeat of the refused node: err = %v, want 404 (no lease) or 400", err)
	}
}

// TestServerOnTruncatedStore: `signpost server` on a truncated
// signpost.db exits non-zero with one line that names the file and what to
// do, and no stack trace (bbolt panicked on it: "invalid freelist page").
func TestServerOnTruncatedStore(t *testing.T) {
	bin := signposttest.Binary(t)
	dir := t.TempDir()
	srv, c := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 100 {
		in := registry.Instance{ID: fmt.Sprintf("i-%d", i), Service: "calc", Address: netip.MustParseAddr("10.1.2.3"), Port: uint16(1000 + i)}
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	srv.Stop()
	path := filepath.Join(dir, embedded.FileName)
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}

	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "server", "--data-dir", dir, "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0")
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
		t.Fatalf("signpost server on a truncated store: %v (want a non-zero exit); stderr:\n%s", err, stderr.String())
	}
	out := stderr.String()
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, path) {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "restore") || !strings.Contains(errLines[0], "move it aside") {
		t.Errorf("want one line naming %s and what to do; stderr:\n%s", path, out)
	}
	if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
		t.Errorf("stderr shows a panic or a stack trace:\n%s", out)
	}
	t.Logf("exit %d: %s", ee.ExitCode(), strings.TrimSpace(out))
}
