package forward

import (
	"net"
	"testing"
)

// TestDockerBridgeNames: only Docker's own bridges are trusted by default.
// Other Linux bridges are often named br-something too (OpenWrt's br-lan,
// OpenStack's br-ex): they face a LAN, and allowing them would make the
// resolver open to it.
func TestDockerBridgeNames(t *testing.T) {
	for name, want := range map[string]bool{
		"docker0":          true,
		"docker_gwbridge":  true,
		"br-3f2a9c1b7d0e":  true, // a user network: br- and its ID's first 12 hex digits
		"br-lan":           false,
		"br-ex":            false,
		"br-int":           false,
		"br-3f2a9c1b7d0":   false,
		"br-3f2a9c1b7d0e1": false,
		"br-3F2A9C1B7D0E":  false,
		"br-3f2a9c1b7d0g":  false,
		"docker1":          false,
		"eth0":             false,
		"br0":              false,
	} {
		if got := isDockerBridge(name); got != want {
			t.Errorf("isDockerBridge(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestClientOf: a TCP share is counted per IPv4 address and per IPv6 /64.
func TestClientOf(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.2":            "127.0.0.2",
		"::ffff:10.0.0.1":      "10.0.0.1",
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::",
		"2001:db8:1:2:bbbb::9": "2001:db8:1:2::",
		"2001:db8:1:3::1":      "2001:db8:1:3::",
	} {
		a := &net.TCPAddr{IP: net.ParseIP(in), Port: 5353}
		if got := clientOf(a); got.String() != want {
			t.Errorf("clientOf(%s) = %s, want %s", in, got, want)
		}
	}
}
