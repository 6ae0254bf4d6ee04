package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Probe is Ping bounded by ctx's deadline, for a server that tracks its
// last contact with etcd (internal/staleness): a linearizable read, which
// only a member with a quorum behind it answers (a member cut off in a
// minority still answers serializable reads, from its possibly old
// copy). A probe cut by its deadline says so as registry.ErrUnavailable,
// with the deadline as its reason.
func (s *Store) Probe(ctx context.Context) error {
	_, err := s.ProbeRev(ctx)
	return err
}

// ProbeRev is Probe, with the revision etcd was at when it answered: a
// follower of the store is current only once it has reached it.
func (s *Store) ProbeRev(ctx context.Context) (int64, error) {
	start := time.Now()
	rev, err := s.pingRev(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		d := time.Since(start).Round(10 * time.Millisecond)
		if dl, ok := ctx.Deadline(); ok {
			d = dl.Sub(start).Round(10 * time.Millisecond)
		}
		return 0, fmt.Errorf("ping etcd: %w", &registry.UnavailableError{Reason: fmt.Sprintf("etcd did not answer within %s", d), Err: err})
	}
	return rev, err
}

// reconnectMaxDelay is the most time between two attempts to connect to
// a member that is out of reach. gRPC's default backoff starts at 1 s and
// grows to 120 s, which kept servers degraded for about 7 s after a
// quorum came back; capped here, a server reconnects within this delay of
// its member answering again.
const reconnectMaxDelay = 300 * time.Millisecond

// reconnectOptions are the gRPC dial options of the store's own client:
// the reconnect backoff, and how long one attempt to connect may take.
func reconnectOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  50 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   reconnectMaxDelay,
		},
		// An attempt on a path that swallows packets is given up after
		// this, and the next one made (gRPC's default: 20 s).
		MinConnectTimeout: 2 * time.Second,
	})}
}
