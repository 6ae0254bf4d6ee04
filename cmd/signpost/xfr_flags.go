package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/signpost-dns/signpost/internal/zonexfr"
)

// xfrFlags registers the flags of zone transfers to secondaries
// (internal/zonexfr) on fs, for `server` and `up`.
func xfrFlags(fs *flag.FlagSet) func() (zonexfr.Config, error) {
	var cfg zonexfr.Config
	allow := fs.String("xfr-allow", "", "comma-separated addresses or networks (127.0.0.1/32,10.0.0.0/24) that may transfer the zone by AXFR/IXFR, as secondaries (BIND, NSD, Knot); everyone else gets REFUSED (default: transfers off)")
	keyFile := fs.String("xfr-tsig-file", "", "file holding the TSIG key name:algorithm:base64secret (hmac-sha256, ...) that transfers must be signed with and NOTIFY is signed with (default: no TSIG, addresses only)")
	notify := fs.String("xfr-notify", "", "comma-separated secondaries (IP or IP:port, port 53 by default) sent a NOTIFY when the zone changes; each must be in --xfr-allow")
	fs.IntVar(&cfg.MaxTransfers, "xfr-max-transfers", zonexfr.DefaultMaxTransfers, "zone transfers running at once; past it REFUSED")
	fs.DurationVar(&cfg.Timeout, "xfr-timeout", zonexfr.DefaultTimeout, "longest a transfer connection stays open, however slowly the secondary reads")
	fs.IntVar(&cfg.JournalSerials, "xfr-journal-serials", zonexfr.DefaultJournalSerials, "IXFR journal: changes kept; a secondary at an older serial gets the whole zone")
	fs.IntVar(&cfg.JournalRecords, "xfr-journal-records", zonexfr.DefaultJournalRecords, "IXFR journal: records (deleted and added) kept in all")
	fs.DurationVar(&cfg.NotifyDelay, "xfr-notify-delay", zonexfr.DefaultNotifyDelay, "NOTIFY coalescing: one round at most this often, this long after the first change")
	return func() (zonexfr.Config, error) {
		for _, a := range splitList(*allow) {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				ip, ierr := netip.ParseAddr(a)
				if ierr != nil {
					return cfg, fmt.Errorf("--xfr-allow %q: want an address or a network such as 10.0.0.0/24", a)
				}
				p = netip.PrefixFrom(ip, ip.BitLen())
			}
			cfg.Allow = append(cfg.Allow, p.Masked())
		}
		for _, n := range splitList(*notify) {
			ap, err := netip.ParseAddrPort(n)
			if err != nil {
				ip, ierr := netip.ParseAddr(strings.Trim(n, "[]"))
				if ierr != nil {
					return cfg, fmt.Errorf("--xfr-notify %q: want IP or IP:port", n)
				}
				ap = netip.AddrPortFrom(ip, 53)
			}
			allowed := false
			for _, p := range cfg.Allow {
				allowed = allowed || p.Contains(ap.Addr().Unmap())
			}
			if !allowed {
				return cfg, fmt.Errorf("--xfr-notify %s: not in --xfr-allow, so it could not fetch the zone it is told of", net.JoinHostPort(ap.Addr().String(), fmt.Sprint(ap.Port())))
			}
			cfg.Notify = append(cfg.Notify, ap)
		}
		if *keyFile != "" {
			if len(cfg.Allow) == 0 {
				return cfg, fmt.Errorf("--xfr-tsig-file needs --xfr-allow")
			}
			k, err := zonexfr.ReadKeyFile(*keyFile)
			if err != nil {
				return cfg, err
			}
			cfg.Key = k
		}
		if err := atLeastOne(intFlag{"--xfr-max-transfers", cfg.MaxTransfers}, intFlag{"--xfr-journal-serials", cfg.JournalSerials}, intFlag{"--xfr-journal-records", cfg.JournalRecords}); err != nil {
			return cfg, err
		}
		if cfg.Timeout.Seconds() < 1 || cfg.NotifyDelay.Milliseconds() < 10 {
			return cfg, fmt.Errorf("--xfr-timeout %s, --xfr-notify-delay %s: want at least 1s and 10ms", cfg.Timeout, cfg.NotifyDelay)
		}
		return cfg, nil
	}
}
