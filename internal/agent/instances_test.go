package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
	"github.com/signpost-dns/signpost/internal/backend"
	"github.com/signpost-dns/signpost/internal/registry"
)

func TestInstanceIDIsAStableDNSLabel(t *testing.T) {
	id := "3F2A9C1B7D4E5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd"
	a := InstanceID("ip-10-0-0-7.eu-west-1.compute.internal", id, 65535, "udp")
	if err := registry.CheckLabel(a); err != nil {
		t.Fatalf("InstanceID %q is not a DNS label: %v", a, err)
	}
	if a != InstanceID("ip-10-0-0-7.eu-west-1.compute.internal", id, 65535, "udp") {
		t.Error("InstanceID is not stable")
	}
	if a == InstanceID("other-host", id, 65535, "udp") || a == InstanceID("ip-10-0-0-7.eu-west-1.compute.internal", id, 65535, "tcp") {
		t.Error("InstanceID does not tell nodes or protocols apart")
	}
	if !strings.HasPrefix(a, "3f2a9c1b7d4e-65535-udp-") {
		t.Errorf("InstanceID = %q", a)
	}
}

func TestInstancesAddresses(t *testing.T) {
	host := netip.MustParseAddr("10.0.0.7")
	p8081 := conventions.ContainerPort{Port: 8081, Proto: "tcp"}
	base := func() container {
		return container{ID: "abcdef0123456789", Name: "calc-1", Running: true, NetworkMode: "bridge",
			Env: []string{"SERVICE_8081_NAME=calc"}, Ports: []conventions.ContainerPort{p8081},
			Bindings: map[conventions.ContainerPort][]binding{}, Networks: map[string]netip.Addr{"bridge": netip.MustParseAddr("172.17.0.2")}}
	}
	cases := []struct {
		name     string
		mode     string
		network  string
		edit     func(*container)
		want     string // "addr:port", or "" for nothing
		noteWith string
	}{
		{"dynamic host port on every address", ModeHost, "", func(c *container) {
			c.Bindings[p8081] = []binding{{netip.MustParseAddr("0.0.0.0"), 32768}, {netip.MustParseAddr("::"), 32768}}
		}, "10.0.0.7:32768", ""},
		{"specific host IP", ModeHost, "", func(c *container) {
			c.Bindings[p8081] = []binding{{netip.MustParseAddr("192.168.1.5"), 9000}}
		}, "192.168.1.5:9000", ""},
		{"not published", ModeHost, "", func(c *container) {}, "", "port not published"},
		{"host network: exposed port on the host address", ModeHost, "", func(c *container) { c.NetworkMode = "host"; c.Networks = nil }, "10.0.0.7:8081", ""},
		{"container mode, only network", ModeContainer, "", func(c *container) {}, "172.17.0.2:8081", ""},
		{"container mode by label", ModeHost, "", func(c *container) {
			c.Labels = map[string]string{LabelAddressMode: "container", LabelNetwork: "backend"}
			c.Networks["backend"] = netip.MustParseAddr("10.5.0.3")
		}, "10.5.0.3:8081", ""},
		{"container mode, several networks, none chosen", ModeContainer, "", func(c *container) {
			c.Networks["backend"] = netip.MustParseAddr("10.5.0.3")
		}, "", "no address on the chosen network"},
		{"container mode, chosen network", ModeContainer, "backend", func(c *container) {
			c.Networks["backend"] = netip.MustParseAddr("10.5.0.3")
		}, "10.5.0.3:8081", ""},
		{"shares another container's network", ModeHost, "", func(c *container) { c.NetworkMode = "container:abc" }, "", "shares another container's network"},
		{"awsvpc task: its ENI address, the container port", ModeHost, "", func(c *container) { awsvpcTask(c, "10.0.1.23") }, "10.0.1.23:8081", ""},
		{"awsvpc task in container mode", ModeContainer, "", func(c *container) { awsvpcTask(c, "10.0.1.23") }, "10.0.1.23:8081", ""},
		{"awsvpc task, address unknown", ModeHost, "", func(c *container) { awsvpcTask(c, ""); c.Ports = nil }, "", "container of an ECS awsvpc task"},
		{"ECS pause container", ModeHost, "", func(c *container) {
			c.Labels = map[string]string{LabelECSTaskARN: "arn:aws:ecs:eu-west-1:1:task/c/t", LabelECSContainerName: ECSPauseContainerName}
			c.Bindings[p8081] = []binding{{netip.MustParseAddr("0.0.0.0"), 32768}}
		}, "", "ECS pause container"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{cfg: Config{Node: "n1", AddressMode: tc.mode, Network: tc.network}, hostIP: host}
			c := base()
			tc.edit(&c)
			insts, _, notes := a.instances(c)
			got := ""
			if len(insts) == 1 {
				got = netip.AddrPortFrom(insts[0].Address, insts[0].Port).String()
			} else if len(insts) > 1 {
				t.Fatalf("%d instances", len(insts))
			}
			if got != tc.want {
				t.Errorf("registered %q, want %q (notes %v)", got, tc.want, notes)
			}
			if tc.noteWith != "" && !hasNote(notes, tc.noteWith) {
				t.Errorf("no note with %q: %v", tc.noteWith, notes)
			}
		})
	}
}

