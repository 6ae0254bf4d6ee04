package discovery

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// names returns the SRV owner names to query for service, in order.
//
//   - "calc" (one label): "_calc._tcp.<zone>." and then "calc.<zone>.".
//   - "_calc._tcp" (a service and a protocol label): "_calc._tcp.<zone>.".
//   - anything else ("calc.servicediscovery.internal", "_calc._tcp.example.")
//     is taken as a full name, as it is.
func names(service, zone string) ([]string, error) {
	s := strings.TrimSpace(service)
	if s == "" || s == "." {
		return nil, fmt.Errorf("discovery: empty service name")
	}
	if dns.IsFqdn(s) {
		return checked(service, dns.CanonicalName(s))
	}
	labels := dns.SplitDomainName(s)
	zone = strings.TrimSuffix(strings.TrimSpace(zone), ".")
	inZone := func(name string) string {
		if zone == "" {
			return dns.CanonicalName(name)
		}
		return dns.CanonicalName(name + "." + zone)
	}
	switch {
	case len(labels) == 1 && !strings.HasPrefix(s, "_"):
		return checked(service, inZone("_"+s+"._tcp"), inZone(s))
	case len(labels) == 2 && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		return checked(service, inZone(s))
	case len(labels) == 1:
		return checked(service, inZone(s))
	}
	return checked(service, dns.CanonicalName(s))
}

func checked(service string, names ...string) ([]string, error) {
	for _, n := range names {
		if _, ok := dns.IsDomainName(n); !ok {
			return nil, fmt.Errorf("discovery: service %q: %q is not a valid domain name", service, n)
		}
	}
	return names, nil
}
