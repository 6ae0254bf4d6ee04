package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/server"
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
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file holding the bearer token that writes need; required to listen for writes beyond loopback")
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
	etcdEndpoints := fs.String("etcd-endpoints", envOr("SIGNPOST_ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "comma-separated etcd client URLs, with --store etcd (env SIGNPOST_ETCD_ENDPOINTS)")
	fs.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", "/signpost/", "etcd key prefix of the registry, with --store etcd")
	fs.BoolVar(&cfg.SkyDNS, "skydns", false, "with --store etcd: also keep every serving instance under /skydns/ in etcd, the layout CoreDNS's etcd plugin serves")
	fs.DurationVar(&cfg.Etcd.Timeout, "etcd-timeout", 5*time.Second, "budget of each etcd call, retries through a leader election included; writes fail with 503 past it")
	return func() (server.Config, error) {
		cfg.DNS = dnsserver.Config{
			Zone:       *zone,
			TTL:        uint32(ttl.Seconds()),
			NegTTL:     uint32(negTTL.Seconds()),
			FailOpen:   *failOpen,
			MaxUDPSize: *maxUDP,
			UDPBatch:   *udpBatch,
		}
		if *ttl < time.Second || *negTTL < time.Second {
			return cfg, fmt.Errorf("--ttl and --negative-ttl: want at least 1s")
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
	return srv.Run(ctx)
}
