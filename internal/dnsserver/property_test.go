package dnsserver

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestEveryValidRegistrationIsServed is a property test of the door
// against the answers: random registrations, in zones of every length,
// that the registry's checks accept (registry.Prepare, then DNSNames.Check
// as the server's store guard does) are all served whole, over TCP and
// over UDP, in every answer that should carry them.
func TestEveryValidRegistrationIsServed(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 12))
	for _, zone := range []string{
		"servicediscovery.internal",
		"a",
		strings.Repeat("z", 63) + "." + strings.Repeat("y", 63) + "." + strings.Repeat("x", 50),
		strings.Repeat("z", 63) + "." + strings.Repeat("y", 63) + "." + strings.Repeat("x", 63) + "." + strings.Repeat("w", 47),
	} {
		t.Run(fmt.Sprintf("zone of %d bytes", len(zone)), func(t *testing.T) {
			ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
			s, err := New(Config{Zone: zone}, ix)
			if err != nil {
				t.Fatal(err)
			}
			door, err := registry.NewDNSNames(zone, s.ReservedServices())
			if err != nil {
				t.Fatal(err)
			}
			door.ReservedIDs = s.ReservedIDs()
			var accepted []registry.Instance
			var evs []registry.Event
			tried := 0
			ids := map[string]bool{}
			for len(accepted) < 150 && tried < 20000 {
				tried++
				in, err := registry.Prepare(randomInstance(rng, door.Room(), len(accepted)))
				if err == nil {
					err = door.Check(&in)
				}
				if err != nil {
					continue
				}
				if ids[in.ID] {
					continue // the same instance again
				}
				ids[in.ID] = true
				accepted = append(accepted, in)
				evs = append(evs, registry.Event{Type: registry.EventPut, Rev: int64(len(evs) + 1), Instance: in})
			}
			if len(accepted) < min(100, door.Room()*10) {
				t.Fatalf("only %d of %d random registrations accepted: the generator is off", len(accepted), tried)
			}
			ix.Apply(evs)
			for _, in := range accepted {
				checkServed(t, s, in)
			}
		})
	}
}

