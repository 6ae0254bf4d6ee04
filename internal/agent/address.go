package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// DefaultIMDSEndpoint is the EC2 instance metadata service.
const DefaultIMDSEndpoint = "http://169.254.169.254"

// AdvertiseEC2 is the --advertise-ip value that asks the EC2 instance
// metadata service (IMDSv2) for the instance's local-ipv4.
const AdvertiseEC2 = "ec2"

// ResolveAdvertiseIP turns the --advertise-ip setting into an address: an
// IP as given; AdvertiseEC2 for the EC2 metadata service at imds (default
// DefaultIMDSEndpoint), asked with a short timeout; empty for the address
// of the host's default-route interface, or failing that of its first up,
// non-loopback, non-container interface.
func ResolveAdvertiseIP(ctx context.Context, setting, imds string) (netip.Addr, error) {
	switch strings.ToLower(strings.TrimSpace(setting)) {
	case "":
		return detectHostIP()
	case AdvertiseEC2:
		if imds == "" {
			imds = DefaultIMDSEndpoint
		}
		return ec2LocalIPv4(ctx, imds)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(setting))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--advertise-ip %q: want an IP address, %q, or nothing to detect it", setting, AdvertiseEC2)
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("--advertise-ip %q: an unspecified or multicast address cannot be reached", setting)
	}
	return ip, nil
}

// ec2LocalIPv4 asks IMDSv2: a PUT for a session token, then a GET of
// meta-data/local-ipv4 with it.
func ec2LocalIPv4(ctx context.Context, base string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	base = strings.TrimSuffix(base, "/")
	hc := &http.Client{}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("EC2 metadata at %s: %w", base, err)
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	tok, err := fetch(hc, req)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("EC2 metadata token from %s (not on EC2? set --advertise-ip): %w", base, err)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/latest/meta-data/local-ipv4", nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("EC2 metadata at %s: %w", base, err)
	}
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	body, err := fetch(hc, req)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("EC2 local-ipv4 from %s: %w", base, err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(body))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("EC2 local-ipv4 from %s: %q is not an IP address", base, body)
	}
	return ip, nil
}

func fetch(hc *http.Client, req *http.Request) (string, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s", req.Method, req.URL, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// virtualPrefixes name interfaces that belong to containers or bridges, not
// to the host's own network.
var virtualPrefixes = []string{"docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "vxlan", "weave", "kube", "tun", "tap", "lxc", "lxd"}

func virtual(name string) bool {
	for _, p := range virtualPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// detectHostIP finds the host's address without sending a packet.
func detectHostIP() (netip.Addr, error) {
	if name := defaultRouteInterface("/proc/net/route"); name != "" {
		if ifc, err := net.InterfaceByName(name); err == nil {
			if ip, ok := firstGlobalIPv4(ifc); ok {
				return ip, nil
			}
		}
	}
	ifcs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list network interfaces: %w", err)
	}
	for i := range ifcs {
		ifc := &ifcs[i]
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || virtual(ifc.Name) {
			continue
		}
		if ip, ok := firstGlobalIPv4(ifc); ok {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("could not find the host's address on any interface: set --advertise-ip")
}

func firstGlobalIPv4(ifc *net.Interface) (netip.Addr, bool) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		if ip := pfx.Addr().Unmap(); ip.Is4() && ip.IsGlobalUnicast() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// defaultRouteInterface reads the interface of the IPv4 default route from
// a Linux /proc/net/route; "" when there is none or the file is absent.
func defaultRouteInterface(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[1] == "00000000" && fields[0] != "Iface" {
			return fields[0]
		}
	}
	return ""
}
