package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/fleet/check"
	"github.com/signpost-dns/signpost/internal/fleet/history"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

func TestMain(m *testing.M) {
	RunRole()
	os.Exit(m.Run())
}

// The fleet's timings: short leases and staleness bounds, so that every
// fault's effect shows within a short run.
const (
	fleetTTL        = 3 * time.Second
	fleetStaleAfter = 2 * time.Second
	fleetMaxStale   = 3 * time.Second
)

// bounds are the documented bounds the checker holds the run to
// (docs/guarantees.md).
var bounds = history.Bounds{
	TTL: fleetTTL,
	// A leader change renews every lease for a whole TTL (etcd#9395),
	// then the server's watch delivers the expiry.
	ExpiryLate: fleetTTL + 2*time.Second,
	Converge:   time.Second,
	Stale:      time.Second,
	// A server without contact for --stale-after says so with TTL 1;
	// its probes run every second.
	StaleTTL: fleetStaleAfter + 2*time.Second,
	// A server on the minority side of a partition relists through a
	// member that rejoins the cluster (1.2 s seen on Debian's 3.4), and
	// after leader-minority on 3.4 a server was stale 3.2 s after the
	// heal.
	ConvergeSaid: 5 * time.Second,
}

// startFleet starts the hosts, etcd (bin: DebianEtcd, or "" for the
// embedded 3.7) and the servers, and makes the nodes.
func startFleet(t *testing.T, etcdBin string) *Fleet {
	Skip(t)
	bin := signposttest.Binary(t)
	dir := t.TempDir()
	if out := os.Getenv("SIGNPOST_FLEET_OUT"); out != "" {
		// Keep the hosts' logs beside the history.
		dir = filepath.Join(out, t.Name()+"-"+time.Now().UTC().Format("150405"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &Fleet{Net: NewNet(t), TTL: fleetTTL, MaxStale: fleetMaxStale}
	var eh, sh, ah []*Host
	for _, n := range []string{"e1", "e2", "e3"} {
		eh = append(eh, f.Net.AddHost(n))
	}
	for _, n := range []string{"s1", "s2"} {
		sh = append(sh, f.Net.AddHost(n))
	}
	for _, n := range []string{"a1", "a2", "a3", "a4"} {
		ah = append(ah, f.Net.AddHost(n))
	}
	f.Client = f.Net.AddHost("client")
	f.Etcd = StartEtcd(t, dir, etcdBin, eh)
	cli, err := EtcdClient(f.Client, f.Etcd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	f.EtcdCli = cli
	WaitEtcd(t, cli, f.Etcd)
	f.Servers = StartServers(t, dir, bin, sh, f.Etcd, ServerOptions{
		LeaseTTL: fleetTTL, StaleAfter: fleetStaleAfter, MaxStale: fleetMaxStale, EtcdTimeout: 2 * time.Second,
	})
	WaitHealthy(t, f.Client, f.Servers, 60*time.Second)
	// a1 runs the real agent on a fake Docker engine; the others are
	// simulated nodes on the agent's server backend.
	for i, h := range ah {
		if i == 0 {
			f.Agents = append(f.Agents, StartAgent(t, dir, bin, h, h.Name, f.Servers, i%len(f.Servers), fleetTTL))
			continue
		}
		n, err := NewNode(h, h.Name, f.Servers, i%len(f.Servers), fleetTTL)
		if err != nil {
			t.Fatal(err)
		}
		f.Agents = append(f.Agents, n)
	}
	return f
}

// seed is SIGNPOST_FLEET_SEED, or a new one; extra is
// SIGNPOST_FLEET_DURATION of random faults after the fixed ones.
func seedAndExtra(t *testing.T) (int64, time.Duration) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("SIGNPOST_FLEET_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("SIGNPOST_FLEET_SEED=%q: want an integer: %v", s, err)
		}
		seed = v
	}
	extra := 10 * time.Second
	if s := os.Getenv("SIGNPOST_FLEET_DURATION"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SIGNPOST_FLEET_DURATION=%q: want a duration such as 5m: %v", s, err)
		}
		extra = v
	}
	return seed, extra
}

// runFleet drives traffic through f while the nemesis runs faults, and
// returns the whole history.
func runFleet(t *testing.T, f *Fleet, seed int64, scenario string, faults []Fault) *history.History {
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	rec := NewRecorder(seed, scenario, bounds)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	truth := NewTruth(ctx, f.EtcdCli, rec)
	tr := &Traffic{Rec: rec, Client: f.Client, Servers: f.Servers, Services: []string{"calc", "time"}}
	var wg sync.WaitGroup
	spawn := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }
	for i, a := range f.Agents {
		r := rand.New(rand.NewPCG(uint64(seed), uint64(100+i)))
		switch a := a.(type) {
		case *Node:
			spawn(func() { a.Run(ctx, tr, r, 3, 4*time.Second) })
		case *AgentProc:
			spawn(func() { a.Run(ctx, tr, r, 3, 4*time.Second, t.Logf) })
		}
	}
	for i := range 2 {
		r := rand.New(rand.NewPCG(uint64(seed), uint64(200+i)))
		spawn(func() { tr.Writer(ctx, "w"+strconv.Itoa(i+1), r, 150*time.Millisecond) })
	}
	for i, s := range f.Servers {
		spawn(func() { tr.Reader(ctx, s, 100*time.Millisecond) })
		spawn(func() { tr.Asker(ctx, s, 50*time.Millisecond) })
		spawn(func() { tr.Watcher(ctx, "watch-"+strconv.Itoa(i+1), s) })
	}
	sleep(ctx, 3*time.Second)
	if err := Nemesis(ctx, f, rec, rng, faults, 3*time.Second, t.Logf); err != nil {
		t.Error(err)
	}
	// Quiet at the end, for the last convergence check.
	sleep(ctx, 4*time.Second)
	rec.Stop()
	cancel()
	wg.Wait()
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	changes, err := truth.Read(rctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range f.Servers {
		names = append(names, s.Name)
	}
	return rec.History(names, changes)
}

// saveHistory keeps the history where a failed run can be read again.
func saveHistory(t *testing.T, h *history.History) string {
	dir := os.Getenv("SIGNPOST_FLEET_OUT")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
	}
	p := filepath.Join(dir, "fleet-history-"+strconv.FormatInt(h.Seed, 10)+".json")
	if err := h.Save(p); err != nil {
		t.Error(err)
	}
	return p
}

