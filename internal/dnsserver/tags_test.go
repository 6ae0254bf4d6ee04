package dnsserver

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/registry"
)

// tagZone is a server over an index whose changes the test makes.
type tagZone struct {
	s   *Server
	ix  *registry.Index
	rev int64
}

func newTagZone(t *testing.T, failOpen bool) *tagZone {
	t.Helper()
	ix := registry.NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	s, err := New(Config{FailOpen: failOpen}, ix)
	if err != nil {
		t.Fatal(err)
	}
	return &tagZone{s: s, ix: ix}
}

func tagged(id, svc, proto, addr string, tags ...string) registry.Instance {
	return registry.Instance{
		ID: id, Service: svc, Protocol: proto, Address: netip.MustParseAddr(addr), Port: 8080,
		Weight: 1, Tags: tags, Health: registry.Health{Status: registry.HealthPassing},
	}
}

func (z *tagZone) put(ins ...registry.Instance) {
	var evs []registry.Event
	for _, in := range ins {
		z.rev++
		evs = append(evs, registry.Event{Type: registry.EventPut, Rev: z.rev, Instance: in})
	}
	z.ix.Apply(evs)
}

func (z *tagZone) del(in registry.Instance) {
	z.rev++
	z.ix.Apply([]registry.Event{{Type: registry.EventDelete, Rev: z.rev, Instance: in}})
}

// got returns the rcode of the answer and its records as text: SRV
// targets, PTR names, addresses; glue as "+name".
func (z *tagZone) got(t *testing.T, name string, qtype uint16) (string, []string) {
	t.Helper()
	m := ask(t, z.s, name, qtype, 0, true)
	if !m.Authoritative {
		t.Errorf("%s %s: not authoritative", name, dns.TypeToString[qtype])
	}
	if len(m.Answer) == 0 && m.Rcode != dns.RcodeRefused && len(m.Ns) != 1 {
		t.Errorf("%s %s: %s without the SOA", name, dns.TypeToString[qtype], dns.RcodeToString[m.Rcode])
	}
	var out []string
	for _, rr := range m.Answer {
		if !strings.EqualFold(rr.Header().Name, name) {
			t.Errorf("%s %s: record owned by %s", name, dns.TypeToString[qtype], rr.Header().Name)
		}
		switch rr := rr.(type) {
		case *dns.SRV:
			out = append(out, rr.Target)
		case *dns.PTR:
			out = append(out, rr.Ptr)
		default:
			out = append(out, rrAddr(rr).String())
		}
	}
	for _, rr := range m.Extra {
		out = append(out, "+"+rr.Header().Name+"="+rrAddr(rr).String())
	}
	slices.Sort(out)
	return dns.RcodeToString[m.Rcode], out
}

func (z *tagZone) want(t *testing.T, name string, qtype uint16, rcode string, records ...string) {
	t.Helper()
	gotRcode, got := z.got(t, name, qtype)
	slices.Sort(records)
	if gotRcode != rcode || !slices.Equal(got, records) {
		t.Errorf("%s %s: %s %q, want %s %q", name, dns.TypeToString[qtype], gotRcode, got, rcode, records)
	}
}

