package registry

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// MaxName is the longest domain name in wire form (RFC 1035 s2.3.4).
const MaxName = 255

// DNSNames checks registrations against the names they produce in one
// zone Z: the SRV target <id>.<service>.Z, the service names <service>.Z
// and _<service>._<proto>.Z, the DNS-SD instance name
// <id>._<service>._<proto>.Z, and for each tag that is a DNS label (see
// TagLabel) <tag>.tag.<service>.Z, _<tag>._<service>._<proto>.Z and the
// DNS-SD subtype _<tag>._sub._<service>._<proto>.Z, the longest of those. Validate checks what
// holds in every zone (labels, TXT strings); DNSNames adds what depends
// on the zone, the service names the zone reserves, and the address
// policy of the server.
type DNSNames struct {
	zone     string
	zoneWire int
	reserved map[string]string
	// ReservedIDs maps instance IDs that the zone's own names would
	// share a name with to the reason (the tag names' tag.<service>.Z).
	ReservedIDs map[string]string
	// AllowLinkLocal accepts link-local addresses (169.254.0.0/16,
	// fe80::/10), refused by default: they are not reachable from another
	// host, and 169.254.169.254 is the cloud metadata service.
	AllowLinkLocal bool
}

// NewDNSNames returns the checks for zone. reserved maps service names
// that the zone's own names would shadow or be shadowed by to the reason.
// It fails when the zone is so long that no registration could fit.
func NewDNSNames(zone string, reserved map[string]string) (*DNSNames, error) {
	fqdn := strings.ToLower(strings.TrimSuffix(zone, ".")) + "."
	n := &DNSNames{zone: fqdn, zoneWire: len(fqdn) + 1, reserved: reserved}
	if room := n.room(); room < 2 {
		return nil, fmt.Errorf("zone %q is %d bytes in wire form: it leaves no room under the %d-byte limit for <id>._<service>._tcp.<zone>", zone, n.zoneWire, MaxName)
	}
	return n, nil
}

// room is how many bytes of id and service together fit in the longest
// name a registration produces, <id>._<service>._<proto>.Z: the length
// bytes of three labels, "_" and "_tcp" take 8.
func (n *DNSNames) room() int { return MaxName - n.zoneWire - 8 }

// Room returns how many bytes an instance ID and its service name may take
// together in this zone.
func (n *DNSNames) Room() int { return n.room() }

// TagRoom returns how many bytes a tag may take in the names of service
// in this zone: its DNS-SD subtype name _<tag>._sub._<service>._<proto>.Z
// stays within 255 bytes (the length bytes of four labels, three "_",
// "sub" and "tcp" take 14).
func (n *DNSNames) TagRoom(service string) int { return TagRoom(n.zoneWire, service) }

// TagRoom returns how many bytes a tag may take in the names of service
// in a zone of zoneWire bytes in wire form (see DNSNames.TagRoom).
func TagRoom(zoneWire int, service string) int {
	return min(MaxName-zoneWire-14-len(service), MaxTagLabel)
}

// Check returns a *FieldError when in, already normalized and valid,
// cannot be published in the zone.
func (n *DNSNames) Check(in *Instance) error {
	if why, ok := n.reserved[in.Service]; ok {
		return &FieldError{"service", in.Service, "reserved: " + why}
	}
	if why, ok := n.ReservedIDs[in.ID]; ok {
		return &FieldError{"id", in.ID, "reserved: " + why}
	}
	if len(in.ID)+len(in.Service) > n.room() {
		longest := in.ID + "._" + in.Service + "._" + in.Protocol + "." + n.zone
		return &FieldError{"id", in.ID, fmt.Sprintf("the DNS-SD name %s would be %d bytes, over DNS's %d: in zone %s, id and service may take %d bytes together",
			clip(longest), len(in.ID)+len(in.Service)+8+n.zoneWire, MaxName, n.zone, n.room())}
	}
	room := n.TagRoom(in.Service)
	for _, t := range in.Tags {
		if l, ok := TagLabel(t); ok && len(l) > room {
			return &FieldError{"tags", t, fmt.Sprintf("the DNS-SD subtype name _<tag>._sub._%s._%s.Z would be %d bytes, over DNS's %d: in zone %s, a tag of service %s may take %d bytes",
				in.Service, in.Protocol, len(l)+len(in.Service)+14+n.zoneWire, MaxName, n.zone, in.Service, max(room, 0))}
		}
	}
	if !n.AllowLinkLocal && (in.Address.IsLinkLocalUnicast()) {
		return &FieldError{"address", in.Address.String(), "link-local address (169.254.0.0/16, fe80::/10) is not reachable from other hosts; 169.254.169.254 is the cloud metadata service"}
	}
	return nil
}

// Guard returns st with every write checked against the zone first, so
// that what is accepted can be served.
func (n *DNSNames) Guard(st Store) Store { return &guarded{Store: st, names: n} }

type guarded struct {
	Store
	names *DNSNames
}

func (g *guarded) Put(ctx context.Context, inst Instance) (int64, error) {
	in, err := Prepare(inst)
	if err != nil {
		return 0, err
	}
	if err := g.names.Check(&in); err != nil {
		return 0, err
	}
	return g.Store.Put(ctx, inst)
}

func (g *guarded) ReplaceNode(ctx context.Context, node string, ttl time.Duration, insts []Instance) (int64, error) {
	if _, err := PrepareNodeSet(node, ttl, insts); err != nil {
		return 0, err
	}
	for i, raw := range insts {
		raw.Node = node
		in, err := Prepare(raw)
		if err != nil {
			return 0, fmt.Errorf("instances[%d] (%q): %w", i, raw.ID, err)
		}
		if err := g.names.Check(&in); err != nil {
			return 0, fmt.Errorf("instances[%d] (%q): %w", i, raw.ID, err)
		}
	}
	return g.Store.ReplaceNode(ctx, node, ttl, insts)
}