// awsvpcTask makes c a container of an awsvpc task, with its task's
// address addr ("" for unknown).
func awsvpcTask(c *container, addr string) {
	c.NetworkMode, c.Networks = "container:5ca1ab1e", nil
	c.Labels = map[string]string{LabelECSTaskARN: "arn:aws:ecs:eu-west-1:1:task/c/t", LabelECSContainerName: "calc"}
	if addr != "" {
		c.TaskAddr = netip.MustParseAddr(addr)
	}
}

func TestResolveAdvertiseIP(t *testing.T) {
	ctx := context.Background()
	if ip, err := ResolveAdvertiseIP(ctx, "10.1.2.3", ""); err != nil || ip.String() != "10.1.2.3" {
		t.Errorf("explicit IP: %v, %v", ip, err)
	}
	for _, bad := range []string{"not-an-ip", "0.0.0.0", "224.0.0.1"} {
		if _, err := ResolveAdvertiseIP(ctx, bad, ""); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("--advertise-ip %q: err %v, want one naming the value", bad, err)
		}
	}
	// IMDSv2: a token first, then local-ipv4 with it.
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "":
			w.Write([]byte("tok123"))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/local-ipv4" && r.Header.Get("X-aws-ec2-metadata-token") == "tok123":
			w.Write([]byte("172.31.5.9"))
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
	}))
	defer imds.Close()
	if ip, err := ResolveAdvertiseIP(ctx, "ec2", imds.URL); err != nil || ip.String() != "172.31.5.9" {
		t.Errorf("ec2: %v, %v", ip, err)
	}
	imds.Close()
	if _, err := ResolveAdvertiseIP(ctx, "ec2", imds.URL); err == nil || !strings.Contains(err.Error(), "--advertise-ip") {
		t.Errorf("ec2 without a metadata service: %v, want advice to set --advertise-ip", err)
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	p := filepath.Join(t.TempDir(), "route")
	os.WriteFile(p, []byte("Iface\tDestination\tGateway\tFlags\n"+
		"docker0\t000011AC\t00000000\t0001\n"+
		"ens5\t00000000\t0100000A\t0003\n"), 0o644)
	if got := defaultRouteInterface(p); got != "ens5" {
		t.Errorf("defaultRouteInterface = %q, want ens5", got)
	}
	if got := defaultRouteInterface(filepath.Join(t.TempDir(), "absent")); got != "" {
		t.Errorf("absent file: %q", got)
	}
}

func TestTerminating(t *testing.T) {
	for sig, want := range map[string]bool{"15": true, "9": true, "SIGTERM": true, "KILL": true, "1": false, "SIGHUP": false, "USR1": false, "": true} {
		if got := terminating(sig); got != want {
			t.Errorf("terminating(%q) = %v, want %v", sig, got, want)
		}
	}
}

