package forward

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// loopback are the networks always allowed by DefaultAllow.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// refreshEvery bounds how often an unknown client makes the host's
// networks be looked up again.
const refreshEvery = 5 * time.Second

// DefaultAllow returns loopback and the networks of the host's Docker
// bridges (docker0, docker_gwbridge, and br-<12 hex digits> of user
// networks; see isDockerBridge), as
// they are now, without link-local ones.
func DefaultAllow() []netip.Prefix {
	out := slices.Clone(loopback)
	ifs, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifs {
		if !isDockerBridge(ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				// Link-local prefixes (fe80::/64) are the same on every
				// link: allowing them would allow the whole LAN.
				if p, err := netip.ParsePrefix(n.String()); err == nil && !p.Addr().IsLinkLocalUnicast() {
					out = append(out, p.Masked())
				}
			}
		}
	}
	return out
}

// allowList is the set of networks allowed recursion. When it follows
// the host, an unknown client makes it look the host's networks up
// again (at most every refreshEvery), so that Docker networks created
// after the start are allowed too.
type allowList struct {
	follow bool

	mu       sync.Mutex
	prefixes []netip.Prefix
	checked  time.Time
}

func fixedAllow(p []netip.Prefix) *allowList {
	return &allowList{prefixes: slices.Clone(p)}
}

func hostAllow() *allowList {
	return &allowList{follow: true, prefixes: DefaultAllow(), checked: time.Now()}
}

func (l *allowList) contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if in(l.prefixes, a) {
		return true
	}
	if !l.follow || time.Since(l.checked) < refreshEvery {
		return false
	}
	l.prefixes, l.checked = DefaultAllow(), time.Now()
	return in(l.prefixes, a)
}

func (l *allowList) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := make([]string, len(l.prefixes))
	for i, p := range l.prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func in(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// isDockerBridge reports whether name is one of Docker's bridges:
// docker0, docker_gwbridge, or br- and the first 12 hex digits of a user
// network's ID. Other bridges named br-something (OpenWrt's br-lan,
// OpenStack's br-ex) often face a LAN: allowing them would open the
// resolver to it.
func isDockerBridge(name string) bool {
	if name == "docker0" || name == "docker_gwbridge" {
		return true
	}
	id, ok := strings.CutPrefix(name, "br-")
	if !ok || len(id) != 12 {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
