// Package route53backend is the agent's backend for Amazon Route 53: it
// writes this host's SRV records straight into a private hosted zone, in
// exactly the layout of the original ECS service-discovery agent, so that
// the two can be swapped without touching clients:
//
//	<name>.<zone>                  SRV "1 1 <hostPort> <hostname>"
//	                               SetIdentifier "<hostname>:<containerID>[:<port>]"
//	                               weighted routing, weight 1, TTL Config.TTL (default 0)
//	<first label of hostname>.<zone>  A (or AAAA) "<host address>"
//	                               SetIdentifier "<hostname>", weight 1
//
// where <name> is the service name as the container gave it ("calc" or
// "_calc._tcp", see MetaSRVName).
//
// What the original agent got wrong is fixed here: the zone is picked by
// exact name, private zones only unless told otherwise, never a Cloud Map
// zone, and an ambiguous choice is an error naming the candidates;
// Register and Deregister are coalesced over Config.Window into
// ChangeResourceRecordSets batches within Route 53's limits (1,000 records
// and 32,000 characters a request, an UPSERT counting twice); every
// request, retries included, waits on a client-side rate limiter
// (Config.Rate, 4 a second by default); the SDK's standard retryer retries
// Throttling, PriorRequestNotComplete and 5xx with exponential backoff and
// jitter; ListResourceRecordSets is paged; and Sync and Release touch only
// record sets this host owns (an SRV set whose SetIdentifier begins with
// "<hostname>:", and the host's own A record), never another host's.
//
// Register and Deregister do not wait for Route 53: they check the
// instance, queue the change and return, so that a burst of container
// events becomes a few requests. A write that fails (after the SDK's
// retries and one re-read of the zone) is reported by the next Register,
// Deregister or Heartbeat as backend.ErrResync, wrapped, and the agent's
// full Sync, which does wait, repairs it. Flush waits for queued changes.
//
// Route 53 has no leases: records of a host that dies stay until its next
// Sync or until `signpost check --backend route53` removes them. The
// checker uses Zone (OpenZone, ListSRV, DeleteRecordSet).
package route53backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Backend writes one host's registrations to a Route 53 hosted zone.
type Backend struct {
	zone      *Zone
	lay       layout
	log       *slog.Logger
	window    time.Duration
	fixedAddr bool

	// writeMu serializes writes to the zone: the background writer, Sync
	// and Release.
	writeMu sync.Mutex

	mu           sync.Mutex
	have         map[string]types.ResourceRecordSet  // this host's record sets as last known
	loaded       bool                                // have was read from the zone
	pending      map[string]*types.ResourceRecordSet // queued: the wanted set, or nil to delete
	hostAddr     netip.Addr
	hostConflict string // another host holds the host record's name
	failure      error  // a failed write, reported with ErrResync until a Sync succeeds
	enq, done    uint64
	doneCh       chan struct{}
	wake         chan struct{}
	warned       map[string]bool

	stop    context.CancelFunc
	stopped chan struct{}
}

var _ backend.Backend = (*Backend)(nil)

// New resolves the hosted zone and returns a backend for this host. It
// starts a background writer; Close stops it.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := cfg.hostDefaults(); err != nil {
		return nil, err
	}
	z, err := openZone(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		zone:      z,
		lay:       layout{zone: z.name, host: cfg.Hostname, ttl: cfg.TTL},
		log:       z.log.With("host", cfg.Hostname),
		window:    cfg.Window,
		fixedAddr: cfg.HostAddress.IsValid(),
		have:      map[string]types.ResourceRecordSet{},
		pending:   map[string]*types.ResourceRecordSet{},
		hostAddr:  cfg.HostAddress,
		doneCh:    make(chan struct{}),
		wake:      make(chan struct{}, 1),
		warned:    map[string]bool{},
		stopped:   make(chan struct{}),
	}
	if !strings.HasSuffix(fqdn(cfg.Hostname), "."+z.name) {
		b.log.Info("route53: SRV targets are this hostname, as the original agent wrote them; it must resolve for clients (EC2's names do inside the VPC). Otherwise set the hostname to <name>."+strings.TrimSuffix(z.name, ".")+" so that the host record answers for it",
			"srv_target", cfg.Hostname, "host_record", b.lay.hostRecordName())
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stop = cancel
	go b.run(rctx)
	b.log.Info("route53 backend ready", "ttl", cfg.TTL, "rate", cfg.Rate, "window", cfg.Window)
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "route53" }

