package main

import (
	"context"
	"fmt"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/discovery"
)

// resolveMissingGlue fills addrs (target name -> addresses) for the SRV
// targets that came without glue, by asking server for their A and AAAA
// records: resolvers such as Unbound (minimal-responses) and dnsmasq
// (cached answers) forward SRV answers without the Additional section.
func resolveMissingGlue(ctx context.Context, server string, timeout time.Duration, srvs []*dns.SRV, addrs map[string][]string) error {
	r := &discovery.Resolver{Server: server, Timeout: timeout}
	for _, s := range srvs {
		if _, ok := addrs[s.Target]; ok {
			continue
		}
		found, err := r.LookupAddrs(ctx, s.Target)
		if err != nil {
			return fmt.Errorf("address of SRV target %s: %w", s.Target, err)
		}
		list := []string{}
		for _, a := range found {
			list = append(list, a.String())
		}
		addrs[s.Target] = list
	}
	return nil
}
