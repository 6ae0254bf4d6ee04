package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseServiceName(t *testing.T) {
	cases := []struct{ in, name, proto, err string }{
		{"calc", "calc", "", ""},
		{"Calc", "calc", "", ""},
		{"_calc._tcp", "calc", "tcp", ""},
		{"_calc._udp.", "calc", "udp", ""},
		{"_calc._sctp", "", "", "_name._tcp"},
		{"_calc", "", "", "_name._tcp"},
		{"Calc Service!", "", "", `"Calc Service!"`},
		{"-calc", "", "", "hyphen"},
		{"", "", "", "empty"},
		{strings.Repeat("a", 64), "", "", "longer than 63"},
	}
	for _, c := range cases {
		name, proto, err := ParseServiceName(c.in)
		if c.err != "" {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "service" || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseServiceName(%q) error %v, want a service FieldError with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || name != c.name || proto != c.proto {
			t.Errorf("ParseServiceName(%q) = %q, %q, %v", c.in, name, proto, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := func() Instance {
		return Instance{ID: "calc-1", Service: "calc", Address: netip.MustParseAddr("10.0.0.1"), Port: 8081}
	}
	cases := []struct {
		name  string
		mut   func(*Instance)
		field string
	}{
		{"valid", func(*Instance) {}, ""},
		{"v6", func(in *Instance) { in.Address = netip.MustParseAddr("fd00::1") }, ""},
		{"v4-mapped v6 is unmapped", func(in *Instance) { in.Address = netip.MustParseAddr("::ffff:10.0.0.1") }, ""},
		{"udp name", func(in *Instance) { in.Service = "_dns._udp" }, ""},
		{"no id", func(in *Instance) { in.ID = "" }, "id"},
		{"id with dot", func(in *Instance) { in.ID = "a.b" }, "id"},
		{"no address", func(in *Instance) { in.Address = netip.Addr{} }, "address"},
		{"multicast", func(in *Instance) { in.Address = netip.MustParseAddr("224.0.0.1") }, "address"},
		{"zoned v6", func(in *Instance) { in.Address = netip.MustParseAddr("fe80::1%eth0") }, "address"},
		{"port 0", func(in *Instance) { in.Port = 0 }, "port"},
		{"protocol", func(in *Instance) { in.Protocol = "sctp" }, "protocol"},
		{"protocol clash", func(in *Instance) { in.Service, in.Protocol = "_calc._udp", "tcp" }, "protocol"},
		{"control char in tag", func(in *Instance) { in.Tags = []string{"a\nb"} }, "tags"},
		{"empty tag", func(in *Instance) { in.Tags = []string{""} }, "tags"},
		{"too many tags", func(in *Instance) {
			in.Tags = make([]string, 33)
			for i := range in.Tags {
				in.Tags[i] = "t"
			}
		}, "tags"},
		{"meta key with space", func(in *Instance) { in.Meta = map[string]string{"a b": "c"} }, "meta key"},
		{"meta value too long", func(in *Instance) { in.Meta = map[string]string{"k": strings.Repeat("v", 256)} }, "meta.k"},
		{"meta too big in all", func(in *Instance) {
			in.Meta = map[string]string{}
			for i := 0; i < 20; i++ {
				in.Meta[strings.Repeat("k", 10)+string(rune('a'+i))] = strings.Repeat("v", 240)
			}
		}, "meta"},
		{"meta key=value over a TXT string", func(in *Instance) { in.Meta = map[string]string{strings.Repeat("k", 10): strings.Repeat("v", 250)} }, "meta.kkkkkkkkkk"},
		{"meta value with C1 control", func(in *Instance) { in.Meta = map[string]string{"k": "a\u009b31m"} }, "meta.k"},
		{"meta value not UTF-8", func(in *Instance) { in.Meta = map[string]string{"k": "a\xff"} }, "meta.k"},
		{"meta value with a bidi override", func(in *Instance) { in.Meta = map[string]string{"k": "invoice\u202efdp.exe"} }, "meta.k"},
		{"tag with a line separator", func(in *Instance) { in.Tags = []string{"a\u2028b"} }, "tags"},
		{"output with a bidi isolate", func(in *Instance) { in.Health.Output = "ok \u2066x\u2069" }, "health.output"},
		{"meta value in Hebrew and emoji", func(in *Instance) { in.Meta = map[string]string{"k": "שלום 😀"} }, ""},
		{"tags over a TXT string", func(in *Instance) {
			in.Tags = []string{strings.Repeat("a", 200), strings.Repeat("b", 60)}
		}, "tags"},
		{"tags that fit a TXT string", func(in *Instance) {
			in.Tags = []string{strings.Repeat("a", 200), strings.Repeat("b", 49)}
		}, ""},
		{"service longer than 62", func(in *Instance) { in.Service = strings.Repeat("s", 63) }, "service"},
		{"service of 62", func(in *Instance) { in.Service = strings.Repeat("s", 62) }, ""},
		{"broadcast", func(in *Instance) { in.Address = netip.MustParseAddr("255.255.255.255") }, "address"},
		{"v6 unspecified", func(in *Instance) { in.Address = netip.MustParseAddr("::") }, "address"},
		{"v6 multicast", func(in *Instance) { in.Address = netip.MustParseAddr("ff02::1") }, "address"},
		{"escape in output", func(in *Instance) { in.Health.Output = "ok\x1b[2J" }, "health.output"},
		{"control in node", func(in *Instance) { in.Node = "host\r1" }, "node"},
		{"bad health", func(in *Instance) { in.Health.Status = "ok" }, "health.status"},
		{"long output", func(in *Instance) { in.Health.Output = strings.Repeat("x", 2000) }, "health.output"},
	}
	for _, c := range cases {
		in := ok()
		c.mut(&in)
		in.Normalize()
		err := in.Validate()
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: error %v, want field %q", c.name, err, c.field)
		}
	}
	in := ok()
	in.Normalize()
	if in.Protocol != TCP || in.Weight != 1 || in.Health.Status != HealthPassing {
		t.Errorf("defaults: %+v", in)
	}
}

// fakeStore lists what it holds and then fails the watch at once, like a
// store whose history was compacted, so the index must list again.
type fakeStore struct {
	Store
	lists [][]Instance
	n     int
}

func (f *fakeStore) List(context.Context) ([]Instance, int64, error) {
	l := f.lists[min(f.n, len(f.lists)-1)]
	f.n++
	return l, int64(10 * f.n), nil
}

func (f *fakeStore) Watch(ctx context.Context, rev int64) (<-chan WatchResponse, error) {
	return nil, ErrCompacted
}

// TestIndexRelistAppliesTheDifference: after a lost watch the index lists
// again and its hooks hear about exactly the services that changed; an
// instance that vanished meanwhile is gone.
func TestIndexRelistAppliesTheDifference(t *testing.T) {
	a := Instance{ID: "a-1", Service: "a", Address: netip.MustParseAddr("10.0.0.1"), Port: 1}
	b := Instance{ID: "b-1", Service: "b", Address: netip.MustParseAddr("10.0.0.2"), Port: 1}
	b2 := b
	b2.Port = 2
	c := Instance{ID: "c-1", Service: "c", Address: netip.MustParseAddr("10.0.0.3"), Port: 1}
	st := &fakeStore{lists: [][]Instance{{a, b}, {a, b2, c}}}
	ix := NewIndex(slog.New(slog.NewTextHandler(io.Discard, nil)))
	changed := make(chan []string, 10)
	ix.OnChange(func(s []string) { changed <- s })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ix.Run(ctx, st)
	first := <-changed
	second := <-changed
	if strings.Join(first, ",") != "a,b" || strings.Join(second, ",") != "b,c" {
		t.Fatalf("hooks heard %v then %v, want [a b] then [b c]", first, second)
	}
	got, _ := ix.Instances("b")
	if len(got) != 1 || got[0].Port != 2 {
		t.Fatalf("b after relist: %+v", got)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := ix.WaitRev(wctx, 20); err != nil {
		t.Fatal(err)
	}
}

func TestDNSNames(t *testing.T) {
	reserved := map[string]string{"ns": "the name server"}
	n, err := NewDNSNames("servicediscovery.internal", reserved)
	if err != nil {
		t.Fatal(err)
	}
	// 255 - 27 (zone) - 8 = 220 bytes for id and service together.
	if n.Room() != 220 {
		t.Fatalf("room %d, want 220", n.Room())
	}
	ok := Instance{ID: "calc-1", Service: "calc", Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80}
	cases := []struct {
		name  string
		mut   func(*Instance)
		field string
	}{
		{"valid", func(*Instance) {}, ""},
		{"reserved service", func(in *Instance) { in.Service = "ns" }, "service"},
		{"metadata service address", func(in *Instance) { in.Address = netip.MustParseAddr("169.254.169.254") }, "address"},
		{"v6 link-local", func(in *Instance) { in.Address = netip.MustParseAddr("fe80::1") }, "address"},
	}
	for _, c := range cases {
		in := ok
		c.mut(&in)
		err := n.Check(&in)
		var fe *FieldError
		if c.field == "" && err != nil || c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
			t.Errorf("%s: %v, want field %q", c.name, err, c.field)
		}
	}
	n.AllowLinkLocal = true
	ll := ok
	ll.Address = netip.MustParseAddr("169.254.1.1")
	if err := n.Check(&ll); err != nil {
		t.Errorf("link-local allowed: %v", err)
	}

	// A zone of 210 bytes in wire form leaves 37: a 40-byte id and an 8-byte
	// service no longer fit, a 29-byte id does (the name is then 255 bytes).
	long := strings.Repeat(strings.Repeat("z", 49)+".", 4) + "internal"
	n, err = NewDNSNames(long, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := ok
	in.ID, in.Service = strings.Repeat("i", 40), "service8"
	var fe *FieldError
	if err := n.Check(&in); !errors.As(err, &fe) || fe.Field != "id" || !strings.Contains(err.Error(), "255") {
		t.Errorf("long names in a long zone: %v", err)
	}
	in.ID = strings.Repeat("i", 29)
	if err := n.Check(&in); err != nil {
		t.Errorf("names that fit: %v", err)
	}
	if _, err := NewDNSNames(strings.Repeat(strings.Repeat("z", 60)+".", 4)+"x", nil); err == nil {
		t.Error("a zone that leaves no room was accepted")
	}
}

func TestNodeSetChecksNodeWithoutInstances(t *testing.T) {
	for _, node := range []string{strings.Repeat("n", 40000), "a\nb", ""} {
		var fe *FieldError
		if _, err := PrepareNodeSet(node, time.Second, nil); !errors.As(err, &fe) || fe.Field != "node" {
			t.Errorf("node %.20q with no instances: %v", node, err)
		}
	}
}

// TestTagLabel: a tag that is a DNS label gets names, in lower case;
// others are only published in TXT.
func TestTagLabel(t *testing.T) {
	named := []string{"blue", "Blue", "v1-2", "0", strings.Repeat("A", 62)}
	unnamed := []string{
		strings.Repeat("a", 63), // _<tag> would be 64 bytes
		"", "-blue", "blue-", "blue_green", "_blue", "blue.green",
		"urlprefix-/api", "traefik.enable=true", "bl\u00fce", "with space", "x\x00",
		strings.Repeat("a", 300),
	}
	for _, tag := range named {
		if got, ok := TagLabel(tag); !ok || got != strings.ToLower(tag) {
			t.Errorf("TagLabel(%q) = %q, %v; want %q", tag, got, ok, strings.ToLower(tag))
		}
	}
	for _, tag := range unnamed {
		if got, ok := TagLabel(tag); ok {
			t.Errorf("TagLabel(%q) = %q: a name for a tag that is no DNS label of at most %d bytes", tag, got, MaxTagLabel)
		}
	}
}

// TestDNSNamesTags: a tag that gets names is refused when its DNS-SD
// subtype name _<tag>._sub._<service>._<proto>.Z would be over 255 bytes
// in the zone, naming the field and the tag; a tag that gets no names
// is not (it is only in TXT); the ID "tag" is refused when reserved.
func TestDNSNamesTags(t *testing.T) {
	// A zone of 210 bytes in wire form: a tag of service8 may take
	// 255 - 210 - 14 - 8 = 23 bytes.
	long := strings.Repeat(strings.Repeat("z", 49)+".", 4) + "internal"
	n, err := NewDNSNames(long, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.ReservedIDs = map[string]string{"tag": "tag.<service>.Z holds the tag names"}
	if got := n.TagRoom("service8"); got != 23 {
		t.Fatalf("tag room %d, want 23", got)
	}
	ok := Instance{ID: "i-1", Service: "service8", Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80}
	fits := strings.Repeat("t", 23)
	if sub := "_" + fits + "._sub._service8._tcp." + long + "."; len(sub)+1 != MaxName {
		t.Fatalf("the subtype name of a tag that just fits is %d bytes in wire form", len(sub)+1)
	}
	for _, tags := range [][]string{
		{fits},
		{strings.ToUpper(fits)},
		{"not a label " + strings.Repeat("t", 40)},
		{strings.Repeat("t", 63)}, // not a name: TXT only
	} {
		in := ok
		in.Tags = tags
		if err := n.Check(&in); err != nil {
			t.Errorf("tags %q: %v", tags, err)
		}
	}
	for _, tag := range []string{fits + "t", strings.ToUpper(fits) + "T", strings.Repeat("t", 62)} {
		for _, proto := range []string{TCP, UDP} {
			in := ok
			in.Protocol = proto
			in.Tags = []string{"blue", tag}
			err := n.Check(&in)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "tags" || fe.Value != tag || !strings.Contains(err.Error(), "255") || !strings.Contains(err.Error(), "_sub._service8._"+proto) {
				t.Errorf("tag %q over %s: %v, want a refusal of field tags naming it and the subtype name", tag, proto, err)
			}
		}
	}
	in := ok
	in.ID = "tag"
	var fe *FieldError
	if err := n.Check(&in); !errors.As(err, &fe) || fe.Field != "id" || fe.Value != "tag" {
		t.Errorf("id tag: %v, want refused", err)
	}
}
