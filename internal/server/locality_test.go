package server_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
)

// TestDNSLocality: through the API and the server's own listeners,
// askers from two loopback addresses mapped to two zones get their
// zone's instances alone (prefer), and all of them once their zone has
// none passing.
func TestDNSLocality(t *testing.T) {
	ts := startServer(t, func(c *server.Config) {
		c.DNS.Locality = dnsserver.LocalityPrefer
		c.DNS.LocalityZones = []dnsserver.LocalityZone{
			{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Zone: "us-east-1a"},
			{Prefix: netip.MustParsePrefix("127.0.0.3/32"), Zone: "us-east-1b"},
		}
	})
	for _, c := range []struct{ id, addr, zone string }{
		{"a1", "10.0.1.1", "us-east-1a"}, {"a2", "10.0.1.2", "us-east-1a"},
		{"b1", "10.0.2.1", "us-east-1b"}, {"n1", "10.0.9.1", ""},
	} {
		in := inst(c.id, "calc", c.addr, 8080)
		if c.zone != "" {
			in.Meta = map[string]string{registry.MetaZone: c.zone}
		}
		ts.register(t, in)
	}
	ask := func(src string) []string {
		t.Helper()
		cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}}
		m := new(dns.Msg)
		m.SetQuestion("calc."+zone, dns.TypeSRV)
		r, _, err := cl.Exchange(m, ts.DNSAddr())
		if err != nil {
			t.Fatalf("from %s: %v", src, err)
		}
		var ids []string
		for _, rr := range r.Answer {
			ids = append(ids, strings.SplitN(rr.(*dns.SRV).Target, ".", 2)[0])
		}
		return ids
	}
	waitFor(t, "all four served", func() bool { return len(ask("127.0.0.1")) == 4 })
	if got := ask("127.0.0.2"); len(got) != 2 || !strings.HasPrefix(got[0], "a") || !strings.HasPrefix(got[1], "a") {
		t.Errorf("from us-east-1a: %v, want a1 and a2", got)
	}
	if got := ask("127.0.0.3"); len(got) != 1 || got[0] != "b1" {
		t.Errorf("from us-east-1b: %v, want b1", got)
	}
	if _, err := ts.client.Deregister(t.Context(), "b1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "us-east-1b empty", func() bool { return len(ask("127.0.0.3")) == 3 })
}
