package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/signpost-dns/signpost/internal/buildinfo"
	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/httpguard"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/staleness"
)

func init() {
	commands["server"] = command{"run the DNS server and registration API", runServer}
}

// serverFlags registers the server's flags on fs, for `server` and `up`.
func serverFlags(fs *flag.FlagSet) func() (server.Config, error) {
	var cfg server.Config
	fs.StringVar(&cfg.DNSAddr, "dns", "127.0.0.1:8053", "DNS listen address, UDP and TCP")
	fs.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "HTTP API listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "signpost-data", "directory of the embedded store")
	fs.StringVar(&cfg.PprofAddr, "pprof", "", "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060 (default: off)")
	fs.StringVar(&cfg.TokenFile, "token-file", credentialToken(), "file holding the bearer token that writes need; required to listen for writes beyond loopback"+tokenFileHelp)
	zone := fs.String("zone", "servicediscovery.internal", "DNS zone to be authoritative for")
	ttl := fs.Duration("ttl", 5*time.Second, "TTL of DNS answers")
	negTTL := fs.Duration("negative-ttl", 5*time.Second, "TTL of negative DNS answers (SOA minimum)")
	failOpen := fs.Bool("fail-open", true, "when every instance of a service is failing its check, answer with all of them rather than none")
	maxUDP := fs.Int("max-udp-size", 1232, "largest UDP answer to EDNS0 clients; larger answers are truncated to go over TCP")
	nsAddrs := fs.String("ns-address", "", "comma-separated addresses published for the zone's name server ns.<zone> (default: the DNS listen address, unless it is a wildcard)")
	fs.IntVar(&cfg.UDPSockets, "udp-sockets", 0, "UDP sockets answering DNS, spread by SO_REUSEPORT (default: one per two cores)")
	udpBatch := fs.Int("udp-batch", 32, "datagrams read or written per system call (recvmmsg/sendmmsg); 1 turns batching off")
	leaseTTL := fs.Duration("lease-ttl", 10*time.Second, "node lease TTL when an agent names none")
	fs.StringVar(&cfg.StoreKind, "store", "embedded", "where registrations are kept: embedded (bbolt in --data-dir, one server) or etcd (shared by several servers)")
	etcdEndpoints := fs.String("etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd client URLs, with --store etcd")
	fs.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", "/signpost/", "etcd key prefix of the registry, with --store etcd")
	fs.BoolVar(&cfg.SkyDNS, "skydns", false, "with --store etcd: also keep every serving instance under /skydns/ in etcd, the layout CoreDNS's etcd plugin serves")
	fs.DurationVar(&cfg.Etcd.Timeout, "etcd-timeout", 5*time.Second, "budget of each etcd call, retries through a leader election included; writes fail with 503 past it")
	tcpMax := fs.Int("dns-tcp-max-conns", 1000, "open DNS TCP connections in all; past it the connection idle the longest is closed")
	tcpPerClient := fs.Int("dns-tcp-max-conns-per-client", 100, "open DNS TCP connections per client address; past it that client's connection idle the longest is closed")
	tcpIdle := fs.Duration("dns-tcp-idle-timeout", 10*time.Second, "close a DNS TCP connection that has not sent a whole query for this long")
	fs.StringVar(&cfg.Advertise, "advertise", "", "with --store etcd: the address or host name other servers reach this one at, announced in etcd with the --http and --dns ports (default: the --http host, which must then not be 0.0.0.0 or ::)")
	fs.DurationVar(&cfg.StaleAfter, "stale-after", staleness.DefaultStaleAfter, "with --store etcd: without an answer from etcd for this long the server is stale: /healthz says so and DNS answers from memory with a TTL of at most 1s")
	fs.DurationVar(&cfg.MaxStale, "max-stale", staleness.DefaultMaxStale, "with --store etcd: stale for longer than this while another server is current, the server answers SERVFAIL for the zone so that clients move to that one; when none is current, all answer their last known state")
	fs.BoolVar(&cfg.AllowLinkLocal, "allow-link-local", false, "accept registrations of link-local addresses (169.254.0.0/16, fe80::/10), refused by default")
	mkResolver := resolverFlags(fs)
	mkXfr := xfrFlags(fs)
	mkLocality := localityFlags(fs)
	allowedHosts := httpFlags(fs, &cfg)
	return func() (server.Config, error) {
		var err error
		if cfg.Resolver, err = mkResolver(); err != nil {
			return cfg, err
		}
		if cfg.Xfr, err = mkXfr(); err != nil {
			return cfg, err
		}
		cfg.DNS = dnsserver.Config{
			Zone:       *zone,
			TTL:        uint32(ttl.Seconds()),
			NegTTL:     uint32(negTTL.Seconds()),
			FailOpen:   *failOpen,
			MaxUDPSize: *maxUDP,
			UDPBatch:   *udpBatch,
		}
		if err := mkLocality(&cfg.DNS); err != nil {
			return cfg, err
		}
		cfg.DNS.MaxTCPConns, cfg.DNS.MaxTCPConnsPerClient, cfg.DNS.TCPIdleTimeout = *tcpMax, *tcpPerClient, *tcpIdle
		if *tcpMax < 1 || *tcpPerClient < 1 || *tcpIdle < 100*time.Millisecond {
			return cfg, fmt.Errorf("--dns-tcp-max-conns and --dns-tcp-max-conns-per-client: want at least 1; --dns-tcp-idle-timeout: at least 100ms")
		}
		if *ttl < time.Second || *negTTL < time.Second {
			return cfg, usagef("--ttl %s, --negative-ttl %s: want at least 1s", *ttl, *negTTL)
		}
		if cfg.StaleAfter < 500*time.Millisecond || cfg.MaxStale < cfg.StaleAfter {
			return cfg, usagef("--stale-after %s, --max-stale %s: want --stale-after at least 500ms and --max-stale at least --stale-after", cfg.StaleAfter, cfg.MaxStale)
		}
		if *leaseTTL < time.Second {
			return cfg, usagef("--lease-ttl %s: want at least 1s", *leaseTTL)
		}
		for _, a := range strings.Split(*nsAddrs, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return cfg, fmt.Errorf("--ns-address %q: not an IP address", a)
			}
			cfg.DNS.NSAddrs = append(cfg.DNS.NSAddrs, ip)
		}
		cfg.DefaultTTL = *leaseTTL
		cfg.AllowedHosts = splitList(*allowedHosts)
		if cfg.StoreKind == "etcd" {
			for _, e := range strings.Split(*etcdEndpoints, ",") {
				if e = strings.TrimSpace(e); e != "" {
					cfg.Etcd.Endpoints = append(cfg.Etcd.Endpoints, e)
				}
			}
		}
		return cfg, nil
	}
}

