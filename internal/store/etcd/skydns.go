package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/signpost-dns/signpost/internal/registry"
)

// skyDNSRecord is a service record in the layout of SkyDNS, which CoreDNS's
// etcd plugin serves.
type skyDNSRecord struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	TTL      uint32 `json:"ttl"`
}

// SkyDNSPath returns the etcd key prefix under which SkyDNS keeps the
// records of zone: "/skydns/internal/servicediscovery/" for
// "servicediscovery.internal".
func SkyDNSPath(zone string) string {
	labels := strings.Split(strings.Trim(strings.ToLower(zone), "."), ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	return "/skydns/" + strings.Join(labels, "/") + "/"
}

// MirrorSkyDNS keeps a copy of every serving instance in the SkyDNS layout
// (`<SkyDNSPath(zone)><service>/<id>`, attached to the instance's lease, so
// a dead host's copies go with it), for people who already run CoreDNS with
// its etcd plugin. It lists, makes the mirror match, then follows the
// registry's watch until ctx ends; after a lost watch it starts over. Run
// it on one server or on several: the writes are the same.
func (s *Store) MirrorSkyDNS(ctx context.Context, zone string, ttl uint32) error {
	base := SkyDNSPath(zone)
	backoff := 100 * time.Millisecond
	for {
		err := s.mirrorOnce(ctx, base, ttl)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("SkyDNS mirror: starting over", "prefix", base, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Store) mirrorOnce(ctx context.Context, base string, ttl uint32) error {
	cctx, cancel := s.call(ctx)
	have, err := s.cli.Get(cctx, base, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return s.fail(ctx, err, "SkyDNS mirror: list "+base)
	}
	cctx, cancel = s.call(ctx)
	want, err := s.cli.Get(cctx, s.instPrefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return s.fail(ctx, err, "SkyDNS mirror: list "+s.instPrefix)
	}
	keep := map[string]bool{}
	for _, kv := range want.Kvs {
		key, err := s.mirrorPut(ctx, base, ttl, kv)
		if err != nil {
			return err
		}
		if key != "" {
			keep[key] = true
		}
	}
	for _, kv := range have.Kvs {
		if !keep[string(kv.Key)] {
			if err := s.mirrorDelete(ctx, string(kv.Key)); err != nil {
				return err
			}
		}
	}
	s.log.Info("SkyDNS mirror in step", "prefix", base, "records", len(keep), "revision", want.Header.Revision)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for resp := range s.cli.Watch(wctx, s.instPrefix, clientv3.WithPrefix(), clientv3.WithRev(want.Header.Revision+1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("SkyDNS mirror: watch %s: %w", s.instPrefix, err)
		}
		for _, ev := range resp.Events {
			switch ev.Type {
			case mvccpb.PUT:
				key, err := s.mirrorPut(ctx, base, ttl, ev.Kv)
				if err != nil {
					return err
				}
				// An instance that stopped serving, or moved service, drops
				// its old copy.
				if ev.PrevKv != nil {
					if old := mirrorKey(base, ev.PrevKv); old != "" && old != key {
						if err := s.mirrorDelete(ctx, old); err != nil {
							return err
						}
					}
				}
			case mvccpb.DELETE:
				if ev.PrevKv != nil {
					if old := mirrorKey(base, ev.PrevKv); old != "" {
						if err := s.mirrorDelete(ctx, old); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("SkyDNS mirror: watch %s closed", s.instPrefix)
}

// mirrorKey is the SkyDNS key of an instance key-value, or "" when the
// value is not an instance.
func mirrorKey(base string, kv *mvccpb.KeyValue) string {
	in, err := decodeInstance(kv)
	if err != nil {
		return ""
	}
	return base + in.Service + "/" + in.ID
}

// mirrorPut writes the SkyDNS copy of one instance when it is serving (and
// deletes it when not), and returns the key it wrote ("" for none).
func (s *Store) mirrorPut(ctx context.Context, base string, ttl uint32, kv *mvccpb.KeyValue) (string, error) {
	in, err := decodeInstance(kv)
	if err != nil {
		s.log.Warn("SkyDNS mirror: skipping an instance it cannot read", "key", string(kv.Key), "err", err)
		return "", nil
	}
	key := base + in.Service + "/" + in.ID
	if in.Health.Status != registry.HealthPassing {
		return "", s.mirrorDelete(ctx, key)
	}
	val, err := json.Marshal(skyDNSRecord{Host: in.Address.String(), Port: int(in.Port), Priority: int(in.Priority), Weight: int(in.Weight), TTL: ttl})
	if err != nil {
		return "", fmt.Errorf("SkyDNS mirror: encode %s: %w", key, err)
	}
	var opts []clientv3.OpOption
	if kv.Lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(kv.Lease)))
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.cli.Put(cctx, key, string(val), opts...); err != nil {
		// A lease that expired meanwhile: the instance is going too, and
		// the watch will say so.
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return "", nil
		}
		return "", s.fail(ctx, err, "SkyDNS mirror: put "+key)
	}
	return key, nil
}

func (s *Store) mirrorDelete(ctx context.Context, key string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.cli.Delete(cctx, key); err != nil {
		return s.fail(ctx, err, "SkyDNS mirror: delete "+key)
	}
	return nil
}
