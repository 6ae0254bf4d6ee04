package route53backend

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Metadata keys the agent sets on an instance so that its records keep the
// original agent's layout. All are optional.
const (
	// MetaSRVName is the service name exactly as the container gave it in
	// SERVICE_<port>_NAME: "calc" or "_calc._tcp". The SRV record set is
	// named <value>.<zone>. Default: "_<service>._<protocol>".
	MetaSRVName = backend.MetaSRVName
	// MetaContainerID is the container's full id; the SetIdentifier is
	// <hostname>:<container id>. Default: the instance's ID.
	MetaContainerID = backend.MetaContainerID
	// MetaContainerPorts is how many service ports the container
	// registers; above 1 the SetIdentifier gets ":<port>" (the registered
	// port) so that the container's records stay apart.
	MetaContainerPorts = backend.MetaContainerPorts
)

// Fixed parts of the original layout.
const (
	srvPriority   = 1
	srvWeight     = 1
	routingWeight = 1
	maxSetID      = 128
)

// layout writes records the way the original agent did.
type layout struct {
	zone string // lower case, trailing dot
	host string // lower case, no trailing dot
	ttl  int64
}

// hostRecordName is "<first label of hostname>.<zone>".
func (l *layout) hostRecordName() string {
	label, _, _ := strings.Cut(l.host, ".")
	return label + "." + l.zone
}

func recKey(name string, typ types.RRType, setID string) string {
	return fqdn(name) + "|" + string(typ) + "|" + setID
}

func keyOf(rs *types.ResourceRecordSet) string {
	return recKey(aws.ToString(rs.Name), rs.Type, aws.ToString(rs.SetIdentifier))
}

// owns reports whether rs is one of this host's record sets: an SRV set
// whose SetIdentifier begins with "<hostname>:", or the host's own A/AAAA
// record. Nothing else is ever changed.
func (l *layout) owns(rs *types.ResourceRecordSet) bool {
	id := aws.ToString(rs.SetIdentifier)
	switch rs.Type {
	case types.RRTypeSrv:
		return strings.HasPrefix(id, l.host+":")
	case types.RRTypeA, types.RRTypeAaaa:
		return id == l.host && fqdn(aws.ToString(rs.Name)) == l.hostRecordName()
	}
	return false
}

// srvName returns the first part of the SRV record set's name for inst.
func srvName(inst *registry.Instance) (string, error) {
	given, ok := inst.Meta[MetaSRVName]
	if !ok {
		return "_" + inst.Service + "._" + inst.Protocol, nil
	}
	name, proto, err := registry.ParseServiceName(given)
	if err != nil {
		return "", fmt.Errorf("metadata %s: %w", MetaSRVName, err)
	}
	if name != inst.Service || (proto != "" && proto != inst.Protocol) {
		return "", fmt.Errorf("metadata %s=%q does not name service %s/%s", MetaSRVName, given, inst.Service, inst.Protocol)
	}
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(given)), "."), nil
}

// setID returns the SetIdentifier of inst's SRV record set.
func (l *layout) setID(inst *registry.Instance) (string, error) {
	cid, ok := inst.Meta[MetaContainerID]
	if !ok {
		cid = inst.ID
	}
	if cid == "" || strings.ContainsAny(cid, ": \t") {
		return "", fmt.Errorf("metadata %s=%q: want a container id", MetaContainerID, cid)
	}
	id := l.host + ":" + cid
	if v, ok := inst.Meta[MetaContainerPorts]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return "", fmt.Errorf("metadata %s=%q: want a count of ports", MetaContainerPorts, v)
		}
		if n > 1 {
			id += ":" + strconv.Itoa(int(inst.Port))
		}
	}
	if len(id) > maxSetID {
		return "", fmt.Errorf("set identifier %q is longer than Route 53's %d characters", id, maxSetID)
	}
	return id, nil
}

// srv returns inst's SRV record set: <name>.<zone> SRV "1 1 <port>
// <hostname>", SetIdentifier <hostname>:<container id>[:<port>], weight 1.
func (l *layout) srv(inst *registry.Instance) (types.ResourceRecordSet, error) {
	if inst.Port == 0 {
		return types.ResourceRecordSet{}, fmt.Errorf("instance %s (%s): port 0", inst.ID, inst.Service)
	}
	name, err := srvName(inst)
	if err != nil {
		return types.ResourceRecordSet{}, fmt.Errorf("instance %s (%s): %w", inst.ID, inst.Service, err)
	}
	id, err := l.setID(inst)
	if err != nil {
		return types.ResourceRecordSet{}, fmt.Errorf("instance %s (%s): %w", inst.ID, inst.Service, err)
	}
	return types.ResourceRecordSet{
		Name:          aws.String(name + "." + l.zone),
		Type:          types.RRTypeSrv,
		SetIdentifier: aws.String(id),
		Weight:        aws.Int64(routingWeight),
		TTL:           aws.Int64(l.ttl),
		ResourceRecords: []types.ResourceRecord{{
			Value: aws.String(fmt.Sprintf("%d %d %d %s", srvPriority, srvWeight, inst.Port, l.host)),
		}},
	}, nil
}

// hostRecord returns the host's A (or AAAA) record set: <first label>.<zone>
// with SetIdentifier <hostname>, weight 1.
func (l *layout) hostRecord(addr netip.Addr) types.ResourceRecordSet {
	typ := types.RRTypeA
	if addr.Is6() {
		typ = types.RRTypeAaaa
	}
	return types.ResourceRecordSet{
		Name:            aws.String(l.hostRecordName()),
		Type:            typ,
		SetIdentifier:   aws.String(l.host),
		Weight:          aws.Int64(routingWeight),
		TTL:             aws.Int64(l.ttl),
		ResourceRecords: []types.ResourceRecord{{Value: aws.String(addr.String())}},
	}
}

// sameSet reports whether two record sets are equal in everything a DELETE
// must match.
func sameSet(a, b *types.ResourceRecordSet) bool {
	return aws.ToInt64(a.TTL) == aws.ToInt64(b.TTL) &&
		(a.Weight == nil) == (b.Weight == nil) && aws.ToInt64(a.Weight) == aws.ToInt64(b.Weight) &&
		sameValues(a, b)
}

// sameValues reports whether two record sets have the same name, type,
// set identifier and values, whatever their TTL and routing weight.
func sameValues(a, b *types.ResourceRecordSet) bool {
	if keyOf(a) != keyOf(b) || len(a.ResourceRecords) != len(b.ResourceRecords) {
		return false
	}
	seen := map[string]int{}
	for _, r := range a.ResourceRecords {
		seen[aws.ToString(r.Value)]++
	}
	for _, r := range b.ResourceRecords {
		v := aws.ToString(r.Value)
		if seen[v] == 0 {
			return false
		}
		seen[v]--
	}
	return true
}

func describe(rs *types.ResourceRecordSet) string {
	return fmt.Sprintf("%s %s [%s]", fqdn(aws.ToString(rs.Name)), rs.Type, aws.ToString(rs.SetIdentifier))
}
