package discovery

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults for the zero values of Resolver's fields.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultMinTTL      = 1 * time.Second
	DefaultMaxTTL      = 60 * time.Second
	DefaultNegativeTTL = 5 * time.Second
	DefaultDialTimeout = 2 * time.Second
)

// Resolver looks services up by SRV through one DNS server and caches the
// answers. Set its fields before the first use and do not copy it after;
// its methods are safe for concurrent use.
type Resolver struct {
	// Server is the host:port of the DNS server to ask, for example
	// "127.0.0.1:8053". Required.
	Server string
	// Zone is appended to short service names ("calc", "_calc._tcp"), for
	// example "servicediscovery.internal". Names ending in a dot, and names
	// of more labels than "_calc._tcp", are taken as they are.
	Zone string
	// Timeout bounds each DNS exchange; DefaultTimeout if zero.
	Timeout time.Duration
	// MinTTL and MaxTTL bound how long an answer is cached, whatever its
	// TTL says; DefaultMinTTL and DefaultMaxTTL if zero.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL caps how long "no such service" is remembered (the SOA
	// TTL of the answer, at least MinTTL); DefaultNegativeTTL if zero.
	NegativeTTL time.Duration
	// DialTimeout bounds each connection attempt of Dial;
	// DefaultDialTimeout if zero.
	DialTimeout time.Duration
	// Logger receives debug logs of lookups and failed dials; none if nil.
	Logger *slog.Logger

	// now and intn are replaced by tests.
	now  func() time.Time
	intn func(int) int

	mu    sync.Mutex
	cache map[string]entry
}

// Instance is one endpoint of a service, from one SRV record.
type Instance struct {
	// Target is the SRV target name, fully qualified.
	Target   string
	Port     uint16
	Priority uint16
	Weight   uint16
	// Addrs are the addresses of Target, IPv4 first.
	Addrs []netip.Addr
}

// Address returns "host:port" of the first address of the instance, or ""
// if it has none.
func (in Instance) Address() string {
	if len(in.Addrs) == 0 {
		return ""
	}
	return netip.AddrPortFrom(in.Addrs[0], in.Port).String()
}

// String describes the instance as "target:port".
func (in Instance) String() string {
	return net.JoinHostPort(in.Target, strconv.Itoa(int(in.Port)))
}

type entry struct {
	instances []Instance
	err       error
	expires   time.Time
}

// Lookup returns the instances of service, sorted by priority and then by
// weight, heaviest first. service is "calc", "_calc._tcp" or a full name;
// see Resolver.Zone. Answers come from the cache while their TTL lasts.
// The error wraps ErrNotFound or ErrUnreachable where those apply.
func (r *Resolver) Lookup(ctx context.Context, service string) ([]Instance, error) {
	qnames, err := names(service, r.Zone)
	if err != nil {
		return nil, err
	}
	key := qnames[0]
	if e, ok := r.cached(key); ok {
		return clone(e.instances), e.err
	}
	res, err := r.resolve(ctx, service, qnames)
	if err != nil && !res.negative {
		return nil, err
	}
	ttl := r.clampTTL(res.ttl, r.maxTTL())
	if res.negative {
		ttl = r.clampTTL(res.ttl, r.negativeTTL())
	}
	r.store(key, entry{instances: res.instances, err: err, expires: r.clock().Add(ttl)})
	r.logger().DebugContext(ctx, "discovery: looked up service", "service", service,
		"instances", len(res.instances), "ttl", ttl, "err", err)
	return clone(res.instances), err
}

// Pick returns one instance of service: of the lowest priority, chosen at
// random in proportion to the weights.
func (r *Resolver) Pick(ctx context.Context, service string) (Instance, error) {
	ordered, err := r.Ordered(ctx, service)
	if err != nil {
		return Instance{}, err
	}
	return ordered[0], nil
}

// Ordered returns all instances of service in the order to try them:
// priorities from lowest, and within a priority a weighted random order.
// It never returns an empty list without an error.
func (r *Resolver) Ordered(ctx context.Context, service string) ([]Instance, error) {
	instances, err := r.Lookup(ctx, service)
	if err != nil {
		return nil, err
	}
	return order(instances, r.randIntN), nil
}

// Forget drops the cached answer for service, so that the next lookup asks
// the DNS server again.
func (r *Resolver) Forget(service string) {
	qnames, err := names(service, r.Zone)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.cache, qnames[0])
}

func (r *Resolver) cached(key string) (entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return entry{}, false
	}
	if !r.clock().Before(e.expires) {
		delete(r.cache, key)
		return entry{}, false
	}
	return e, true
}

func (r *Resolver) store(key string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[string]entry{}
	}
	r.cache[key] = e
}

func (r *Resolver) clampTTL(ttl, ceiling time.Duration) time.Duration {
	floor := orDefault(r.MinTTL, DefaultMinTTL)
	return max(floor, min(ttl, ceiling))
}

func (r *Resolver) maxTTL() time.Duration { return orDefault(r.MaxTTL, DefaultMaxTTL) }

func (r *Resolver) negativeTTL() time.Duration {
	return orDefault(r.NegativeTTL, DefaultNegativeTTL)
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *Resolver) randIntN(n int) int {
	if r.intn != nil {
		return r.intn(n)
	}
	return rand.IntN(n)
}

func (r *Resolver) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func clone(instances []Instance) []Instance {
	out := slices.Clone(instances)
	for i := range out {
		out[i].Addrs = slices.Clone(out[i].Addrs)
	}
	return out
}