// Zone returns the hosted zone the backend writes to.
func (b *Backend) Zone() *Zone { return b.zone }

// Sync makes insts the whole set of this host's SRV records, and writes
// the host record: this host's stale record sets are deleted and missing
// ones created (instances whose health is not passing count as absent), in as few requests as the limits allow (one, up to 1,000
// records), and nothing another host owns is touched. Instances that
// cannot be written are logged and skipped. It waits for Route 53.
func (b *Backend) Sync(ctx context.Context, insts []registry.Instance) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()

	want := map[string]*types.ResourceRecordSet{}
	for i := range insts {
		in := &insts[i]
		if !serving(in) {
			continue // pending or critical: not in the zone
		}
		rs, err := b.lay.srv(in)
		if err != nil {
			b.log.Warn("route53: instance skipped", "id", in.ID, "service", in.Service, "err", err)
			continue
		}
		k := keyOf(&rs)
		if _, dup := want[k]; dup {
			b.log.Warn("route53: two instances map to one record set; the later wins", "record", describe(&rs), "id", in.ID)
		}
		want[k] = &rs
	}
	b.mu.Lock()
	if !b.hostAddr.IsValid() {
		for i := range insts {
			if insts[i].Address.IsValid() {
				b.hostAddr = insts[i].Address.Unmap()
				break
			}
		}
	}
	for i := range insts {
		b.checkAddr(&insts[i])
	}
	addr := b.hostAddr
	b.mu.Unlock()

	var conflict string
	before, err := b.replace(ctx, func(owned map[string]types.ResourceRecordSet, held string) map[string]*types.ResourceRecordSet {
		conflict = held
		batch := map[string]*types.ResourceRecordSet{}
		for k, rs := range owned {
			if rs.Type == types.RRTypeSrv {
				if _, ok := want[k]; !ok {
					batch[k] = nil
				}
			}
		}
		for k, rs := range want {
			batch[k] = rs
		}
		if addr.IsValid() && held == "" {
			hr := b.lay.hostRecord(addr)
			batch[keyOf(&hr)] = &hr
			for k, rs := range owned { // an old A after a move to AAAA, or the reverse
				if rs.Type != types.RRTypeSrv && k != keyOf(&hr) {
					batch[k] = nil
				}
			}
		}
		return batch
	})
	b.mu.Lock()
	b.hostConflict = conflict
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sync host %s (%d instances): %w", b.lay.host, len(insts), err)
	}
	b.log.Info("route53: synced", "instances", len(want), "owned_before", before.owned, "upserts", before.upserts, "deletes", before.deletes)
	if conflict != "" {
		return fmt.Errorf("sync host %s: SRV records written, but host record %s not: %s", b.lay.host, b.lay.hostRecordName(), conflict)
	}
	return nil
}

// Register queues inst's SRV record (and the host record, the first time)
// and returns; the write follows within the coalescing window. An
// instance whose health is pending or critical is removed instead: only
// passing instances are in the zone. An instance
// that cannot be written is an error naming it; a failed earlier write is
// backend.ErrResync, wrapped.
func (b *Backend) Register(ctx context.Context, inst registry.Instance) error {
	return b.queue(ctx, "register", &inst, true)
}

// Deregister queues the removal of inst's SRV record and returns. One that
// is not there is not an error.
func (b *Backend) Deregister(ctx context.Context, inst registry.Instance) error {
	return b.queue(ctx, "deregister", &inst, false)
}

