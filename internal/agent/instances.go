package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/registry"
)

// Address modes: which address and port an instance is registered with.
const (
	// ModeHost registers the host's address (or the specific host IP a
	// port is bound to) with the published host port.
	ModeHost = "host"
	// ModeContainer registers the container's address on one network with
	// the container port, for user-defined and overlay networks.
	ModeContainer = "container"
)

// Labels that override the agent's address settings for one container.
const (
	// LabelAddressMode is "host" or "container".
	LabelAddressMode = "signpost.address-mode"
	// LabelNetwork names the network whose address container mode uses.
	LabelNetwork = "signpost.network"
)

// InstanceID is the stable id of one container port on one node: the
// container's short id, the port, the protocol and a short hash of the
// node, so that a restarted agent registers the same ids again and two
// hosts never collide. It is a DNS label of at most 31 characters.
func InstanceID(node, containerID string, port uint16, proto string) string {
	h := sha256.Sum256([]byte(node))
	return fmt.Sprintf("%s-%d-%s-%s", strings.ToLower(shortID(containerID)), port, proto, hex.EncodeToString(h[:3]))
}

// note is something the agent tells the user about one container: a
// warning about its conventions or a port it cannot register. key makes
// it said once per container, not at every resync.
type note struct {
	key   string
	msg   string
	attrs []any
	info  bool // logged at INFO, not WARN
}

// instances computes what one running container registers, and the notes
// worth logging about it.
func (a *Agent) instances(c container) ([]registry.Instance, []health.Spec, []note) {
	if isECSPause(c.Labels) {
		return nil, nil, []note{ecsPauseNote(c)}
	}
	conv := conventions.Input{Container: c.Name, Env: c.Env, Labels: c.Labels, Ports: c.Ports}
	if strings.HasPrefix(c.NetworkMode, "container:") && !c.TaskAddr.IsValid() && isECSTask(c.Labels) && conventions.Any(conv) {
		// Docker shows an awsvpc task's containers with no ports: say
		// why, rather than that the container lacks its SERVICE_ ports.
		return nil, nil, []note{ecsHint(c)}
	}
	var notes []note
	res := conventions.Parse(conv)
	for _, w := range res.Warnings {
		notes = append(notes, note{key: "conv:" + w.Var, msg: "bad service convention; port skipped",
			attrs: []any{"container", c.Name, "variable", w.Var, "value", w.Value, "reason", w.Reason}})
	}
	for _, w := range res.Typos {
		notes = append(notes, note{key: "typo:" + w.Var, msg: "SERVICE_* variable looks like a typo",
			attrs: []any{"container", c.Name, "variable", w.Var, "value", w.Value, "reason", w.Reason}})
	}
	for _, w := range res.Normalized {
		notes = append(notes, note{key: "case:" + w.Var, msg: "service name normalised", info: true,
			attrs: []any{"container", c.Name, "variable", w.Var, "value", w.Value, "reason", w.Reason}})
	}
	if res.Ignored || len(res.Ports) == 0 {
		return nil, nil, notes
	}
	mode := a.cfg.AddressMode
	if v, ok := c.Labels[LabelAddressMode]; ok {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case ModeHost, ModeContainer:
			mode = v
		default:
			notes = append(notes, note{key: "label:" + LabelAddressMode, msg: "bad address-mode label; using the agent's mode",
				attrs: []any{"container", c.Name, "label", LabelAddressMode, "value", v, "want", "host or container", "mode", mode}})
		}
	}
	network := a.cfg.Network
	if v := strings.TrimSpace(c.Labels[LabelNetwork]); v != "" {
		network = v
	}
	var out []registry.Instance
	var given []string
	var specs []health.Spec
	for _, p := range res.Ports {
		meta := p.Meta
		if a.cfg.ECSMetadata {
			var ns []note
			meta, ns = withECSMeta(c, meta)
			notes = append(notes, ns...)
		}
		if a.cfg.Zone != "" {
			var ns []note
			meta, ns = withZone(c, meta, a.cfg.Zone)
			notes = append(notes, ns...)
		}
		in := registry.Instance{
			ID:       InstanceID(a.cfg.Node, c.ID, p.Port, p.Proto),
			Service:  p.Service,
			Protocol: p.Proto,
			Weight:   p.Weight,
			Priority: p.Priority,
			Tags:     p.Tags,
			Meta:     meta,
			Node:     a.cfg.Node,
		}
		if in.Container = c.Name; len(in.Container) > registry.MaxNodeLen {
			in.Container = in.Container[:registry.MaxNodeLen]
		}
		switch {
		case c.NetworkMode == "host":
			// The container shares the host's stack: its ports are the host's.
			in.Address, in.Port = a.hostIP, p.Port
		case strings.HasPrefix(c.NetworkMode, "container:") && c.TaskAddr.IsValid():
			// An ECS awsvpc task: its ENI's address, and the container
			// port (the host port is the container port in awsvpc mode).
			in.Address, in.Port = c.TaskAddr, p.Port
		case strings.HasPrefix(c.NetworkMode, "container:"):
			notes = append(notes, note{key: "netmode", msg: "container shares another container's network; register the ports on that one",
				attrs: []any{"container", c.Name, "network_mode", c.NetworkMode}})
			return nil, nil, notes
		case c.NetworkMode == "none":
			notes = append(notes, note{key: "netmode", msg: "container has no network; nothing to register",
				attrs: []any{"container", c.Name}})
			return nil, nil, notes
		case mode == ModeContainer:
			ip, ok := pickNetwork(c.Networks, network)
			if !ok {
				names := make([]string, 0, len(c.Networks))
				for k := range c.Networks {
					names = append(names, k)
				}
				sort.Strings(names)
				if len(names) == 0 {
					notes = append(notes, note{key: "network", msg: "container mode: the engine's inspect reports no networks for the container (Podman before 3.2, containers/podman#9837); container skipped (use host address mode)",
						attrs: []any{"container", c.Name, "network", network}})
					return nil, nil, notes
				}
				notes = append(notes, note{key: "network", msg: "container mode: no address on the chosen network; container skipped (set --network or the signpost.network label)",
					attrs: []any{"container", c.Name, "network", network, "networks", strings.Join(names, ",")}})
				return nil, nil, notes
			}
			in.Address, in.Port = ip, p.Port
		default:
			b, ok := pickBinding(c.Bindings[p.ContainerPort], a.hostIP)
			if !ok && c.PortsFromConfig {
				notes = append(notes, note{key: "unpublished:" + p.String(), msg: "the engine's inspect reports no published ports (Podman 2.0, containers/podman#6803) and this port asked for no fixed host port; skipped (publish it on a fixed host port, -p HOSTPORT:PORT, or use container address mode)",
					attrs: []any{"container", c.Name, "port", p.String(), "service", p.Service}})
				continue
			}
			if !ok {
				notes = append(notes, note{key: "unpublished:" + p.String(), msg: "port not published to the host; skipped (publish it with -p, or use container address mode)",
					attrs: []any{"container", c.Name, "port", p.String(), "service", p.Service}})
				continue
			}
			in.Address, in.Port = b.HostIP, b.HostPort
			if !b.HostIP.IsValid() || b.HostIP.IsUnspecified() {
				in.Address = a.hostIP
			}
		}
		in.Normalize()
		if err := in.Validate(); err != nil {
			notes = append(notes, note{key: "invalid:" + p.String(), msg: "registration refused; port skipped",
				attrs: []any{"container", c.Name, "port", p.String(), "service", p.Service, "err", err}})
			continue
		}
		spec, cnotes := a.checkSpec(c, p)
		notes = append(notes, cnotes...)
		out = append(out, in)
		given = append(given, p.GivenName)
		specs = append(specs, spec)
	}
	// The internal metadata a backend needs to keep a container-level
	// layout (Route 53's: the record set named as the container wrote the
	// name, the SetIdentifier from the container id and its port count).
	// Set after validation so that it never costs the container one of its
	// own metadata keys; the server backend strips it.
	for i := range out {
		m := make(map[string]string, len(out[i].Meta)+3)
		for k, v := range out[i].Meta {
			if !backend.IsInternalMeta(k) { // the prefix is reserved
				m[k] = v
			}
		}
		if given[i] != "" {
			m[backend.MetaSRVName] = given[i]
		}
		m[backend.MetaContainerID] = c.ID
		m[backend.MetaContainerPorts] = strconv.Itoa(len(out))
		out[i].Meta = m
	}
	return out, specs, notes
}

