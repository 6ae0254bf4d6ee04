package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// Fleet is everything a fault can act on.
type Fleet struct {
	Net     *Net
	Etcd    []*Member
	Servers []*Server
	// Agents are the agent hosts' agents, simulated or real.
	Agents  []Agent
	Client  *Host
	EtcdCli *clientv3.Client
	TTL     time.Duration
	// MaxStale is the servers' --max-stale.
	MaxStale time.Duration
}

// Fault is one kind of fault: Inject starts it and returns what it hit,
// the servers whose answers it may make stale, and how to heal it.
type Fault struct {
	Name   string
	Inject func(ctx context.Context, f *Fleet, rng *rand.Rand) (hit []string, heal func() error, err error)
	// Hold is how long the fault lasts before the heal.
	Hold func(f *Fleet) time.Duration
}

func fixed(d time.Duration) func(*Fleet) time.Duration {
	return func(*Fleet) time.Duration { return d }
}

func serverNames(f *Fleet) []string {
	var out []string
	for _, s := range f.Servers {
		out = append(out, s.Name)
	}
	return out
}

func etcdHosts(f *Fleet, except int) []*Host {
	var out []*Host
	for i, m := range f.Etcd {
		if i != except {
			out = append(out, m.Host)
		}
	}
	return out
}

// Faults are the nemesis's kinds of fault, each healed before the next.
var Faults = []Fault{
	{
		// An agent host cut off from everything for longer than its
		// lease: its instances must go, no earlier than the lease allows.
		Name: "cut-host",
		Hold: func(f *Fleet) time.Duration { return f.TTL*2 + f.TTL/2 },
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			h := f.Agents[rng.IntN(len(f.Agents))].AgentHost()
			return []string{h.Name}, h.Uncut, h.Cut()
		},
	},
	{
		// A server cut off from every etcd member (not from clients): it
		// says it is stale, then steps aside for the other.
		Name: "cut-server-etcd",
		Hold: func(f *Fleet) time.Duration { return f.MaxStale + 3*time.Second },
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			s := f.Servers[rng.IntN(len(f.Servers))]
			heal := func() error { return s.Host.Block(nil, 0) }
			return []string{s.Name}, heal, s.Host.Block(etcdHosts(f, -1), 0)
		},
	},
	{
		// The etcd leader alone on its side of a partition of the
		// members; servers can still reach it.
		Name: "leader-minority",
		Hold: fixed(4 * time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			l := Leader(ctx, f.EtcdCli, f.Etcd)
			if l < 0 {
				return nil, nil, errors.New("no etcd leader to isolate")
			}
			h := f.Etcd[l].Host
			heal := func() error { return h.Block(nil, 0) }
			return append([]string{f.Etcd[l].Name}, serverNames(f)...), heal, h.Block(etcdHosts(f, l), 0)
		},
	},
	{
		// Leadership handed to another member (etcd's MoveLeader), as an
		// operator's maintenance does: a new leader renews every lease
		// for a whole TTL (etcd#9395).
		Name: "move-leader",
		Hold: fixed(time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			l := Leader(ctx, f.EtcdCli, f.Etcd)
			if l < 0 {
				return nil, nil, errors.New("no etcd leader to move")
			}
			to := (l + 1 + rng.IntN(len(f.Etcd)-1)) % len(f.Etcd)
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			st, err := f.EtcdCli.Status(sctx, f.Etcd[to].ClientURL())
			if err != nil {
				return nil, nil, fmt.Errorf("status of %s: %w", f.Etcd[to].Name, err)
			}
			// MoveLeader must be asked of the leader itself.
			cli, err := EtcdClient(f.Client, f.Etcd[l:l+1])
			if err != nil {
				return nil, nil, err
			}
			defer cli.Close()
			if _, err := cli.MoveLeader(sctx, st.Header.MemberId); err != nil {
				return nil, nil, fmt.Errorf("move the etcd leader from %s to %s: %w", f.Etcd[l].Name, f.Etcd[to].Name, err)
			}
			hit := append([]string{f.Etcd[l].Name, f.Etcd[to].Name}, serverNames(f)...)
			return hit, func() error { return nil }, nil
		},
	},
	{
		// An etcd member SIGKILLed, restarted on its data.
		Name: "kill-member",
		Hold: fixed(3 * time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			m := f.Etcd[rng.IntN(len(f.Etcd))]
			m.Kill()
			return append([]string{m.Name}, serverNames(f)...), m.Restart, nil
		},
	},
	{
		// A server frozen (SIGSTOP): agents fail over; its clients time out.
		Name: "pause-server",
		Hold: fixed(4 * time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			s := f.Servers[rng.IntN(len(f.Servers))]
			return []string{s.Name}, s.Resume, s.Pause()
		},
	},
	{
		// An agent frozen for two leases: its instances go, and come back
		// when it wakes.
		Name: "pause-agent",
		Hold: func(f *Fleet) time.Duration { return 2 * f.TTL },
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			a := f.Agents[rng.IntN(len(f.Agents))]
			return []string{a.NodeName()}, a.Thaw, a.Freeze()
		},
	},
	{
		// A server host losing 30% of its packets, every way.
		Name: "loss",
		Hold: fixed(5 * time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			s := f.Servers[rng.IntN(len(f.Servers))]
			heal := func() error { return s.Host.Block(nil, 0) }
			return []string{s.Name}, heal, s.Host.Block(nil, 30)
		},
	},
	{
		// The bridge split in two: one etcd member, one server and half
		// the agents on the minority side.
		Name: "bridge-partition",
		Hold: fixed(4 * time.Second),
		Inject: func(ctx context.Context, f *Fleet, rng *rand.Rand) ([]string, func() error, error) {
			minority := rng.IntN(len(f.Etcd))
			side := rng.IntN(len(f.Servers))
			var a, b []*Host
			var hit []string
			for i, m := range f.Etcd {
				if i == minority {
					a = append(a, m.Host)
					hit = append(hit, m.Name)
				} else {
					b = append(b, m.Host)
				}
			}
			// Every server is hit: the member rejoining at the heal can
			// force an election (Debian's 3.4 runs without pre-vote), and
			// the majority side's server then loses contact too.
			for i, s := range f.Servers {
				if i == side {
					a = append(a, s.Host)
				} else {
					b = append(b, s.Host)
				}
				hit = append(hit, s.Name)
			}
			for i, n := range f.Agents {
				if i%2 == side%2 {
					a = append(a, n.AgentHost())
					hit = append(hit, n.NodeName())
				} else {
					b = append(b, n.AgentHost())
				}
			}
			var errs []error
			for _, h := range a {
				errs = append(errs, h.Block(b, 0))
			}
			for _, h := range b {
				errs = append(errs, h.Block(a, 0))
			}
			heal := func() error {
				var errs []error
				for _, h := range append(a, b...) {
					errs = append(errs, h.Block(nil, 0))
				}
				return errors.Join(errs...)
			}
			return hit, heal, errors.Join(errs...)
		},
	},
}