// queue queues the put (or the removal) of inst's SRV record.
func (b *Backend) queue(ctx context.Context, op string, inst *registry.Instance, put bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rs, err := b.lay.srv(inst)
	if err != nil {
		return fmt.Errorf("route53: %s in zone %s: %w", op, b.zone.name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failure != nil {
		return fmt.Errorf("route53: %s %s: %w: %w", op, inst.ID, backend.ErrResync, b.failure)
	}
	if !put || !serving(inst) {
		b.pending[keyOf(&rs)] = nil
		b.kick()
		return nil
	}
	if !b.hostAddr.IsValid() && inst.Address.IsValid() {
		b.hostAddr = inst.Address.Unmap()
	}
	b.checkAddr(inst)
	b.pending[keyOf(&rs)] = &rs
	if b.hostAddr.IsValid() && b.hostConflict == "" {
		hr := b.lay.hostRecord(b.hostAddr)
		hk := keyOf(&hr)
		if cur, ok := b.have[hk]; !ok || !sameSet(&cur, &hr) {
			if _, queued := b.pending[hk]; !queued {
				b.pending[hk] = &hr
			}
		}
	}
	b.kick()
	return nil
}

// Known reads the zone and returns passing health for each of insts whose
// SRV record set the zone holds as this backend would write it (same
// name, set identifier, port and target; a TTL or routing weight of an
// earlier configuration does not matter: the start-up Sync UPSERTs it in
// place): Route 53 keeps no health,
// and a record present means the instance was served. The record names
// the host, not the address, so the port and the hostname are what the
// zone can confirm. CheckedAt is zero: the zone does not say when.
func (b *Backend) Known(ctx context.Context, insts []registry.Instance) (map[string]registry.Health, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	owned, _, err := b.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("route53: read the record sets of host %s: %w", b.lay.host, err)
	}
	out := map[string]registry.Health{}
	for i := range insts {
		rs, err := b.lay.srv(&insts[i])
		if err != nil {
			continue // Sync says why
		}
		if cur, ok := owned[keyOf(&rs)]; ok && sameValues(&cur, &rs) {
			out[insts[i].ID] = registry.Health{Status: registry.HealthPassing, Output: "record present in the zone when the agent started"}
		}
	}
	return out, nil
}

// serving reports whether inst belongs in the zone: its health is passing
// (or unset). Route 53 has no health of its own here, so a pending or
// critical instance is simply absent, and comes back when it passes.
func serving(inst *registry.Instance) bool {
	return inst.Health.Status == "" || inst.Health.Status == registry.HealthPassing
}

// Heartbeat reports a failed write as backend.ErrResync (wrapped);
// otherwise it makes one cheap call (GetHostedZone) to notice credential
// or network trouble. Route 53 has no leases to renew.
func (b *Backend) Heartbeat(ctx context.Context) error {
	b.mu.Lock()
	f := b.failure
	b.mu.Unlock()
	if f != nil {
		return fmt.Errorf("route53: host %s: %w: %w", b.lay.host, backend.ErrResync, f)
	}
	if err := b.zone.Ping(ctx); err != nil {
		return fmt.Errorf("heartbeat of host %s: %w", b.lay.host, err)
	}
	return nil
}

// Release deletes every record set this host owns (its SRV records and its
// host record), dropping anything queued.
func (b *Backend) Release(ctx context.Context) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	before, err := b.replace(ctx, func(owned map[string]types.ResourceRecordSet, _ string) map[string]*types.ResourceRecordSet {
		batch := map[string]*types.ResourceRecordSet{}
		for k := range owned {
			batch[k] = nil
		}
		return batch
	})
	if err != nil {
		return fmt.Errorf("release host %s (%d record sets): %w", b.lay.host, before.owned, err)
	}
	b.log.Info("route53: released", "record_sets", before.deletes)
	return nil
}

