package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"

	"github.com/signpost-dns/signpost/internal/forward"
)

// resolverFlags registers the flags of the resolver for containers
// (internal/forward) on fs, for `server` and `up`.
func resolverFlags(fs *flag.FlagSet) func() (forward.Config, error) {
	var cfg forward.Config
	var recursors, allow stringList
	fs.StringVar(&cfg.Addr, "resolver", "", "also answer DNS on this address as the resolver of containers (docker run --dns IP): the zone for everyone, other names forwarded to --recursor for --allow-recursion clients, REFUSED to anyone else; e.g. 172.17.0.1:53 (default: off)")
	fs.Var(&recursors, "recursor", "with --resolver: upstream resolver (host:port) for names outside the zone, repeatable (default: the name servers of /etc/resolv.conf)")
	fs.Var(&allow, "allow-recursion", "with --resolver: network (CIDR) whose clients may resolve names outside the zone, repeatable (default: loopback and the host's Docker bridge networks)")
	fs.IntVar(&cfg.MaxInflight, "resolver-max-inflight", forward.DefaultMaxInflight, "with --resolver: queries forwarded at once; past it SERVFAIL")
	fs.IntVar(&cfg.MaxTCPConns, "resolver-max-tcp-conns", forward.DefaultMaxTCPConns, "with --resolver: open TCP connections in all")
	fs.IntVar(&cfg.MaxTCPConnsPerClient, "resolver-max-tcp-conns-per-client", forward.DefaultMaxTCPConnsPerClient, "with --resolver: open TCP connections per client address (IPv6: per /64); past it the new one is closed")
	return func() (forward.Config, error) {
		for _, r := range recursors {
			if _, err := netip.ParseAddrPort(r); err != nil {
				if ip, perr := netip.ParseAddr(r); perr == nil {
					r = net.JoinHostPort(ip.String(), "53")
				} else {
					return cfg, fmt.Errorf("--recursor %q: want IP or IP:port", r)
				}
			}
			cfg.Upstreams = append(cfg.Upstreams, r)
		}
		for _, a := range allow {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return cfg, fmt.Errorf("--allow-recursion %q: want a network such as 172.17.0.0/16: %w", a, err)
			}
			cfg.Allow = append(cfg.Allow, p.Masked())
		}
		if err := atLeastOne(intFlag{"--resolver-max-inflight", cfg.MaxInflight}, intFlag{"--resolver-max-tcp-conns", cfg.MaxTCPConns}, intFlag{"--resolver-max-tcp-conns-per-client", cfg.MaxTCPConnsPerClient}); err != nil {
			return cfg, err
		}
		if cfg.MaxTCPConnsPerClient > cfg.MaxTCPConns {
			return cfg, fmt.Errorf("--resolver-max-tcp-conns-per-client %d: more than --resolver-max-tcp-conns %d", cfg.MaxTCPConnsPerClient, cfg.MaxTCPConns)
		}
		if cfg.Addr == "" && (len(recursors) > 0 || len(allow) > 0) {
			return cfg, fmt.Errorf("--recursor and --allow-recursion need --resolver")
		}
		return cfg, nil
	}
}

// intFlag is a flag's name and value, for atLeastOne.
type intFlag struct {
	name string
	v    int
}

// atLeastOne names the first flag below 1.
func atLeastOne(flags ...intFlag) error {
	for _, f := range flags {
		if f.v < 1 {
			return fmt.Errorf("%s %d: want at least 1", f.name, f.v)
		}
	}
	return nil
}
