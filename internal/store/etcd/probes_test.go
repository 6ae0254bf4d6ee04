package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// TestNoSpace: with etcd's NOSPACE alarm raised (its database full), a
// write gets at once an unavailable error that says what to do, Ping says
// the store is degraded (reads still answer, so a read alone would call
// it healthy), a heartbeat of a live lease still succeeds, and once the
// alarm is disarmed writes succeed again.
func TestNoSpace(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	cli := newClient(t, members[0].ClientURL())
	s := New(cli, Options{Log: quiet, Timeout: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in := testInst("a-1", 1)
	in.Node = "host-a"
	if _, err := s.ReplaceNode(ctx, "host-a", 5*time.Second, []registry.Instance{in}); err != nil {
		t.Fatal(err)
	}
	st, err := cli.Status(ctx, members[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	// The alarm a full backend raises, raised through etcd's API.
	if _, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: pb.AlarmType_NOSPACE,
	}); err != nil {
		t.Fatalf("raise NOSPACE: %v", err)
	}
	start := time.Now()
	_, err = s.Put(ctx, testInst("b-1", 2))
	if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "NOSPACE") {
		t.Errorf("put with NOSPACE: %v; want unavailable, naming the NOSPACE alarm", err)
	}
	t.Logf("put with NOSPACE answered in %s: %v", time.Since(start).Round(time.Millisecond), err)
	if err := s.Ping(ctx); !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "NOSPACE") {
		t.Errorf("ping with NOSPACE: %v; want the store reported unavailable, naming the alarm", err)
	}
	if err := s.KeepAlive(ctx, "host-a"); err != nil {
		t.Errorf("heartbeat of a live lease with NOSPACE: %v", err)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: st.Header.MemberId, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatalf("disarm: %v", err)
	}
	if _, err := s.Put(ctx, testInst("b-1", 2)); err != nil {
		t.Errorf("put once the alarm is disarmed: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("ping once the alarm is disarmed: %v", err)
	}
}

// TestReplaceNodeRacesExpiry: node sets renewed right as their 1 s etcd
// lease runs out. An acknowledged node set is there right after; once
// renewals stop, the lease and every instance go together.
func TestReplaceNodeRacesExpiry(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	cli := newClient(t, members[0].ClientURL())
	s := New(cli, Options{Log: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ttl = time.Second
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			node := fmt.Sprintf("n%d", g)
			for i := range 8 {
				set := []registry.Instance{testInst(fmt.Sprintf("%s-%d", node, i%3), g*10+i%3), testInst(node+"-fixed", g*10+5)}
				for j := range set {
					set[j].Node = node
				}
				if _, err := s.ReplaceNode(ctx, node, ttl, set); err != nil {
					done <- fmt.Errorf("replace node %s: %w", node, err)
					return
				}
				list, _, err := s.List(ctx)
				if err != nil {
					done <- err
					return
				}
				got := 0
				for _, in := range list {
					if in.Node == node && (in.ID == set[0].ID || in.ID == set[1].ID) {
						got++
					} else if in.Node == node {
						done <- fmt.Errorf("node %s right after its node set: %s still there", node, in.ID)
						return
					}
				}
				if got != 2 {
					done <- fmt.Errorf("node %s right after its node set was acknowledged: %d of its 2 instances", node, got)
					return
				}
				time.Sleep(ttl - 30*time.Millisecond + time.Duration(i%4)*20*time.Millisecond)
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, _, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leases, err := s.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 && len(leases) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("15s after the last renewal: %d instances and %d leases left", len(list), len(leases))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWritesRacingClose: writes in flight or sent after Close end at once
// with an unavailable error that says the store is closed, not after the
// whole budget with "etcd did not answer".
func TestWritesRacingClose(t *testing.T) {
	members := etcdtest.StartCluster(t, 1, 50*time.Millisecond, 500*time.Millisecond)
	s, err := Open(Options{Endpoints: []string{members[0].ClientURL()}, Log: quiet, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				if _, err := s.Put(context.Background(), testInst(fmt.Sprintf("w%d-%d", g, i%4), g)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		err := <-errs
		if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("a write racing Close: %v; want unavailable, saying the store is closed", err)
		}
	}
	if _, err := s.Put(context.Background(), testInst("after", 1)); !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("a write after Close: %v; want unavailable, saying the store is closed", err)
	}
}
