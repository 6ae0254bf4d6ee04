package main

import (
	"flag"
	"strings"

	"github.com/signpost-dns/signpost/internal/dnsserver"
)

// localityFlags registers --locality and --locality-zone on fs and
// returns what reads them into a DNS configuration.
func localityFlags(fs *flag.FlagSet) func(*dnsserver.Config) error {
	mode := fs.String("locality", "off", `answer a service's SRV, A and AAAA with the instances near the asker first ("order") or alone while one of them passes ("prefer"): those on its own host (the instance address is the asker's source address), then those in its zone (--locality-zone; instance metadata "zone", set by the agent's --node-zone); "off": every asker alike`)
	var zones []dnsserver.LocalityZone
	fs.Func("locality-zone", "with --locality: askers whose source address is in CIDR are in zone label, CIDR=label, e.g. 10.0.1.0/24=us-east-1a (repeatable, or comma-separated; the longest prefix wins)", func(v string) error {
		for _, one := range strings.Split(v, ",") {
			if one = strings.TrimSpace(one); one == "" {
				continue
			}
			lz, err := dnsserver.ParseLocalityZone(one)
			if err != nil {
				return err
			}
			zones = append(zones, lz)
		}
		return nil
	})
	return func(cfg *dnsserver.Config) error {
		m, err := dnsserver.ParseLocality(*mode)
		if err != nil {
			return usagef("--locality: %v", err)
		}
		cfg.Locality, cfg.LocalityZones = m, zones
		return nil
	}
}
