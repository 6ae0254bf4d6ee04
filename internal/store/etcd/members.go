package etcdstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// memberCheck keeps a member that hangs out of the client's endpoints. A
// member that stops answering but leaves its connections open (a halted
// process, a frozen machine) is noticed by gRPC keepalives only after
// their least interval, 10 s, and their timeout; until then every request
// the client's round robin sends to it hangs until its attempt is cut.
// Each member is asked for its status on a connection of its own every
// interval; one that does not answer within it, or answers that it knows
// no leader, is removed from the client's endpoints, which closes its
// connection and sends every request elsewhere, and put back once it
// answers again. All members are kept when none answers (nothing better
// is known).
type memberCheck struct {
	s        *Store
	all      []string
	interval time.Duration
	stop     context.CancelFunc
	done     chan struct{}

	mu  sync.Mutex
	out []string // the endpoints left out now
}

// startMemberCheck starts checking the members of the store's own client,
// when it has more than one.
func (s *Store) startMemberCheck(endpoints []string) {
	if len(endpoints) < 2 {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	m := &memberCheck{s: s, all: slices.Clone(endpoints), interval: max(s.timeout/5, 200*time.Millisecond), stop: stop, done: make(chan struct{})}
	s.members = m
	go m.run(ctx)
}

// close stops the checks and waits for them to end.
func (m *memberCheck) close() {
	if m == nil {
		return
	}
	m.stop()
	<-m.done
}

func (m *memberCheck) run(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.check(ctx)
	}
}

// check asks every member at once and sets the client's endpoints to
// those that answered.
func (m *memberCheck) check(ctx context.Context) {
	ok := make([]bool, len(m.all))
	var wg sync.WaitGroup
	for i, ep := range m.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, m.interval)
			defer cancel()
			st, err := m.s.cli.Status(cctx, ep)
			// A member that answers but knows no leader (cut off from
			// the others, or alone on its side of a partition) can
			// answer no linearizable read and no write: requests sent
			// to it hang until their attempt is cut.
			ok[i] = err == nil && st.Leader != 0
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var in, out []string
	for i, ep := range m.all {
		if ok[i] {
			in = append(in, ep)
		} else {
			out = append(out, ep)
		}
	}
	if len(in) == 0 {
		in, out = m.all, nil
	}
	m.mu.Lock()
	same := slices.Equal(out, m.out)
	m.out = out
	m.mu.Unlock()
	if same {
		return
	}
	if len(out) > 0 {
		m.s.log.Warn("etcd members not answering; requests go to the others", "left_out", strings.Join(out, ","), "using", strings.Join(in, ","))
	} else {
		m.s.log.Info("every etcd member answers again", "using", strings.Join(in, ","))
	}
	m.s.cli.SetEndpoints(in...)
}
