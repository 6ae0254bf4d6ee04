package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ServerRecord is a signpost server on this store, as it announces itself
// under servers/<id> (attached to a lease of its own, so that it vanishes
// when the server stops renewing it).
type ServerRecord struct {
	// ID names the server: its advertised API address.
	ID string `json:"id"`
	// API is its API's base URL.
	API string `json:"api"`
	// DNS is its DNS address, HOST:PORT.
	DNS string `json:"dns"`
}

// Limits of the server list.
const (
	// ServerLeaseTTL is the TTL of a server's record lease.
	ServerLeaseTTL = 10 * time.Second
	// MaxServers is the most records Servers reads.
	MaxServers = 64
	// maxServerRecord is the most bytes of one record decoded.
	maxServerRecord = 4096
)

func (s *Store) serverPrefix() string { return s.prefix + "servers/" }

// Announce keeps rec under servers/<rec.ID> until ctx is done, on a lease
// that it renews, and granted again when it was lost (etcd out of reach
// for longer than ServerLeaseTTL). It revokes the lease when ctx ends, so
// that peers forget this server at once, and returns then.
func (s *Store) Announce(ctx context.Context, rec ServerRecord) {
	val, err := json.Marshal(rec)
	if err != nil || len(val) > maxServerRecord {
		s.log.Error("server record not announced: too large", "id", rec.ID, "bytes", len(val))
		return
	}
	key := s.serverPrefix() + url.PathEscape(rec.ID)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		lease, err := s.announceOnce(ctx, key, string(val))
		if lease != 0 {
			backoff = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			if lease != 0 {
				rctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, _ = s.cli.Revoke(rctx, lease)
				cancel()
			}
			return
		}
		s.log.Debug("server record lease lost; announcing again", "key", key, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// announceOnce grants a lease, puts the record on it and renews it until
// the renewals end (lease lost, or ctx done). It returns the lease when it
// was put.
func (s *Store) announceOnce(ctx context.Context, key, val string) (clientv3.LeaseID, error) {
	cctx, cancel := s.call(ctx)
	g, err := s.cli.Grant(cctx, int64(ServerLeaseTTL/time.Second))
	if err == nil {
		_, err = s.cli.Put(cctx, key, val, clientv3.WithLease(g.ID))
	}
	cancel()
	if err != nil {
		return 0, s.fail(ctx, err, "announce server at "+key)
	}
	ka, err := s.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return g.ID, s.fail(ctx, err, "renew server lease of "+key)
	}
	for range ka { //nolint:revive // draining the renewals is the loop
	}
	return g.ID, fmt.Errorf("renewals of the server lease of %s ended", key)
}

// Servers lists the servers announced on this store (at most MaxServers),
// with a linearizable read.
func (s *Store) Servers(ctx context.Context) ([]ServerRecord, error) {
	var resp *clientv3.GetResponse
	err := s.reads(ctx, "list "+s.serverPrefix(), func(cctx context.Context) error {
		var err error
		resp, err = s.cli.Get(cctx, s.serverPrefix(), clientv3.WithPrefix(), clientv3.WithLimit(MaxServers))
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]ServerRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec ServerRecord
		if len(kv.Value) > maxServerRecord || json.Unmarshal(kv.Value, &rec) != nil || rec.ID == "" {
			s.log.Warn("skip undecodable server record", "key", string(kv.Key))
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}