// TestInstancesInternalMeta checks the metadata a container-level backend
// layout needs: the name as written, the full container id and the count
// of ports the container registers (not the ports it merely exposes), and
// that a container cannot set those keys itself.
func TestInstancesInternalMeta(t *testing.T) {
	host := netip.MustParseAddr("10.0.0.7")
	p := func(n uint16) conventions.ContainerPort { return conventions.ContainerPort{Port: n, Proto: "tcp"} }
	const cid = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
	c := container{ID: cid, Name: "calc-1", Running: true, NetworkMode: "bridge",
		Env: []string{"SERVICE_8081_NAME=_calc._tcp", "SERVICE_8082_NAME=admin", "SERVICE_8083_NAME=unpublished",
			"SERVICE_VERSION=1.2", "SERVICE_SIGNPOST.CONTAINER-ID=forged"},
		Ports: []conventions.ContainerPort{p(8081), p(8082), p(8083)},
		Bindings: map[conventions.ContainerPort][]binding{
			p(8081): {{netip.MustParseAddr("0.0.0.0"), 32768}},
			p(8082): {{netip.MustParseAddr("0.0.0.0"), 32769}},
		}}
	a := &Agent{cfg: Config{Node: "n1", AddressMode: ModeHost}, hostIP: host}
	insts, _, _ := a.instances(c)
	if len(insts) != 2 {
		t.Fatalf("%d instances, want 2 (8083 is not published)", len(insts))
	}
	want := map[string]map[string]string{
		"calc":  {"version": "1.2", backend.MetaSRVName: "_calc._tcp", backend.MetaContainerID: cid, backend.MetaContainerPorts: "2"},
		"admin": {"version": "1.2", backend.MetaSRVName: "admin", backend.MetaContainerID: cid, backend.MetaContainerPorts: "2"},
	}
	for _, in := range insts {
		if !reflect.DeepEqual(in.Meta, want[in.Service]) {
			t.Errorf("instance %s (%s) metadata %v, want %v", in.ID, in.Service, in.Meta, want[in.Service])
		}
	}
	insts[0].Meta["x"] = "y"
	if _, shared := insts[1].Meta["x"]; shared {
		t.Error("two instances share one metadata map")
	}
}

func TestInstancesZone(t *testing.T) {
	p8081 := conventions.ContainerPort{Port: 8081, Proto: "tcp"}
	mk := func(env ...string) container {
		return container{ID: "abcdef0123456789", Name: "calc-1", Running: true, NetworkMode: "bridge",
			Env: append([]string{"SERVICE_8081_NAME=calc"}, env...), Ports: []conventions.ContainerPort{p8081},
			Bindings: map[conventions.ContainerPort][]binding{p8081: {{netip.MustParseAddr("0.0.0.0"), 32768}}}}
	}
	for _, tc := range []struct {
		name, zone string
		env        []string
		want       string
		noteWith   string
	}{
		{"no zone", "", nil, "", ""},
		{"the agent's zone", "us-east-1a", nil, "us-east-1a", ""},
		{"the container's own zone, no agent zone", "", []string{"SERVICE_ZONE=rack-7"}, "rack-7", ""},
		{"the agent's zone wins", "us-east-1a", []string{"SERVICE_ZONE=rack-7"}, "us-east-1a", "replaces the container's own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{cfg: Config{Node: "n1", AddressMode: ModeHost, Zone: tc.zone}, hostIP: netip.MustParseAddr("10.0.0.7")}
			insts, _, notes := a.instances(mk(tc.env...))
			if len(insts) != 1 {
				t.Fatalf("%d instances, notes %v", len(insts), notes)
			}
			if got := insts[0].Meta[registry.MetaZone]; got != tc.want {
				t.Errorf("zone meta %q, want %q", got, tc.want)
			}
			if err := insts[0].Validate(); err != nil {
				t.Errorf("instance refused: %v", err)
			}
			if tc.noteWith != "" && !hasNote(notes, tc.noteWith) {
				t.Errorf("no note with %q: %v", tc.noteWith, notes)
			}
		})
	}
	// A container at the metadata key limit: the zone is left out, said.
	env := []string{}
	for i := 0; i < registry.MaxMetaKeys; i++ {
		env = append(env, fmt.Sprintf("SERVICE_K%d=v", i))
	}
	a := &Agent{cfg: Config{Node: "n1", AddressMode: ModeHost, Zone: "us-east-1a"}, hostIP: netip.MustParseAddr("10.0.0.7")}
	insts, _, notes := a.instances(mk(env...))
	if len(insts) != 1 {
		t.Fatalf("at the key limit: %d instances, notes %v", len(insts), notes)
	}
	if insts[0].Meta[registry.MetaZone] != "" {
		t.Errorf("zone published past the key limit")
	}
	if !hasNote(notes, "--node-zone not published") {
		t.Errorf("no note: %v", notes)
	}
}

func TestNewChecksZone(t *testing.T) {
	for _, z := range []string{"US-EAST-1A", "us east", "-a", strings.Repeat("a", 64)} {
		_, err := New(Config{Node: "n1", Zone: z}, struct{ backend.Backend }{})
		if err == nil || !strings.Contains(err.Error(), z[:min(len(z), 37)]) {
			t.Errorf("zone %q: %v, want an error naming it", z, err)
		}
	}
}

// hasNote reports whether one of notes says s.
func hasNote(notes []note, s string) bool {
	for _, n := range notes {
		if strings.Contains(n.msg, s) {
			return true
		}
	}
	return false
}