// TestTagNames: a tag that is a DNS label names the healthy instances
// that carry it, case-insensitively, at the DNS-SD subtype (PTR to the
// same instance names as _calc._tcp.Z PTR), at _<tag>._calc._<proto>.Z
// (SRV) and at <tag>.tag.calc.Z (SRV with glue, A, AAAA). A tag no
// instance carries is NXDOMAIN; another type at a tag's name is NODATA;
// the names above the tag names are empty non-terminals.
func TestTagNames(t *testing.T) {
	const Z = "servicediscovery.internal."
	z := newTagZone(t, true)
	long := strings.Repeat("x", 63)
	z.put(
		tagged("c1", "calc", "tcp", "10.0.0.1", "blue", "canary"),
		tagged("c2", "calc", "tcp", "10.0.0.2", "Blue", "blue"),
		tagged("c3", "calc", "tcp", "fd00::3", "green", "not a label", "-x", long),
		tagged("c4", "calc", "udp", "10.0.0.4", "blue"),
		tagged("t1", "time", "tcp", "10.0.1.1"),
		tagged("tag", "web", "tcp", "10.0.2.1"),
		tagged("w1", "web", "tcp", "10.0.2.2", "blue"),
	)
	c5 := tagged("c5", "calc", "tcp", "10.0.0.5", "red", "blue")
	c5.Health.Status = registry.HealthCritical
	z.put(c5)

	const (
		ok     = "NOERROR"
		nx     = "NXDOMAIN"
		c1     = "c1.calc." + Z
		c2     = "c2.calc." + Z
		c4     = "c4.calc." + Z
		glue1  = "+" + c1 + "=10.0.0.1"
		glue2  = "+" + c2 + "=10.0.0.2"
		glue4  = "+" + c4 + "=10.0.0.4"
		dnssd1 = "c1._calc._tcp." + Z
		dnssd2 = "c2._calc._tcp." + Z
	)
	// The subtype answers the names the browse answers.
	_, browse := z.got(t, "_calc._tcp."+Z, dns.TypePTR)
	for _, name := range []string{dnssd1, dnssd2} {
		if !slices.Contains(browse, name) {
			t.Fatalf("_calc._tcp PTR %q lacks %s", browse, name)
		}
	}
	z.want(t, "_blue._sub._calc._tcp."+Z, dns.TypePTR, ok, dnssd1, dnssd2)
	z.want(t, "_BLUE._Sub._calc._TCP."+Z, dns.TypePTR, ok, dnssd1, dnssd2)
	z.want(t, "_blue._sub._calc._udp."+Z, dns.TypePTR, ok, "c4._calc._udp."+Z)
	z.want(t, "_canary._sub._calc._tcp."+Z, dns.TypePTR, ok, dnssd1)
	z.want(t, "_blue._sub._calc._tcp."+Z, dns.TypeANY, ok, dnssd1, dnssd2)
	z.want(t, "_blue._calc._tcp."+Z, dns.TypeSRV, ok, c1, c2, glue1, glue2)
	z.want(t, "_blue._calc._udp."+Z, dns.TypeSRV, ok, c4, glue4)
	z.want(t, "blue.tag.calc."+Z, dns.TypeSRV, ok, c1, c2, c4, glue1, glue2, glue4)
	z.want(t, "Blue.TAG.calc."+Z, dns.TypeA, ok, "10.0.0.1", "10.0.0.2", "10.0.0.4")
	z.want(t, "green.tag.calc."+Z, dns.TypeAAAA, ok, "fd00::3")
	z.want(t, "_green._sub._calc._tcp."+Z, dns.TypePTR, ok, "c3._calc._tcp."+Z)
	z.want(t, "blue.tag.web."+Z, dns.TypeSRV, ok, "w1.web."+Z, "+w1.web."+Z+"=10.0.2.2")

	// Known names, other types: NODATA.
	z.want(t, "blue.tag.calc."+Z, dns.TypeAAAA, ok)
	z.want(t, "blue.tag.calc."+Z, dns.TypeTXT, ok)
	z.want(t, "green.tag.calc."+Z, dns.TypeA, ok)
	z.want(t, "_blue._sub._calc._tcp."+Z, dns.TypeSRV, ok)
	z.want(t, "_blue._calc._tcp."+Z, dns.TypePTR, ok)
	z.want(t, "_blue._calc._tcp."+Z, dns.TypeA, ok)
	// Only an unhealthy instance carries red: the name is there, with
	// nothing to hand out.
	z.want(t, "red.tag.calc."+Z, dns.TypeSRV, ok)
	z.want(t, "_red._sub._calc._tcp."+Z, dns.TypePTR, ok)
	// Empty non-terminals (RFC 8020).
	z.want(t, "tag.calc."+Z, dns.TypeA, ok)
	z.want(t, "_sub._calc._tcp."+Z, dns.TypePTR, ok)
	z.want(t, "_sub._calc._udp."+Z, dns.TypePTR, ok)
	// web's instance "tag" (stored before the door refused the ID)
	// keeps its target name.
	z.want(t, "tag.web."+Z, dns.TypeA, ok, "10.0.2.1")

	// Tags no instance carries, tags that are not names, services
	// without tags: NXDOMAIN.
	for _, name := range []string{
		"nope.tag.calc." + Z,
		"_nope._sub._calc._tcp." + Z,
		"_nope._calc._tcp." + Z,
		"_green._sub._calc._udp." + Z, // green is on tcp only
		"_green._calc._udp." + Z,
		long + ".tag.calc." + Z, // 63 bytes: _<tag> would be 64
		"x.tag.calc." + Z,
		"blue.tag.nope." + Z,
		"_blue._sub._nope._tcp." + Z,
		"_blue._sub._calc._sctp." + Z,
		"_blue.sub._calc._tcp." + Z,
		"blue._sub._calc._tcp." + Z,
		"_blue._sub.calc._tcp." + Z,
		"_._sub._calc._tcp." + Z,
		"_blue._sub._sub._calc._tcp." + Z,
		"a._blue._sub._calc._tcp." + Z,
		"tag.time." + Z,
		"blue.tag.time." + Z,
		"_sub._time._tcp." + Z,
		"_sub._calc._sctp." + Z,
		"blue.tags.calc." + Z,
	} {
		z.want(t, name, dns.TypePTR, nx)
		z.want(t, name, dns.TypeSRV, nx)
	}
}

