// Package fleet runs signpost as a fleet runs it, on one machine: hosts
// in network namespaces with their own addresses on a private bridge,
// three etcd members, two signpost servers, agent hosts and a client
// host, with the means to stop, pause or cut off any of them. The fleet
// test (fleet_test.go) drives traffic through it while a nemesis injects
// faults, records everything in a history.History, and checks it with
// internal/fleet/check.
//
// Everything lives in namespaces the test creates and removes: the
// bridge itself sits in a namespace of its own, so that nothing of the
// host's network (Docker's FORWARD DROP included) is touched, and no
// packet leaves the test's hosts.
package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Subnet is the hosts' network; host n (from 1) has 10.77.0.(10+n).
var Subnet = netip.MustParsePrefix("10.77.0.0/24")

// Net is the test's network: a bridge in its own namespace and a host
// namespace per host, each wired to the bridge by a veth pair.
type Net struct {
	t      testing.TB
	prefix string // namespace names start with it
	bridge string // the bridge's namespace
	mu     sync.Mutex
	hosts  []*Host
}

// Host is one machine of the fleet: a network namespace with one address.
type Host struct {
	Name string
	NS   string // namespace name (ip netns)
	Addr netip.Addr
	net  *Net
	veth string // the bridge side of its link, in the bridge namespace
}

// Skip skips t, loudly, where the fleet cannot run: not root, or no ip
// or nft. In CI (CI set) it fails instead: CI must run the fleet test.
func Skip(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root: network namespaces need CAP_SYS_ADMIN"
	case !have("ip"):
		why = "no ip command (apt-get install iproute2)"
	case !have("nft"):
		why = "no nft command (apt-get install nftables)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the fleet test cannot run: %s", why)
	}
	t.Skipf("SKIPPED: the fleet test cannot run here: %s", why)
}

func have(cmd string) bool {
	_, err := exec.LookPath(cmd)
	return err == nil
}

// NewNet creates the bridge namespace; Cleanup removes it and every host.
func NewNet(t testing.TB) *Net {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	n := &Net{t: t, prefix: "spf" + hex.EncodeToString(b[:])}
	n.bridge = n.prefix + "-br"
	t.Cleanup(n.remove)
	n.must("netns", "add", n.bridge)
	n.must("-n", n.bridge, "link", "set", "lo", "up")
	n.must("-n", n.bridge, "link", "add", "br0", "type", "bridge")
	n.must("-n", n.bridge, "link", "set", "br0", "up")
	return n
}

// AddHost creates host name with the next address of Subnet.
func (n *Net) AddHost(name string) *Host {
	n.t.Helper()
	n.mu.Lock()
	idx := len(n.hosts) + 1
	n.mu.Unlock()
	h := &Host{
		Name: name,
		NS:   fmt.Sprintf("%s-%s", n.prefix, name),
		Addr: netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + idx)}),
		net:  n,
		veth: fmt.Sprintf("v%d", idx),
	}
	n.must("netns", "add", h.NS)
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	n.must("-n", n.bridge, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	n.must("-n", n.bridge, "link", "set", h.veth, "master", "br0", "up")
	n.must("-n", h.NS, "link", "set", "lo", "up")
	n.must("-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, Subnet.Bits()).String(), "dev", "eth0")
	n.must("-n", h.NS, "link", "set", "eth0", "up")
	return h
}

// Hosts are the hosts in the order they were added.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

func (n *Net) remove() {
	for _, h := range n.Hosts() {
		_ = ip("netns", "del", h.NS)
	}
	_ = ip("netns", "del", n.bridge)
}

func (n *Net) must(args ...string) {
	n.t.Helper()
	if err := ip(args...); err != nil {
		n.t.Fatal(err)
	}
}

func ip(args ...string) error {
	return run("ip", nil, args...)
}

func run(cmd string, stdin []byte, args ...string) error {
	c := exec.Command(cmd, args...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", cmd, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Cut takes h's link to the bridge down: h reaches nobody and nobody
// reaches it, as a host whose switch port died. Heal brings it back.
func (h *Host) Cut() error {
	return ip("-n", h.net.bridge, "link", "set", h.veth, "down")
}

// Uncut brings h's link to the bridge back up.
func (h *Host) Uncut() error {
	return ip("-n", h.net.bridge, "link", "set", h.veth, "up")
}

// Block drops, in h's namespace, every packet to or from the addresses
// of others (both ways, so a TCP connection stalls rather than resets),
// and, when lossPercent > 0, that share of every other packet at random
// (nftables numgen). One call replaces what the previous call set;
// Block(nil, 0) clears it.
func (h *Host) Block(others []*Host, lossPercent int) error {
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet fleet {\n")
	for _, hook := range []string{"input", "output"} {
		dir := "saddr"
		if hook == "output" {
			dir = "daddr"
		}
		fmt.Fprintf(&rules, " chain %s {\n  type filter hook %s priority 0; policy accept;\n", hook, hook)
		if len(others) > 0 {
			var addrs []string
			for _, o := range others {
				addrs = append(addrs, o.Addr.String())
			}
			fmt.Fprintf(&rules, "  ip %s { %s } drop\n", dir, strings.Join(addrs, ", "))
		}
		if lossPercent > 0 {
			fmt.Fprintf(&rules, "  iifname != \"lo\" oifname != \"lo\" numgen random mod 100 < %d drop\n", lossPercent)
		}
		fmt.Fprintf(&rules, " }\n")
	}
	fmt.Fprintf(&rules, "}\n")
	// Replace atomically: delete the table (if any) and add it in one
	// transaction.
	script := "table inet fleet\ndelete table inet fleet\n"
	if len(others) > 0 || lossPercent > 0 {
		script += rules.String()
	}
	return run("ip", []byte(script), "netns", "exec", h.NS, "nft", "-f", "-")
}

// inNS runs fn on an OS thread moved into the network namespace at
// path; sockets fn opens stay in that namespace after it returns. The
// thread is given back to the runtime only if it could be moved back.
func inNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine, still locked.
		errc <- ferr
	}()
	return <-errc
}

// DialContext opens a connection from inside h, as a program on h would.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS("/run/netns/"+h.NS, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Listen opens a listener inside h.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNS("/run/netns/"+h.NS, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// errNotRunning is returned by signals to a process that has exited.
var errNotRunning = errors.New("not running")
