package etcdstore_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	etcdstore "github.com/signpost-dns/signpost/internal/store/etcd"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// TestWatchLeavesAHaltedMember: the etcd member that a signpost server's
// watch is on is halted (SIGSTOP: its connections stay open, nothing is
// answered, as on a hung machine). The server notices that its watch went
// silent and watches through another member, so that every write through
// it is still acknowledged only once the server answers with it, and
// writes through another server reach it.
func TestWatchLeavesAHaltedMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 3, 100*time.Millisecond, time.Second)
	eps := etcdtest.Endpoints(members)
	srv := signposttest.Start(t, server.Config{StoreKind: "etcd", Etcd: etcdstore.Options{Endpoints: eps}})
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	inst := func(svc string, n int) registry.Instance {
		return registry.Instance{ID: fmt.Sprintf("%s-%d", svc, n), Service: svc, Address: netip.AddrFrom4([4]byte{10, 7, 0, byte(n)}), Port: uint16(1000 + n)}
	}
	if _, err := c.Register(ctx, inst("first", 0)); err != nil {
		t.Fatal(err)
	}

	// The member the server's watch is on: the one with a watch stream.
	on := -1
	for i, m := range members {
		if n := watchStreams(ctx, t, m.ClientURL()); n > 0 {
			if on >= 0 {
				t.Fatalf("watch streams on members %d and %d; the server has one watch", on, i)
			}
			on = i
		}
	}
	if on < 0 {
		t.Fatal("no etcd member has a watch stream")
	}
	others := slices.Delete(slices.Clone(eps), on, on+1)
	// A second server, on the other members only, as another host would be.
	srv2 := signposttest.Start(t, server.Config{StoreKind: "etcd", Etcd: etcdstore.Options{Endpoints: others}})
	c2 := srv2.Client(t)
	members[on].Pause(t)
	t.Cleanup(func() { members[on].Resume(t) })
	t.Logf("halted member %s, which the server's watch was on", members[on].Name())

	// visible says whether the server answers with id now.
	visible := func(svc, id string) bool {
		resp, err := c.Service(ctx, svc, 0, 0)
		if err != nil && !apiclient.IsStatus(err, 404) {
			t.Fatalf("GET service %s: %v", svc, err)
		}
		return slices.ContainsFunc(resp.Instances, func(in registry.Instance) bool { return in.ID == id })
	}
	var slowest time.Duration
	for n := range 8 {
		in := inst("through-it", n)
		start := time.Now()
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatalf("write %d with a member halted: %v", n, err)
		}
		slowest = max(slowest, time.Since(start))
		if !visible(in.Service, in.ID) {
			t.Fatalf("write %d (%s) was acknowledged %s after it was sent, but the server does not answer with it: acknowledged before its index caught up", n, in.ID, time.Since(start).Round(time.Millisecond))
		}
	}
	// A write through the other server reaches this one.
	in := inst("through-other", 1)
	start := time.Now()
	if _, err := c2.Register(ctx, in); err != nil {
		t.Fatalf("write through the other server: %v", err)
	}
	for !visible(in.Service, in.ID) {
		if ctx.Err() != nil {
			t.Fatalf("a write through the other server never reached this one")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("member halted: slowest write through the server %s; a write through the other server reached it in %s",
		slowest.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// watchStreams reads the number of watch streams open on an etcd member
// from its metrics.
func watchStreams(ctx context.Context, t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("etcd metrics at %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_debugging_mvcc_watch_stream_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("etcd metrics at %s: %q: %v", url, sc.Text(), err)
			}
			return int(n)
		}
	}
	t.Fatalf("etcd metrics at %s: no etcd_debugging_mvcc_watch_stream_total", url)
	return 0
}
