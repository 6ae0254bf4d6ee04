package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestBadWriteBesideGoodOnes is issue 12's "150 concurrent good writes
// all succeed beside a bad one", against a real server on loopback: the
// bad one is a node set with a 40,000-character node name and no
// instances. It is refused with a 4xx that shows neither the database
// path nor another client's data, and leaves no lease behind.
func TestBadWriteBesideGoodOnes(t *testing.T) {
	dir := t.TempDir()
	srv := signposttest.Start(t, server.Config{DataDir: dir})
	c, err := apiclient.New(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	badNode := strings.Repeat("n", 40000)

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
		t.Fatalf("the node set with a 40,000-character name: err = %v, want a 4xx", badErr)
	}
	msg := ae.ErrorResponse.Error
	if strings.Contains(msg, dir) || strings.Contains(msg, "good-") || len(msg) > 1000 {
		t.Errorf("the bad write's error shows the data dir, another client's data, or its whole input (%d bytes): %.300q", len(msg), msg)
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
