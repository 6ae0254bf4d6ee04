package server_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
	"github.com/signpost-dns/signpost/internal/server"
)

// TestAPIRefusesWhatDNSCannotCarry: every name, meta and tag that would
// break a DNS limit in the configured zone is refused with a 4xx naming
// the field, nothing is written, and DNS-SD browsing still lists every
// service, each of which resolves.
func TestAPIRefusesWhatDNSCannotCarry(t *testing.T) {
	// A zone of 149 bytes in wire form: ids and services may take 98
	// bytes together.
	longZone := strings.Repeat("z", 60) + "." + strings.Repeat("y", 60) + ".servicediscovery.internal"
	ts := startServer(t, func(c *server.Config) { c.DNS.Zone = longZone })
	z := longZone + "."
	u := ts.URL()
	// The services that are already there, and must stay browsable.
	for _, svc := range []string{"calc", strings.Repeat("s", 62)} {
		body := fmt.Sprintf(`{"service":%q,"address":"10.0.0.1","port":8081}`, svc)
		if status, e := do(t, "PUT", u+"/v1/instances/ok-"+svc[:4], "", body); status != 200 {
			t.Fatalf("register %s: %d %s", svc, status, e.Error)
		}
	}
	instance := func(extra string) string {
		return `{"service":"calc","address":"10.0.0.1","port":8081` + extra + `}`
	}
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	cases := []struct {
		name, path, body string
		field            string
	}{
		{"service label _name over 63", "/v1/instances/a", `{"service":"` + long("s", 63) + `","address":"10.0.0.1","port":8081}`, "service"},
		{"DNS-SD name over 255 in this zone", "/v1/instances/" + long("i", 40), `{"service":"` + long("s", 60) + `","address":"10.0.0.1","port":8081}`, "id"},
		{"id over 63", "/v1/instances/" + long("i", 64), instance(""), "id"},
		{"reserved: the name server", "/v1/instances/a", `{"service":"ns","address":"10.0.0.1","port":8081}`, "service"},
		{"reserved: DNS-SD", "/v1/instances/a", `{"service":"_dns-sd._udp","address":"10.0.0.1","port":8081}`, "service"},
		{"reserved: _tcp", "/v1/instances/a", `{"service":"tcp","address":"10.0.0.1","port":8081}`, "service"},
		{"meta key=value over 255", "/v1/instances/a", instance(`,"meta":{"k":"` + long("v", 254) + `"}`), "meta.k"},
		{"tag's DNS-SD subtype name over 255 in this zone", "/v1/instances/a", `{"service":"` + long("s", 62) + `","address":"10.0.0.1","port":8081,"tags":["` + long("t", 31) + `"]}`, "tags"},
		{"reserved id: tag.calc.Z is above calc's tag names", "/v1/instances/tag", instance(""), "id"},
		{"tags over 255 in TXT", "/v1/instances/a", instance(`,"tags":["` + long("a", 200) + `","` + long("b", 60) + `"]`), "tags"},
		{"control character in meta", "/v1/instances/a", instance(`,"meta":{"k":"a\u001b[2Jb"}`), "meta.k"},
		{"C1 control in a tag", "/v1/instances/a", instance(`,"tags":["a\u009bb"]`), "tags"},
		{"control character in health.output", "/v1/instances/a", instance(`,"health":{"status":"passing","output":"ok\r\u001b[31m"}`), "health.output"},
		{"metadata service address", "/v1/instances/a", `{"service":"calc","address":"169.254.169.254","port":80}`, "address"},
		{"link-local v6", "/v1/instances/a", `{"service":"calc","address":"fe80::1","port":80}`, "address"},
		{"broadcast", "/v1/instances/a", `{"service":"calc","address":"255.255.255.255","port":80}`, "address"},
		{"multicast", "/v1/instances/a", `{"service":"calc","address":"239.1.1.1","port":80}`, "address"},
		{"node set: long name and no instances", "/v1/nodes/" + long("n", 300), `{"ttl":"10s","instances":[]}`, "node"},
		{"node set: DNS-SD name over 255", "/v1/nodes/host-1", `{"ttl":"10s","instances":[{"id":"` + long("i", 40) + `","service":"` + long("s", 60) + `","address":"10.0.0.1","port":8081}]}`, "id"},
	}
	for _, c := range cases {
		method := "PUT"
		status, e := do(t, method, u+c.path, "", c.body)
		if status < 400 || status > 499 || e.Field != c.field {
			t.Errorf("%s: status %d field %q, want 4xx naming %q (%s)", c.name, status, e.Field, c.field, e.Error)
		}
	}
	if n := ts.Index().Len(); n != 2 {
		all, _ := ts.Index().All()
		t.Fatalf("refused writes were stored: %+v", all)
	}
	// Browsing lists every service, and each resolves.
	for _, netw := range []string{"udp", "tcp"} {
		r := ts.ask(t, netw, "_services._dns-sd._udp."+z, dns.TypePTR, 0)
		var got []string
		for _, p := range records[*dns.PTR](r.Answer) {
			got = append(got, p.Ptr)
			if s := ts.ask(t, netw, p.Ptr, dns.TypeSRV, 0); len(s.Answer) != 1 {
				t.Errorf("%s SRV over %s: %v", p.Ptr, netw, s)
			}
		}
		sort.Strings(got)
		want := []string{"_calc._tcp." + z, "_" + strings.Repeat("s", 62) + "._tcp." + z}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("browse over %s: %v, want %v", netw, got, want)
		}
	}
	// Empty non-terminals are NOERROR/NODATA with the SOA (RFC 8020).
	for _, name := range []string{"_dns-sd._udp." + z, "_tcp." + z, "_udp." + z} {
		r := ts.ask(t, "udp", name, dns.TypePTR, 0)
		if rcode(r) != "NOERROR" || len(r.Answer) != 0 || len(records[*dns.SOA](r.Ns)) != 1 {
			t.Errorf("%s: %s %v, want NODATA with SOA", name, rcode(r), r.Ns)
		}
	}
}