// TestTagAnswersFollowChanges: an instance that loses a tag, fails its
// check or goes leaves the tag's answers; the last one takes the name
// with it.
func TestTagAnswersFollowChanges(t *testing.T) {
	const Z = "servicediscovery.internal."
	z := newTagZone(t, false)
	c1 := tagged("c1", "calc", "tcp", "10.0.0.1", "blue")
	c2 := tagged("c2", "calc", "tcp", "10.0.0.2", "blue")
	z.put(c1, c2)
	sub := "_blue._sub._calc._tcp." + Z
	srv := "_blue._calc._tcp." + Z
	plain := "blue.tag.calc." + Z
	// Query every name first, so that the answers are packed and kept.
	z.want(t, sub, dns.TypePTR, "NOERROR", "c1._calc._tcp."+Z, "c2._calc._tcp."+Z)
	z.want(t, srv, dns.TypeSRV, "NOERROR", "c1.calc."+Z, "c2.calc."+Z, "+c1.calc."+Z+"=10.0.0.1", "+c2.calc."+Z+"=10.0.0.2")
	z.want(t, plain, dns.TypeA, "NOERROR", "10.0.0.1", "10.0.0.2")

	c2.Tags = []string{"green"}
	z.put(c2)
	z.want(t, sub, dns.TypePTR, "NOERROR", "c1._calc._tcp."+Z)
	z.want(t, srv, dns.TypeSRV, "NOERROR", "c1.calc."+Z, "+c1.calc."+Z+"=10.0.0.1")
	z.want(t, plain, dns.TypeA, "NOERROR", "10.0.0.1")
	z.want(t, "green.tag.calc."+Z, dns.TypeA, "NOERROR", "10.0.0.2")

	// Unhealthy: out of the answers; the name stays while c1 carries it.
	c1.Health.Status = registry.HealthCritical
	z.put(c1)
	z.want(t, sub, dns.TypePTR, "NOERROR")
	z.want(t, srv, dns.TypeSRV, "NOERROR")
	z.want(t, plain, dns.TypeA, "NOERROR")
	c1.Health.Status = registry.HealthPassing
	z.put(c1)
	z.want(t, plain, dns.TypeA, "NOERROR", "10.0.0.1")

	// Tagged anew, in another case.
	c2.Tags = []string{"BLUE"}
	z.put(c2)
	z.want(t, plain, dns.TypeA, "NOERROR", "10.0.0.1", "10.0.0.2")
	z.want(t, "green.tag.calc."+Z, dns.TypeA, "NXDOMAIN")

	// The last instances with the tag lose it, or go.
	c1.Tags = nil
	z.put(c1)
	z.del(c2)
	for _, name := range []string{sub, srv, plain, "tag.calc." + Z, "_sub._calc._tcp." + Z} {
		z.want(t, name, dns.TypeA, "NXDOMAIN")
	}
	z.want(t, "calc."+Z, dns.TypeA, "NOERROR", "10.0.0.1")
}

// TestTagAnswersDoNotAllocate: answering at a tag's names, once packed,
// allocates nothing, as every other answer.
func TestTagAnswersDoNotAllocate(t *testing.T) {
	s := newTestServer(t, 10)
	z := "servicediscovery.internal."
	out := make([]byte, 65536+optLen)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"_blue._sub._svc5._tcp." + z, dns.TypePTR},
		{"_blue._svc5._tcp." + z, dns.TypeSRV},
		{"blue.tag.svc5." + z, dns.TypeSRV},
		{"Green.tag.svc5." + z, dns.TypeAAAA},
		{"nope.tag.svc5." + z, dns.TypeSRV},
		{"_sub._svc5._tcp." + z, dns.TypePTR},
	} {
		req := packQuery(t, q.name, q.qtype, 0, nil)
		s.respond(req, out, false) // pack once
		if n := testing.AllocsPerRun(100, func() { s.respond(req, out, false) }); n != 0 {
			t.Errorf("%s %s: %v allocations per query", q.name, dns.TypeToString[q.qtype], n)
		}
	}
}

