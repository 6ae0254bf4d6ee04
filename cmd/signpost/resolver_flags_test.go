package main

import (
	"github.com/signpost-dns/signpost/internal/forward"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestResolverFlags(t *testing.T) {
	parse := func(args ...string) (string, []string, []netip.Prefix, error) {
		fs := newFlagSet("server", "")
		mk := serverFlags(fs)
		if err := fs.Parse(args); err != nil {
			return "", nil, nil, err
		}
		cfg, err := mk()
		return cfg.Resolver.Addr, cfg.Resolver.Upstreams, cfg.Resolver.Allow, err
	}
	addr, ups, allow, err := parse()
	if err != nil || addr != "" || ups != nil || allow != nil {
		t.Errorf("default: %q %v %v %v, want the resolver off", addr, ups, allow, err)
	}
	addr, ups, allow, err = parse("--resolver", "172.17.0.1:53", "--recursor", "10.0.0.2", "--recursor", "[::1]:5353", "--allow-recursion", "172.18.0.7/16")
	if err != nil || addr != "172.17.0.1:53" || !slices.Equal(ups, []string{"10.0.0.2:53", "[::1]:5353"}) || len(allow) != 1 || allow[0].String() != "172.18.0.0/16" {
		t.Errorf("set: %q %v %v %v", addr, ups, allow, err)
	}
	fs := newFlagSet("server", "")
	mk := serverFlags(fs)
	if err := fs.Parse([]string{"--resolver", "172.17.0.1:53", "--resolver-max-tcp-conns-per-client", "4"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := mk(); err != nil || cfg.Resolver.MaxTCPConnsPerClient != 4 || cfg.Resolver.MaxTCPConns != forward.DefaultMaxTCPConns || cfg.Resolver.MaxInflight != forward.DefaultMaxInflight {
		t.Errorf("--resolver-max-tcp-conns-per-client 4: %+v %v", cfg.Resolver, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--resolver", "172.17.0.1:53", "--recursor", "resolver.example"}, "resolver.example"},
		{[]string{"--resolver", "172.17.0.1:53", "--allow-recursion", "everyone"}, "everyone"},
		{[]string{"--recursor", "10.0.0.2"}, "--resolver"},
		{[]string{"--resolver", "172.17.0.1:53", "--resolver-max-inflight", "0"}, "--resolver-max-inflight"},
		{[]string{"--resolver", "172.17.0.1:53", "--resolver-max-tcp-conns", "8", "--resolver-max-tcp-conns-per-client", "16"}, "--resolver-max-tcp-conns-per-client 16"},
	} {
		if _, _, _, err := parse(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
}
