package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/dnsserver"
)

func TestLocalityFlags(t *testing.T) {
	parse := func(args ...string) (dnsserver.Config, error) {
		fs := newFlagSet("server", "")
		fs.SetOutput(io.Discard)
		mk := serverFlags(fs)
		if err := fs.Parse(args); err != nil {
			return dnsserver.Config{}, err
		}
		cfg, err := mk()
		return cfg.DNS, err
	}
	if cfg, err := parse("--locality", "order"); err != nil || cfg.Locality != dnsserver.LocalityOrder {
		t.Errorf("order with no zones (the same-host tier alone): %v %v", cfg.Locality, err)
	}
	if cfg, err := parse(); err != nil || cfg.Locality != dnsserver.LocalityOff || cfg.LocalityZones != nil {
		t.Errorf("default: %v %v %v, want off", cfg.Locality, cfg.LocalityZones, err)
	}
	cfg, err := parse("--locality", "prefer", "--locality-zone", "10.0.1.0/24=us-east-1a", "--locality-zone", "10.0.2.0/24=us-east-1b, fd00::/64=us-east-1a")
	want := []dnsserver.LocalityZone{
		{Prefix: netip.MustParsePrefix("10.0.1.0/24"), Zone: "us-east-1a"},
		{Prefix: netip.MustParsePrefix("10.0.2.0/24"), Zone: "us-east-1b"},
		{Prefix: netip.MustParsePrefix("fd00::/64"), Zone: "us-east-1a"},
	}
	if err != nil || cfg.Locality != dnsserver.LocalityPrefer || len(cfg.LocalityZones) != len(want) {
		t.Fatalf("set: %v %v %v", cfg.Locality, cfg.LocalityZones, err)
	}
	for i := range want {
		if cfg.LocalityZones[i] != want[i] {
			t.Errorf("zone %d: %v, want %v", i, cfg.LocalityZones[i], want[i])
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--locality-zone", "10.0.1.0/24"}, `"10.0.1.0/24"`},
		{[]string{"--locality-zone", "10.0.1.0/24=US_EAST"}, `"10.0.1.0/24=US_EAST"`},
		{[]string{"--locality-zone", "10.0.300.0/24=a"}, `"10.0.300.0/24=a"`},
		{[]string{"--locality-zone", "10.0.1.0/24=a,nonsense=b"}, `"nonsense=b"`},
		{[]string{"--locality", "nearby"}, `"nearby"`},
	} {
		_, err := parse(tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}