// TestAPIRefusesTagsDNSCannotCarry: in a zone of 149 bytes in wire form,
// a tag of a 62-byte service may take 30 bytes (its DNS-SD subtype name
// is then 255 bytes): 31 is refused, by PUT /v1/instances and by a node
// set, with a 4xx naming the field and the tag, and nothing is written;
// 30 is served at its names; a tag that is no DNS label is not refused
// for its length (it is only published in TXT).
func TestAPIRefusesTagsDNSCannotCarry(t *testing.T) {
	longZone := strings.Repeat("z", 60) + "." + strings.Repeat("y", 60) + ".servicediscovery.internal"
	ts := startServer(t, func(c *server.Config) { c.DNS.Zone = longZone })
	z := longZone + "."
	u := ts.URL()
	svc := strings.Repeat("s", 62)
	body := func(tag string) string {
		return fmt.Sprintf(`{"service":%q,"address":"10.0.0.1","port":8081,"tags":["blue",%q]}`, svc, tag)
	}
	over := strings.Repeat("T", 31)
	for _, c := range []struct{ path, body string }{
		{"/v1/instances/a", body(over)},
		{"/v1/nodes/host-1", `{"ttl":"10s","instances":[{"id":"a",` + body(over)[1:] + `]}`},
	} {
		status, e := do(t, "PUT", u+c.path, "", c.body)
		if status < 400 || status > 499 || e.Field != "tags" || !strings.Contains(e.Error, over) || !strings.Contains(e.Error, "255") {
			t.Errorf("PUT %s with a %d-byte tag: %d field %q %q, want 4xx naming field tags and the tag", c.path, len(over), status, e.Field, e.Error)
		}
	}
	if n := ts.Index().Len(); n != 0 {
		t.Fatalf("refused writes were stored: %d instances", n)
	}
	fits := strings.Repeat("t", 30)
	for id, tag := range map[string]string{"a": fits, "b": strings.Repeat("x", 40) + " not a label"} {
		if status, e := do(t, "PUT", u+"/v1/instances/"+id, "", body(tag)); status != 200 {
			t.Fatalf("PUT a tag of %d bytes: %d %s", len(tag), status, e.Error)
		}
	}
	sub := "_" + fits + "._sub._" + svc + "._tcp." + z
	if len(sub)+1 != 255 {
		t.Fatalf("subtype name of %d bytes in wire form, want 255", len(sub)+1)
	}
	for _, netw := range []string{"udp", "tcp"} {
		r := ts.ask(t, netw, sub, dns.TypePTR, 0)
		if ptrs := records[*dns.PTR](r.Answer); len(ptrs) != 1 || ptrs[0].Ptr != "a._"+svc+"._tcp."+z {
			t.Errorf("%s PTR over %s: %v", sub, netw, r)
		}
		if r := ts.ask(t, netw, "_blue._sub._"+svc+"._tcp."+z, dns.TypePTR, 0); len(r.Answer) != 2 {
			t.Errorf("blue's subtype over %s: %v", netw, r)
		}
	}
}

// TestServerRefusesZoneWithNoRoom: a zone that leaves no room for
// <id>._<service>._tcp.<zone> under 255 bytes stops the server at start.
func TestServerRefusesZoneWithNoRoom(t *testing.T) {
	label := strings.Repeat("z", 62)
	zone := strings.Join([]string{label, label, label, label[:60]}, ".") // 251 bytes in wire form
	_, err := server.New(server.Config{DNSAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		DNS: dnsserver.Config{Zone: zone}})
	if err == nil || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("zone %s: %v, want a refusal saying it leaves no room", zone, err)
	}
}