// pickNetwork finds the container's address on the named network, or on
// its only network when none is named.
func pickNetwork(nets map[string]netip.Addr, name string) (netip.Addr, bool) {
	if name != "" {
		ip, ok := nets[name]
		return ip, ok && ip.IsValid()
	}
	if len(nets) == 1 {
		for _, ip := range nets {
			return ip, ip.IsValid()
		}
	}
	return netip.Addr{}, false
}

// pickBinding chooses one published binding of a port: one on every host
// address (registered with the host's address) in the host's address
// family first, then any IPv4 binding, then the first.
func pickBinding(bs []binding, host netip.Addr) (binding, bool) {
	if len(bs) == 0 {
		return binding{}, false
	}
	for _, b := range bs {
		if (!b.HostIP.IsValid() || b.HostIP.IsUnspecified()) && (!b.HostIP.IsValid() || b.HostIP.Is4() == host.Is4()) {
			return b, true
		}
	}
	for _, b := range bs {
		if b.HostIP.Is4() && !b.HostIP.IsUnspecified() {
			return b, true
		}
	}
	return bs[0], true
}

// withZone returns meta with the host's zone as registry.MetaZone, in
// place of the container's own. Metadata the registry refuses anyway is
// left as it is (the caller says why); the zone is left out, with a note,
// when it is the one key too many.
func withZone(c container, meta map[string]string, zone string) (map[string]string, []note) {
	if meta[registry.MetaZone] == zone || registry.CheckMeta(meta) != nil {
		return meta, nil
	}
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	prev, had := out[registry.MetaZone]
	out[registry.MetaZone] = zone
	if err := registry.CheckMeta(out); err != nil {
		return meta, []note{{key: "zone-meta", msg: "the agent's --node-zone not published as metadata: it breaks a registry limit",
			attrs: []any{"container", c.Name, "zone", zone, "err", err}}}
	}
	if had {
		return out, []note{{key: "zone-override", msg: "the agent's --node-zone replaces the container's own zone metadata", info: true,
			attrs: []any{"container", c.Name, "zone", zone, "container_zone", prev}}}
	}
	return out, nil
}