func summarize(t *testing.T, h *history.History) {
	counts := map[history.Kind]map[history.Outcome]int{}
	for _, o := range h.Ops {
		if counts[o.Kind] == nil {
			counts[o.Kind] = map[history.Outcome]int{}
		}
		counts[o.Kind][o.Outcome]++
	}
	rcodes := map[int]int{}
	for _, a := range h.DNS {
		if a.Got == 0 {
			rcodes[-1]++
		} else {
			rcodes[a.Rcode]++
		}
	}
	t.Logf("seed %d: ops %v; DNS answers by rcode (-1: none) %v; watch events %d; store changes %d; faults %d",
		h.Seed, counts, rcodes, len(h.Watches), len(h.Truth), len(h.Faults))
}

func testFleet(t *testing.T, etcdBin string) {
	seed, extra := seedAndExtra(t)
	f := startFleet(t, etcdBin)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	faults := Schedule(f, rng, extra)
	t.Logf("seed %d (SIGNPOST_FLEET_SEED=%d replays it), %d faults", seed, seed, len(faults))
	h := runFleet(t, f, seed, t.Name(), faults)
	p := saveHistory(t, h)
	summarize(t, h)
	rep, err := check.Check(h, check.Options{Dir: filepath.Dir(p)})
	if err != nil {
		t.Error(err)
	}
	if !rep.OK() {
		var sched []string
		for _, fl := range h.Faults {
			sched = append(sched, fmt.Sprintf("%s on %s %.1f-%.1fs", fl.Kind, fl.Target, float64(fl.Start)/1e9, float64(fl.End)/1e9))
		}
		t.Errorf("the fleet broke a promise (seed %d; SIGNPOST_FLEET_SEED=%d replays its faults; history %s, report %s):\nfaults: %s\n%s",
			seed, seed, p, filepath.Join(filepath.Dir(p), "report.txt"), strings.Join(sched, "; "), rep)
		return
	}
	t.Logf("history %s: %s", p, rep)
}

// TestFleet runs the fleet on the embedded etcd (3.7): every kind of
// fault once, then random ones, and checks the whole history.
func TestFleet(t *testing.T) { testFleet(t, "") }

// TestFleetDebianEtcd runs the same fleet on Debian's etcd 3.4.
func TestFleetDebianEtcd(t *testing.T) { testFleet(t, DebianEtcd) }