// TestLargeTagsFollowTheBuilder: the tags of a service of more than
// inlineMax instances are indexed and packed with its lists by the
// background builder, off the index's change hook; queries meanwhile get
// the previous version's tag answers, then the new ones.
func TestLargeTagsFollowTheBuilder(t *testing.T) {
	const Z = "servicediscovery.internal."
	z := newTagZone(t, false)
	var ins []registry.Instance
	for i := 0; i < 300; i++ {
		in := tagged(fmt.Sprintf("big-%03d", i), "big", "tcp", fmt.Sprintf("10.1.%d.%d", i/200, i%200+1), "blue")
		if i%100 == 0 {
			in.Tags = append(in.Tags, "canary")
		}
		ins = append(ins, in)
	}
	z.put(ins...)
	count := func(name string, qtype uint16) int {
		t.Helper()
		m := ask(t, z.s, name, qtype, 0, true)
		if m.Truncated || m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: %s tc=%v", name, dns.RcodeToString[m.Rcode], m.Truncated)
		}
		if m.Rcode == dns.RcodeNameError {
			return -1
		}
		return len(m.Answer)
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"blue.tag.big." + Z, dns.TypeSRV, 300},
		{"_blue._big._tcp." + Z, dns.TypeSRV, 300},
		{"_blue._sub._big._tcp." + Z, dns.TypePTR, 300},
		{"canary.tag.big." + Z, dns.TypeA, 3},
		{"green.tag.big." + Z, dns.TypeA, -1},
	} {
		if n := count(c.name, c.qtype); n != c.want {
			t.Fatalf("%s %s: %d records, want %d", c.name, dns.TypeToString[c.qtype], n, c.want)
		}
	}

	held := make(chan string, 1)
	release := make(chan struct{})
	z.s.builder.mu.Lock()
	z.s.builder.hold = func(name string) {
		held <- name
		<-release
	}
	z.s.builder.mu.Unlock()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	// One change: big-000 loses blue, and 150 instances become green.
	ins[0].Tags = []string{"canary"}
	for i := 100; i < 250; i++ {
		ins[i].Tags = append(ins[i].Tags, "green")
	}
	z.put(ins...)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the change never reached the builder")
	}
	// Held: the tags are the previous version's.
	if n := count("blue.tag.big."+Z, dns.TypeSRV); n != 300 {
		t.Errorf("blue while the build is held: %d records, want the previous 300", n)
	}
	if n := count("_green._sub._big._tcp."+Z, dns.TypePTR); n != -1 {
		t.Errorf("green while the build is held: %d records, want the previous NXDOMAIN", n)
	}
	if z.s.zone.get([]byte("big")).tags.Load() != nil {
		t.Error("the change hook indexed a large service's tags")
	}
	close(release)
	released = true
	deadline := time.Now().Add(30 * time.Second)
	for count("blue.tag.big."+Z, dns.TypeSRV) != 299 || count("_blue._sub._big._tcp."+Z, dns.TypePTR) != 299 ||
		count("_green._sub._big._tcp."+Z, dns.TypePTR) != 150 || count("green.tag.big."+Z, dns.TypeSRV) != 150 {
		if time.Now().After(deadline) {
			t.Fatal("the builder's answers never came")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := count("canary.tag.big."+Z, dns.TypeA); n != 3 {
		t.Errorf("canary: %d records, want 3", n)
	}
}

// BenchmarkBuildTags indexes the tags of a 20,000-instance service, as
// the background builder does after each change: a few tags shared by
// many instances, and the most the door lets through (32 tags on every
// instance, all distinct).
func BenchmarkBuildTags(b *testing.B) {
	for _, c := range []struct {
		tags   int
		unique bool
	}{{3, false}, {registry.MaxTags, false}, {registry.MaxTags, true}} {
		b.Run(fmt.Sprintf("tags=%d/distinct=%v", c.tags, c.unique), func(b *testing.B) {
			list := make([]registry.Instance, 20000)
			for i := range list {
				list[i] = bigInstance(i, false)
				for j := 0; j < c.tags; j++ {
					if c.unique {
						list[i].Tags = append(list[i].Tags, fmt.Sprintf("t%d-%d", i, j))
					} else {
						list[i].Tags = append(list[i].Tags, fmt.Sprintf("t%d", j))
					}
				}
			}
			svc := newService("big", list, false, registry.MaxTagLabel)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				svc.buildTags()
			}
		})
	}
}