// counts is what a Sync or Release found and planned, counted before the
// write (the write changes what the backend holds).
type counts struct {
	owned            int // record sets this host owned in the zone
	upserts, deletes int // changes planned against them
}

// replace drops anything queued, reads this host's record sets from the
// zone, and writes the batch plan makes of them (and of any other host's
// claim on the host record's name). A success clears a pending failure.
// The caller holds writeMu.
func (b *Backend) replace(ctx context.Context, plan func(owned map[string]types.ResourceRecordSet, conflict string) map[string]*types.ResourceRecordSet) (counts, error) {
	b.mu.Lock()
	b.pending = map[string]*types.ResourceRecordSet{}
	seq := b.enq
	b.mu.Unlock()
	var n counts
	owned, conflict, err := b.read(ctx)
	if err == nil {
		n.owned = len(owned)
		batch := plan(owned, conflict)
		for _, c := range b.diff(batch) {
			if c.Action == types.ChangeActionDelete {
				n.deletes++
			} else {
				n.upserts++
			}
		}
		err = b.apply(ctx, batch)
	}
	b.mu.Lock()
	if err == nil {
		b.failure = nil
	}
	b.markDone(seq)
	b.mu.Unlock()
	return n, err
}

// Flush waits until every change queued before it was written (or its
// write failed), and returns the pending write failure, if any.
func (b *Backend) Flush(ctx context.Context) error {
	b.mu.Lock()
	target := b.enq
	b.mu.Unlock()
	for {
		b.mu.Lock()
		if b.done >= target {
			f := b.failure
			b.mu.Unlock()
			return f
		}
		ch := b.doneCh
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("route53: flush for host %s: %w", b.lay.host, ctx.Err())
		case <-ch:
		}
	}
}

// Close writes what is queued (within ctx) and stops the background
// writer. The records stay; Release removes them.
func (b *Backend) Close(ctx context.Context) error {
	err := b.Flush(ctx)
	b.stop()
	<-b.stopped
	return err
}

// kick wakes the writer; b.mu is held.
func (b *Backend) kick() {
	b.enq++
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// markDone records that changes up to seq were handled; b.mu is held.
func (b *Backend) markDone(seq uint64) {
	if seq > b.done {
		b.done = seq
		close(b.doneCh)
		b.doneCh = make(chan struct{})
	}
}

// checkAddr warns once about an instance the host record does not reach;
// b.mu is held.
func (b *Backend) checkAddr(in *registry.Instance) {
	if !b.hostAddr.IsValid() || !in.Address.IsValid() || in.Address.Unmap() == b.hostAddr || b.warned[in.ID] {
		return
	}
	b.warned[in.ID] = true
	b.log.Warn("route53: instance address differs from the host's; the original layout points SRV at the hostname, so clients reach the host address",
		"id", in.ID, "service", in.Service, "address", in.Address, "host_address", b.hostAddr, "port", in.Port)
}

// run is the background writer: it waits for queued changes, lets more
// gather for the window, and writes them.
func (b *Backend) run(ctx context.Context) {
	defer close(b.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		t := time.NewTimer(b.window)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		b.flushOnce(ctx)
	}
}

func (b *Backend) flushOnce(ctx context.Context) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = map[string]*types.ResourceRecordSet{}
	seq := b.enq
	b.mu.Unlock()
	var err error
	if len(batch) > 0 {
		err = b.apply(ctx, batch)
	}
	b.mu.Lock()
	if err != nil && b.failure == nil {
		b.failure = err
	}
	b.markDone(seq)
	b.mu.Unlock()
	if err != nil {
		b.log.Warn("route53: write failed; the agent will be asked to resync", "changes", len(batch), "err", err)
	}
}