// FaultByName finds a kind of fault.
func FaultByName(name string) (Fault, error) {
	var names []string
	for _, f := range Faults {
		if f.Name == name {
			return f, nil
		}
		names = append(names, f.Name)
	}
	return Fault{}, fmt.Errorf("fault %q: want one of %s", name, strings.Join(names, ", "))
}

// Schedule is every kind of fault once, in an order drawn from rng,
// then random ones until the faults' holds reach extra.
func Schedule(f *Fleet, rng *rand.Rand, extra time.Duration) []Fault {
	out := append([]Fault(nil), Faults...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for held := time.Duration(0); held < extra; {
		k := Faults[rng.IntN(len(Faults))]
		out = append(out, k)
		held += k.Hold(f)
	}
	return out
}

// Nemesis injects faults one at a time, each held then healed, with
// quiet between, and records them. It returns the first error of an
// inject or a heal.
func Nemesis(ctx context.Context, f *Fleet, rec *Recorder, rng *rand.Rand, faults []Fault, quiet time.Duration, logf func(string, ...any)) error {
	for _, k := range faults {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		start := rec.Now()
		hit, heal, err := k.Inject(ctx, f, rng)
		if err != nil {
			if heal != nil {
				_ = heal()
			}
			return fmt.Errorf("inject %s: %w", k.Name, err)
		}
		hold := k.Hold(f)
		logf("fault %s on %s for %s", k.Name, strings.Join(hit, ","), hold)
		sleep(ctx, hold)
		herr := heal()
		rec.Fault(history.Fault{Kind: k.Name, Target: strings.Join(hit, ","), Start: start, End: rec.Now(), Note: hold.String()})
		if herr != nil {
			return fmt.Errorf("heal %s: %w", k.Name, herr)
		}
		sleep(ctx, quiet)
	}
	return nil
}
