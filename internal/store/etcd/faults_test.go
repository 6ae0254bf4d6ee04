package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
	etcdstore "github.com/signpost-dns/signpost/internal/store/etcd"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// outcome is what one write through the API got.
type outcome struct {
	kind   string // "write" or "heartbeat"
	phase  string // when it was sent
	end    string // when it was answered
	status int    // 200 or the error's HTTP status; 0: no HTTP answer
	msg    string
	took   time.Duration
}

// TestMemberLeaderQuorumLossEtcd34 is issue 11's etcd "done when", run against
// Debian's etcd 3.4 (processes, killed with SIGKILL): three members, two signpost servers, writers through
// both. One member lost, then the leader, then quorum: no 500 ever; every
// write succeeds or gets a 503 whose message says what happened; writes
// that meet a leader change within their budget succeed.
func TestMemberLeaderQuorumLossEtcd34(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 3, 100*time.Millisecond, time.Second)
	memberLeaderQuorumLoss(t, members)
}

// TestMemberLeaderQuorumLossEtcd37 is the same with the embedded etcd 3.7
// server, whose members are killed with HardStop (no leadership handover).
func TestMemberLeaderQuorumLossEtcd37(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	memberLeaderQuorumLoss(t, members)
}

func memberLeaderQuorumLoss(t *testing.T, members []*etcdtest.Member) {
	const budget = 3 * time.Second
	eps := etcdtest.Endpoints(members)
	var clients []*apiclient.Client
	for range 2 {
		srv := signposttest.Start(t, server.Config{StoreKind: "etcd", Etcd: etcdstore.Options{Endpoints: eps, Timeout: budget}})
		c := srv.Client(t)
		clients = append(clients, c)
	}

	var mu sync.Mutex
	phase := "all members up"
	var results []outcome
	setPhase := func(p string) {
		mu.Lock()
		phase = p
		mu.Unlock()
		t.Logf("phase: %s", p)
	}
	ctx, stop := context.WithCancel(context.Background())
	// An agent's node, heartbeated by worker 4 through both servers: its
	// lease must never be lost (404), whatever the cluster goes through.
	const node = "host-a"
	if _, err := clients[0].ReplaceNode(ctx, node, 10*time.Second, []registry.Instance{{ID: "a-1", Service: "calc", Address: netip.MustParseAddr("10.9.9.1"), Port: 1}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 2000 && ctx.Err() == nil; n++ {
				in := registry.Instance{
					ID: fmt.Sprintf("w%d-%d", w, n%8), Service: "calc",
					Address: netip.AddrFrom4([4]byte{10, 9, byte(w), byte(n % 8)}), Port: uint16(10000 + n),
				}
				mu.Lock()
				p := phase
				mu.Unlock()
				start := time.Now()
				wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var err error
				kind := "write"
				if w == 4 {
					kind = "heartbeat"
					err = clients[n%2].Heartbeat(wctx, node)
				} else {
					_, err = clients[(w+n)%2].Register(wctx, in)
				}
				cancel()
				mu.Lock()
				o := outcome{kind: kind, phase: p, end: phase, status: 200, took: time.Since(start)}
				mu.Unlock()
				var ae *apiclient.Error
				switch {
				case err == nil:
				case errors.As(err, &ae):
					o.status, o.msg = ae.Status, ae.ErrorResponse.Error
				default:
					o.status, o.msg = 0, err.Error()
				}
				mu.Lock()
				results = append(results, o)
				mu.Unlock()
				if w == 4 {
					time.Sleep(200 * time.Millisecond)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	finish := func() {
		stop()
		wg.Wait()
	}
	defer finish()
	// run lets writes go on in the current phase for d.
	run := func(d time.Duration) { time.Sleep(d) }
	// okAgain waits until a write through each server succeeds.
	okAgain := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for i, c := range clients {
			for {
				wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.Register(wctx, registry.Instance{ID: "probe", Service: "probe", Address: netip.MustParseAddr("10.9.9.9"), Port: uint16(1 + i)})
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: writes through server %d still fail after 60s: %v", what, i+1, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}

	run(2 * time.Second)

	leader := etcdtest.Leader(t, members)
	if leader < 0 {
		t.Fatal("no etcd leader")
	}
	follower := (leader + 1) % 3
	setPhase("one follower lost")
	members[follower].Kill()
	run(3 * time.Second)
	members[follower].Start(t)
	setPhase("follower back")
	okAgain("follower back")
	run(2 * time.Second)

	leader = etcdtest.Leader(t, members)
	if leader < 0 {
		t.Fatal("no etcd leader after the follower came back")
	}
	setPhase("leader lost")
	members[leader].Kill()
	run(4 * time.Second)

	setPhase("quorum lost")
	second := (leader + 1) % 3
	members[second].Kill()
	run(2*budget + time.Second)

	setPhase("members restarting")
	members[second].Start(t)
	members[leader].Start(t)
	okAgain("quorum back")
	setPhase("quorum back")
	run(2 * time.Second)
	finish()

	mu.Lock()
	defer mu.Unlock()
	type tally struct {
		ok, unavailable, other int
		lateUnavailable        int // 503s of writes sent in this phase, answered in the next
		maxOK                  time.Duration
		msgs                   map[string]int
	}
	var order []string
	byPhase := map[string]*tally{}
	for _, o := range results {
		tl := byPhase[o.phase]
		if tl == nil {
			tl = &tally{msgs: map[string]int{}}
			byPhase[o.phase] = tl
			order = append(order, o.phase)
		}
		switch o.status {
		case 200:
			tl.ok++
			tl.maxOK = max(tl.maxOK, o.took)
			continue
		case 503:
			if o.end == o.phase {
				tl.unavailable++
			} else {
				tl.lateUnavailable++
			}
		default:
			tl.other++
			t.Errorf("%s: a %s got %d (want 200 or 503) after %s: %s", o.phase, o.kind, o.status, o.took, o.msg)
			continue
		}
		// The message names etcd and says what happened: "did not answer
		// within" only when the write did wait that long.
		if !strings.Contains(o.msg, "etcd") || !strings.Contains(o.msg, registry.ErrUnavailable.Error()) {
			t.Errorf("%s: 503 without a message naming etcd as unavailable: %q", o.phase, o.msg)
		}
		if strings.Contains(o.msg, "did not answer within") && o.took < budget*9/10 {
			t.Errorf("%s: 503 after %s says it waited for the %s budget: %q", o.phase, o.took, budget, o.msg)
		}
		tl.msgs[shape(o.msg)]++
	}
	for _, p := range order {
		tl := byPhase[p]
		var msgs []string
		for m, n := range tl.msgs {
			msgs = append(msgs, fmt.Sprintf("%dx %q", n, m))
		}
		sort.Strings(msgs)
		t.Logf("%-18s ok=%d (slowest %s) 503=%d (+%d answered in the next phase) other=%d %s", p, tl.ok, tl.maxOK.Round(time.Millisecond), tl.unavailable, tl.lateUnavailable, tl.other, strings.Join(msgs, "; "))
	}
	for _, p := range []string{"all members up", "one follower lost", "follower back", "leader lost", "quorum back"} {
		tl := byPhase[p]
		if tl == nil || tl.ok == 0 {
			t.Errorf("%s: no write succeeded", p)
			continue
		}
		if tl.unavailable > 0 {
			t.Errorf("%s: %d writes got 503 though two members were up (%v)", p, tl.unavailable, tl.msgs)
		}
	}
	if tl := byPhase["quorum lost"]; tl == nil || tl.unavailable == 0 {
		t.Error("quorum lost: no write got 503")
	}
	if !slices.Contains(order, "quorum back") {
		t.Error("no write after quorum came back")
	}
}

// shape is a 503 message without what differs between writes (the
// instance, the timings), to count messages by kind.
func shape(msg string) string {
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "put instance") {
		msg = msg[i+2:]
	}
	var b strings.Builder
	digits := false
	for _, r := range msg {
		if r >= '0' && r <= '9' || r == '.' && digits {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	return b.String()
}
