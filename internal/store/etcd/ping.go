package etcdstore

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Ping reports whether etcd answers a linearizable read within the store's
// timeout: whether a quorum is there to take writes. The server asks it
// periodically to say in /healthz and /metrics that it is degraded, since
// a watch on an unreachable cluster can stay silent instead of failing.
func (s *Store) Ping(ctx context.Context) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.cli.Get(cctx, s.nodePrefix, clientv3.WithCountOnly(), clientv3.WithLimit(1)); err != nil {
		return s.fail(ctx, err, "ping etcd")
	}
	return nil
}