// read lists the zone and returns this host's record sets, and a
// description of any record set of another host at the host record's name.
func (b *Backend) read(ctx context.Context) (map[string]types.ResourceRecordSet, string, error) {
	owned := map[string]types.ResourceRecordSet{}
	var others []string
	hostName := b.lay.hostRecordName()
	err := b.zone.list(ctx, func(rs types.ResourceRecordSet) {
		if b.lay.owns(&rs) {
			owned[keyOf(&rs)] = rs
			return
		}
		if fqdn(aws.ToString(rs.Name)) == hostName && (rs.Type == types.RRTypeA || rs.Type == types.RRTypeAaaa || rs.Type == types.RRTypeCname) {
			if id := aws.ToString(rs.SetIdentifier); id != "" {
				others = append(others, fmt.Sprintf("%s [%s] (another host's)", rs.Type, id))
			} else {
				others = append(others, fmt.Sprintf("%s without set identifier (not written by signpost)", rs.Type))
			}
		}
	})
	if err != nil {
		return nil, "", err
	}
	b.mu.Lock()
	b.have, b.loaded = owned, true
	b.mu.Unlock()
	conflict := ""
	if len(others) > 0 {
		sort.Strings(others)
		conflict = fmt.Sprintf("%s is already held by %s; two hosts whose names share a first label cannot both publish it",
			hostName, strings.Join(others, ", "))
	}
	return owned, conflict, nil
}

// apply writes batch (key to wanted set, nil to delete) against what the
// zone holds, in as few requests as the limits allow. When Route 53
// refuses a batch because the zone is not what this host last saw
// (someone deleted a record, say), it reads the zone again and retries
// once. The caller holds writeMu.
func (b *Backend) apply(ctx context.Context, batch map[string]*types.ResourceRecordSet) error {
	b.mu.Lock()
	loaded := b.loaded
	b.mu.Unlock()
	if !loaded {
		if _, _, err := b.read(ctx); err != nil {
			return err
		}
	}
	err := b.send(ctx, b.diff(batch))
	var icb *types.InvalidChangeBatch
	if errors.As(err, &icb) {
		b.log.Info("route53: zone differs from what this host last saw; reading it again", "messages", strings.Join(icb.Messages, "; "))
		if _, _, rerr := b.read(ctx); rerr != nil {
			return errors.Join(err, rerr)
		}
		err = b.send(ctx, b.diff(batch))
	}
	return err
}

// diff turns wanted sets into changes against b.have: UPSERT what is
// missing or different, DELETE (exactly as it stands) what must go.
func (b *Backend) diff(batch map[string]*types.ResourceRecordSet) []types.Change {
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.mu.Lock()
	defer b.mu.Unlock()
	var changes []types.Change
	for _, k := range keys {
		want := batch[k]
		cur, ok := b.have[k]
		switch {
		case want == nil && ok:
			c := cur
			changes = append(changes, types.Change{Action: types.ChangeActionDelete, ResourceRecordSet: &c})
		case want != nil && (!ok || !sameSet(&cur, want)):
			changes = append(changes, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: want})
		}
	}
	return changes
}

// send writes changes in batches and keeps b.have up to date.
func (b *Backend) send(ctx context.Context, changes []types.Change) error {
	for _, part := range batches(changes) {
		start := time.Now()
		err := b.zone.write(ctx, part, "signpost agent on "+b.lay.host)
		if err != nil {
			var icb *types.InvalidChangeBatch
			if errors.As(err, &icb) {
				return fmt.Errorf("route53: zone %s refused %d changes from host %s: %s: %w", b.zone.name, len(part), b.lay.host, strings.Join(icb.Messages, "; "), err)
			}
			return fmt.Errorf("route53: write %d changes to zone %s for host %s: %w", len(part), b.zone.name, b.lay.host, err)
		}
		b.mu.Lock()
		for _, c := range part {
			k := keyOf(c.ResourceRecordSet)
			if c.Action == types.ChangeActionDelete {
				delete(b.have, k)
			} else {
				b.have[k] = *c.ResourceRecordSet
			}
		}
		b.mu.Unlock()
		b.log.Debug("route53: wrote changes", "changes", len(part), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
