package etcdstore

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Ping reports whether etcd answers a linearizable read within the store's
// timeout (whether a quorum is there to take writes) and has no alarm
// raised: with NOSPACE (its database full) or CORRUPT, etcd still answers
// reads but refuses every write. The server asks it periodically to say
// in /healthz and /metrics that it is degraded, since a watch on an
// unreachable cluster can stay silent instead of failing.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.pingRev(ctx)
	return err
}

// pingRev is Ping, with the revision etcd was at when it answered.
func (s *Store) pingRev(ctx context.Context) (int64, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	g, err := s.cli.Get(cctx, s.nodePrefix, clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, s.fail(ctx, err, "ping etcd")
	}
	rev := g.Header.Revision
	resp, err := s.cli.AlarmList(cctx)
	if err != nil {
		return rev, s.fail(ctx, err, "ping etcd: list alarms")
	}
	for _, a := range resp.Alarms {
		switch a.Alarm {
		case pb.AlarmType_NOSPACE:
			return rev, fmt.Errorf("ping etcd: member %x: etcd's database is full (its NOSPACE alarm: compact, defragment, then disarm it); writes are refused: %w", a.MemberID, registry.ErrUnavailable)
		case pb.AlarmType_CORRUPT:
			return rev, fmt.Errorf("ping etcd: member %x: etcd reports a corrupt cluster (its CORRUPT alarm); writes are refused: %w", a.MemberID, registry.ErrUnavailable)
		}
	}
	return rev, nil
}