func runServer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("server", "[flags]")
	mkCfg := serverFlags(fs)
	mkLog := logFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := mkLog()
	if err != nil {
		return err
	}
	cfg, err := mkCfg()
	if err != nil {
		return err
	}
	cfg.Log = log
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	if err := buildinfo.Register(srv.Registry()); err != nil {
		return err
	}
	return srv.Run(ctx)
}

// httpFlags registers the API's access and limit flags (see README,
// "Limits"), and returns the --allowed-hosts value to split.
func httpFlags(fs *flag.FlagSet, cfg *server.Config) *string {
	d := httpguard.Defaults()
	l := &cfg.HTTPLimits
	fs.StringVar(&cfg.ReadTokenFile, "read-token-file", "", "file holding a bearer token that reads need too (default: reads are open, like DNS)")
	hosts := fs.String("allowed-hosts", "", "comma-separated host names clients may reach the API by, beside IP addresses and localhost (\"*.example.com\" for subdomains, \"*\" for any); checked when there is no --token-file or when set")
	fs.DurationVar(&l.ReadHeaderTimeout, "http-read-header-timeout", d.ReadHeaderTimeout, "longest a client may take to send a request's headers")
	fs.DurationVar(&l.ReadTimeout, "http-read-timeout", d.ReadTimeout, "longest a client may take to send a whole request, body included")
	fs.DurationVar(&l.WriteTimeout, "http-write-timeout", d.WriteTimeout, "longest an answer may take, and longest a watch or blocking query waits on a client that does not read")
	fs.DurationVar(&l.IdleTimeout, "http-idle-timeout", d.IdleTimeout, "idle keep-alive connections are closed after this")
	fs.IntVar(&l.MaxConns, "http-max-conns", 0, "open API connections in all; the oldest idle one is closed for a new one (default: half of (open-file limit - 64), 16 to 4096)")
	fs.IntVar(&l.MaxConnsPerClient, "http-max-conns-per-client", d.MaxConnsPerClient, "open API connections from one client IP")
	fs.IntVar(&l.MaxStreams, "http-max-streams", 0, "watches and blocking queries open in all, 503 beyond (default: half of --http-max-conns)")
	fs.IntVar(&l.MaxStreamsPerClient, "http-max-streams-per-client", d.MaxStreamsPerClient, "watches and blocking queries open from one client IP (429 beyond)")
	fs.Int64Var(&l.InstanceBody, "max-instance-body", d.InstanceBody, "largest body of one instance (PUT /v1/instances/ID), and each instance's share of a node set, in bytes")
	fs.Int64Var(&l.NodeSetBody, "max-node-set-body", d.NodeSetBody, "largest body of a node set (PUT /v1/nodes/NODE), in bytes, whatever its instance count")
	fs.Int64Var(&l.BodiesInFlight, "http-max-bodies-in-flight", d.BodiesInFlight, "bytes of instance and node set bodies read at once, in all (503 beyond); at least --max-node-set-body")
	fs.Int64Var(&l.BodiesInFlightPerClient, "http-max-bodies-in-flight-per-client", 0, "bytes of instance and node set bodies read at once from one client IP (429 beyond; default and least: --max-node-set-body)")
	return hosts
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