// randomInstance returns a registration that may or may not be valid:
// names near the limits, unicode and quoting characters in meta and tags.
func randomInstance(rng *rand.Rand, room, i int) registry.Instance {
	label := func(n int) string {
		const chars = "abcdefghijklmnopqrstuvwxyz0123456789-"
		b := make([]byte, n)
		for j := range b {
			b[j] = chars[rng.IntN(len(chars))]
		}
		b[0], b[n-1] = 'a'+byte(rng.IntN(26)), '0'+byte(rng.IntN(10))
		return string(b)
	}
	text := func(n int) string {
		pool := []string{"a", "Z", "=", " ", `"`, `\`, ",", ";", "(", ")", ".", "@", "$", "é", "☃", "😀", "\u00a0", "\u2028", "\ufffd", "~", "\t"}
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(pool[rng.IntN(len(pool))])
		}
		return b.String()
	}
	svcLen := 1 + rng.IntN(min(room-1, registry.MaxServiceLen))
	idLen := 1 + rng.IntN(min(room-svcLen+4, registry.MaxIDLen)) // sometimes over the room
	in := registry.Instance{
		ID:       label(idLen),
		Service:  label(svcLen),
		Protocol: []string{"tcp", "udp", ""}[rng.IntN(3)],
		Port:     uint16(1 + rng.IntN(65535)),
		Weight:   uint16(rng.IntN(65536)),
		Priority: uint16(rng.IntN(65536)),
	}
	if i%3 == 0 {
		in.Service = "s" // some services with many instances
	}
	if rng.IntN(2) == 0 {
		in.Address = netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
	} else {
		var a [16]byte
		a[0], a[1] = 0x20, 0x01
		for j := 2; j < 16; j++ {
			a[j] = byte(rng.IntN(256))
		}
		in.Address = netip.AddrFrom16(a)
	}
	for range rng.IntN(6) {
		in.Tags = append(in.Tags, text(1+rng.IntN(80)))
	}
	if rng.IntN(3) == 0 {
		// A tag that is a DNS label, in mixed case, sometimes too long
		// for a name (over 62 bytes) or for this zone.
		tag := []byte(label(1 + rng.IntN(66)))
		for j := range tag {
			if rng.IntN(2) == 0 && tag[j] >= 'a' {
				tag[j] -= 'a' - 'A'
			}
		}
		in.Tags = append(in.Tags, string(tag))
	}
	if rng.IntN(2) == 0 {
		in.Meta = map[string]string{}
		for range rng.IntN(20) {
			k := strings.NewReplacer("=", "", " ", "").Replace(text(1 + rng.IntN(20)))
			if k == "" {
				k = "k"
			}
			in.Meta[k] = text(rng.IntN(260 - len(k)))
		}
	}
	return in
}

// checkServed asks for every name in carries and checks that it is there.
func checkServed(t *testing.T, s *Server, in registry.Instance) {
	t.Helper()
	z := s.cfg.Zone
	target := in.ID + "." + in.Service + "." + z
	dnssd := in.ID + "._" + in.Service + "._" + in.Protocol + "." + z
	proto := "_" + in.Service + "._" + in.Protocol + "." + z
	addrType := dns.TypeA
	if in.Address.Is6() {
		addrType = dns.TypeAAAA
	}
	for _, tcp := range []bool{true, false} {
		for _, edns := range []uint16{0, 1232} {
			get := func(name string, qtype uint16) *dns.Msg {
				m := ask(t, s, name, qtype, edns, tcp)
				if m.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s %s (tcp=%v edns=%d) of %+v: rcode %s", name, dns.TypeToString[qtype], tcp, edns, in, dns.RcodeToString[m.Rcode])
				}
				if len(m.Answer) == 0 && (tcp || !m.Truncated) {
					t.Fatalf("%s %s (tcp=%v edns=%d): no answer and no TC", name, dns.TypeToString[qtype], tcp, edns)
				}
				return m
			}
			if m := get(target, addrType); len(m.Answer) == 1 {
				if got := rrAddr(m.Answer[0]); got != in.Address {
					t.Fatalf("%s: address %s, want %s", target, got, in.Address)
				}
			}
			for _, name := range []string{target, dnssd} {
				if m := get(name, dns.TypeTXT); len(m.Answer) == 1 {
					if got, want := txtStrings(t, m.Answer[0]), wantTXT(in); !slices.Equal(got, want) {
						t.Fatalf("%s TXT: %q, want %q", name, got, want)
					}
				}
			}
			if m := get(dnssd, dns.TypeSRV); len(m.Answer) == 1 {
				if srv := m.Answer[0].(*dns.SRV); srv.Target != target || srv.Port != in.Port || srv.Weight != in.Weight || srv.Priority != in.Priority {
					t.Fatalf("%s SRV: %v", dnssd, srv)
				}
			}
			if !tcp {
				continue
			}
			// Lists: over TCP every instance of the service is there.
			lists := []struct {
				name  string
				qtype uint16
				want  string
			}{{in.Service + "." + z, dns.TypeSRV, target}, {proto, dns.TypeSRV, target}, {proto, dns.TypePTR, dnssd}, {"_services._dns-sd._udp." + z, dns.TypePTR, proto}}
			for _, tag := range in.Tags {
				// Every tag that is a label is served at its names
				// (the door refused those too long for the zone).
				l, ok := registry.TagLabel(tag)
				if !ok {
					continue
				}
				lists = append(lists, []struct {
					name  string
					qtype uint16
					want  string
				}{
					{tag + ".tag." + in.Service + "." + z, dns.TypeSRV, target},
					{"_" + tag + "._" + in.Service + "._" + in.Protocol + "." + z, dns.TypeSRV, target},
					{"_" + l + "._sub._" + in.Service + "._" + in.Protocol + "." + z, dns.TypePTR, dnssd},
				}...)
			}
			for _, q := range lists {
				if len(q.name)+1 > registry.MaxName {
					continue // _services._dns-sd._udp.Z itself is too long: no browsing in this zone
				}
				m := get(q.name, q.qtype)
				found := false
				for _, rr := range m.Answer {
					switch rr := rr.(type) {
					case *dns.SRV:
						found = found || rr.Target == q.want
					case *dns.PTR:
						found = found || rr.Ptr == q.want
					}
				}
				if !found {
					t.Fatalf("%s %s: %s missing from %d records", q.name, dns.TypeToString[q.qtype], q.want, len(m.Answer))
				}
			}
		}
	}
}

func rrAddr(rr dns.RR) netip.Addr {
	switch rr := rr.(type) {
	case *dns.A:
		a, _ := netip.AddrFromSlice(rr.A)
		return a.Unmap()
	case *dns.AAAA:
		a, _ := netip.AddrFromSlice(rr.AAAA)
		return a
	}
	return netip.Addr{}
}

// txtStrings returns the character strings of a TXT record as they are
// on the wire.
func txtStrings(t *testing.T, rr dns.RR) []string {
	t.Helper()
	buf := make([]byte, 65535)
	n, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	off := len(rr.Header().Name) + 1 + 10
	if rr.Header().Name == "." {
		off = 1 + 10
	}
	var out []string
	for off < n {
		l := int(buf[off])
		out = append(out, string(buf[off+1:off+1+l]))
		off += 1 + l
	}
	return out
}

// wantTXT is what the registration publishes in TXT: key=value by key,
// then tags=a,b, or one empty string.
func wantTXT(in registry.Instance) []string {
	var want []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range in.Meta {
			if !yield(k) {
				return
			}
		}
	}) {
		want = append(want, k+"="+in.Meta[k])
	}
	if len(in.Tags) > 0 {
		want = append(want, "tags="+strings.Join(in.Tags, ","))
	}
	if len(want) == 0 {
		want = []string{""}
	}
	return want
}
