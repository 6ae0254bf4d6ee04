package route53backend_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/signpost-dns/signpost/internal/backend"
	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/registry"
)

const (
	zoneName = "servicediscovery.internal"
	host     = "ip-10-0-0-5.ec2.internal"
	cid      = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
)

func startEmu(t *testing.T) *r53emu.Server {
	t.Helper()
	s, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// cfg is a test configuration: the emulator's endpoint, static
// credentials and a fixed region, so that nothing but loopback is reached.
func cfg(s *r53emu.Server) route53backend.Config {
	return route53backend.Config{
		Zone:        zoneName,
		Hostname:    host,
		HostAddress: netip.MustParseAddr("10.0.0.5"),
		Endpoint:    s.URL(),
		Region:      "us-east-1",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "secret", Source: "test"}, nil
		}),
		Rate:       1000,
		Burst:      10,
		Window:     10 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
	}
}

func newBackend(t *testing.T, c route53backend.Config) *route53backend.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := route53backend.New(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// synced starts an emulator with the zone and a backend that has synced
// an empty set.
func synced(t *testing.T, mod func(*route53backend.Config)) (*r53emu.Server, string, *route53backend.Backend, context.Context) {
	t.Helper()
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	c := cfg(s)
	if mod != nil {
		mod(&c)
	}
	b := newBackend(t, c)
	ctx := ctxT(t)
	if err := b.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return s, zone, b, ctx
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func inst(id, service string, port uint16, meta map[string]string) registry.Instance {
	in := registry.Instance{ID: id, Service: service, Protocol: "tcp", Address: netip.MustParseAddr("10.0.0.5"), Port: port, Node: host, Meta: meta}
	in.Normalize()
	return in
}

// find returns the record set with that name, type and set identifier.
func find(s *r53emu.Server, zone, name, typ, setID string) *r53emu.RecordSet {
	for _, r := range s.Records(zone) {
		if r.Name == name && r.Type == typ && r.SetIdentifier == setID {
			return &r
		}
	}
	return nil
}

func count(s *r53emu.Server, zone, typ string) int {
	n := 0
	for _, r := range s.Records(zone) {
		if r.Type == typ {
			n++
		}
	}
	return n
}

func wantSet(t *testing.T, r *r53emu.RecordSet, ttl int64, value string) {
	t.Helper()
	if r == nil {
		t.Fatal("record set missing")
	}
	if r.Weight == nil || *r.Weight != 1 || r.TTL != ttl || len(r.Values) != 1 || r.Values[0] != value {
		w := int64(-1)
		if r.Weight != nil {
			w = *r.Weight
		}
		t.Fatalf("record set %s %s [%s]: weight %d ttl %d values %q; want weight 1 ttl %d value %q", r.Name, r.Type, r.SetIdentifier, w, r.TTL, r.Values, ttl, value)
	}
}

func TestRecordLayout(t *testing.T) {
	s, zone, b, ctx := synced(t, nil)
	plain := inst("a", "calc", 32768, map[string]string{route53backend.MetaSRVName: "calc", route53backend.MetaContainerID: cid})
	underscored := inst("b", "time", 32769, map[string]string{route53backend.MetaSRVName: "_time._tcp", route53backend.MetaContainerID: cid[:63] + "0"})
	multiA := inst("c", "portal", 8080, map[string]string{route53backend.MetaSRVName: "portal", route53backend.MetaContainerID: "abc", route53backend.MetaContainerPorts: "2"})
	multiB := inst("d", "admin", 8443, map[string]string{route53backend.MetaContainerID: "abc", route53backend.MetaContainerPorts: "2"})
	bare := inst("e-1-tcp-abc", "calc", 32770, nil)
	for _, in := range []registry.Instance{plain, underscored, multiA, multiB, bare} {
		if err := b.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Exactly the original agent's layout.
	wantSet(t, find(s, zone, "calc.servicediscovery.internal.", "SRV", host+":"+cid), 0, "1 1 32768 "+host)
	wantSet(t, find(s, zone, "_time._tcp.servicediscovery.internal.", "SRV", host+":"+cid[:63]+"0"), 0, "1 1 32769 "+host)
	wantSet(t, find(s, zone, "portal.servicediscovery.internal.", "SRV", host+":abc:8080"), 0, "1 1 8080 "+host)
	wantSet(t, find(s, zone, "_admin._tcp.servicediscovery.internal.", "SRV", host+":abc:8443"), 0, "1 1 8443 "+host)
	wantSet(t, find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":e-1-tcp-abc"), 0, "1 1 32770 "+host)
	wantSet(t, find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", host), 0, "10.0.0.5")
	if n := len(s.Records(zone)); n != 2+5+1 {
		t.Fatalf("%d record sets, want SOA, NS, 5 SRV and the host A", n)
	}

	// Deregister removes the SRV and leaves the host record; Release
	// removes the rest.
	if err := b.Deregister(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if err := b.Deregister(ctx, plain); err != nil { // twice: not there is not an error
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if find(s, zone, "calc.servicediscovery.internal.", "SRV", host+":"+cid) != nil {
		t.Fatal("deregistered record still there")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Records(zone)); n != 2 {
		t.Fatalf("after Release %d record sets, want SOA and NS: %+v", n, s.Records(zone))
	}
}

func TestTTLConfigurable(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	c := cfg(s)
	c.TTL = 10
	b := newBackend(t, c)
	ctx := ctxT(t)
	if err := b.Sync(ctx, []registry.Instance{inst("a", "calc", 80, map[string]string{route53backend.MetaContainerID: "c1"})}); err != nil {
		t.Fatal(err)
	}
	wantSet(t, find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1"), 10, "1 1 80 "+host)
	wantSet(t, find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", host), 10, "10.0.0.5")
}

func TestZoneSelection(t *testing.T) {
	type z = r53emu.Zone
	cases := []struct {
		name    string
		zones   []z
		mod     func(*route53backend.Config)
		wantID  string
		wantErr []string
	}{
		{name: "exact private", zones: []z{{ID: "ZSUB", Name: "a." + zoneName, Private: true}, {ID: "ZOK", Name: zoneName, Private: true}}, wantID: "ZOK"},
		{name: "public ignored", zones: []z{{ID: "ZPUB", Name: zoneName}, {ID: "ZPRIV", Name: zoneName, Private: true}}, wantID: "ZPRIV"},
		{name: "only public", zones: []z{{ID: "ZPUB", Name: zoneName}}, wantErr: []string{"ZPUB", "public"}},
		{name: "public allowed", zones: []z{{ID: "ZPUB", Name: zoneName}}, mod: func(c *route53backend.Config) { c.AllowPublic = true }, wantID: "ZPUB"},
		{name: "cloud map skipped", zones: []z{{ID: "ZMAP", Name: zoneName, Private: true, LinkedService: "servicediscovery.amazonaws.com"}, {ID: "ZMINE", Name: zoneName, Private: true}}, wantID: "ZMINE"},
		{name: "only cloud map", zones: []z{{ID: "ZMAP", Name: zoneName, Private: true, LinkedService: "servicediscovery.amazonaws.com"}}, wantErr: []string{"ZMAP", "servicediscovery.amazonaws.com"}},
		{name: "ambiguous", zones: []z{{ID: "ZONE1", Name: zoneName, Private: true}, {ID: "ZONE2", Name: zoneName, Private: true}}, wantErr: []string{"ZONE1", "ZONE2", "--zone-id"}},
		{name: "no exact match", zones: []z{{ID: "ZSUB", Name: "a." + zoneName, Private: true}}, wantErr: []string{"no hosted zone named servicediscovery.internal."}},
		{name: "zone id picks", zones: []z{{ID: "ZONE1", Name: zoneName, Private: true}, {ID: "ZONE2", Name: zoneName, Private: true}}, mod: func(c *route53backend.Config) { c.ZoneID = "/hostedzone/ZONE2" }, wantID: "ZONE2"},
		{name: "zone id of another name", zones: []z{{ID: "ZOTHER", Name: "other.internal", Private: true}}, mod: func(c *route53backend.Config) { c.ZoneID = "ZOTHER" }, wantErr: []string{"ZOTHER", "other.internal."}},
		{name: "zone id public", zones: []z{{ID: "ZPUB", Name: zoneName}}, mod: func(c *route53backend.Config) { c.ZoneID = "ZPUB" }, wantErr: []string{"ZPUB", "public"}},
		{name: "zone id missing", zones: nil, mod: func(c *route53backend.Config) { c.ZoneID = "ZNONE" }, wantErr: []string{"ZNONE", "NoSuchHostedZone"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startEmu(t)
			for _, zz := range tc.zones {
				s.AddZone(zz)
			}
			c := cfg(s)
			c.MaxAttempts = 1
			if tc.mod != nil {
				tc.mod(&c)
			}
			z, err := route53backend.OpenZone(ctxT(t), c)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("picked %s, want an error", z.ID())
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if z.ID() != tc.wantID {
				t.Fatalf("picked %s, want %s", z.ID(), tc.wantID)
			}
		})
	}
}

func TestCoalescing(t *testing.T) {
	s, zone, b, ctx := synced(t, func(c *route53backend.Config) { c.Window = 100 * time.Millisecond })
	s.ResetRequests()
	for i := range 200 {
		in := inst(fmt.Sprintf("i%d", i), fmt.Sprintf("svc%d", i%7), uint16(30000+i), map[string]string{route53backend.MetaContainerID: fmt.Sprintf("c%03d", i)})
		if err := b.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(s, zone, "SRV"); n != 200 {
		t.Fatalf("%d SRV record sets, want 200", n)
	}
	changes := s.Count(r53emu.OpChangeResourceRecordSets)
	t.Logf("200 registrations: %d ChangeResourceRecordSets requests, %d requests in all", changes, s.Count(""))
	if changes > 3 {
		t.Fatalf("200 registrations in a burst took %d change requests, want at most 3", changes)
	}
	// Register then Deregister inside one window: nothing is written.
	s.ResetRequests()
	flip := inst("flip", "calc", 9999, map[string]string{route53backend.MetaContainerID: "flip"})
	_ = b.Register(ctx, flip)
	_ = b.Deregister(ctx, flip)
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.Count(r53emu.OpChangeResourceRecordSets); n != 0 {
		t.Fatalf("register+deregister in one window made %d change requests", n)
	}
}

func TestBatchLimits(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	b := newBackend(t, cfg(s))
	ctx := ctxT(t)
	var insts []registry.Instance
	for i := range 1200 {
		insts = append(insts, inst(fmt.Sprintf("i%d", i), "calc", uint16(20000+i), map[string]string{route53backend.MetaContainerID: fmt.Sprintf("c%04d", i)}))
	}
	// 1,201 UPSERTs count 2,402 records: at least three requests, each
	// within the limits the emulator enforces.
	if err := b.Sync(ctx, insts); err != nil {
		t.Fatal(err)
	}
	if n := count(s, zone, "SRV"); n != 1200 {
		t.Fatalf("%d SRV record sets, want 1200", n)
	}
	for _, r := range s.Requests() {
		if r.Op == r53emu.OpChangeResourceRecordSets && (r.Code != "" || r.Records > r53emu.MaxRecordsPerRequest) {
			t.Fatalf("change request %+v", r)
		}
	}
	if n := s.Count(r53emu.OpChangeResourceRecordSets); n < 3 || n > 4 {
		t.Fatalf("%d change requests for 2,402 counted records", n)
	}
}

func TestRateLimit(t *testing.T) {
	s := startEmu(t)
	s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	c := cfg(s)
	c.Rate, c.Burst = 20, 1
	b := newBackend(t, c)
	ctx := ctxT(t)
	// The emulator throttles above 25 a second, as AWS would above its
	// account limit: a client within its own limit is never throttled.
	s.SetRateLimit(25, 5)
	s.ResetRequests()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				errs <- b.Heartbeat(ctx)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	peak := s.MaxInWindow(time.Second)
	t.Logf("50 calls at a limit of 20/s took %s; peak %d requests in one second", took, peak)
	if took < 2*time.Second {
		t.Fatalf("50 requests at 20/s took only %s", took)
	}
	if peak > 22 { // burst 1 + 20 a second, and a little arrival jitter
		t.Fatalf("%d requests in one second, limit 20", peak)
	}
	for _, r := range s.Requests() {
		if r.Code != "" {
			t.Fatalf("request answered %s", r.Code)
		}
	}
}

func TestThrottlingRetried(t *testing.T) {
	s, zone, b, ctx := synced(t, nil)
	s.ResetRequests()
	s.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeThrottling, 3)
	s.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodePriorRequestNotComplete, 2)
	s.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeInternalError, 1)
	s.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeServiceUnavailable, 1)
	in := inst("a", "calc", 80, map[string]string{route53backend.MetaContainerID: "c1"})
	if err := b.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("throttled write not retried to success: %v", err)
	}
	ok, failed := 0, 0
	for _, r := range s.Requests() {
		if r.Op == r53emu.OpChangeResourceRecordSets {
			if r.Code == "" {
				ok++
			} else {
				failed++
			}
		}
	}
	if ok != 1 || failed != 7 {
		t.Fatalf("%d applied and %d failed change requests, want 1 and 7", ok, failed)
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1") == nil {
		t.Fatal("record missing")
	}

	// A DELETE whose answer is lost (applied, then a 500) is retried by
	// the SDK, refused as "not found", and settled by reading the zone.
	s.FailNextAfterApply(r53emu.CodeInternalError, 1)
	if err := b.Deregister(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("lost answer to a delete: %v", err)
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1") != nil {
		t.Fatal("record still there")
	}
}

func TestWriteFailureAsksForResync(t *testing.T) {
	s, zone, b, ctx := synced(t, func(c *route53backend.Config) { c.MaxAttempts = 3 })
	s.FailNext(r53emu.OpChangeResourceRecordSets, r53emu.CodeThrottling, 100)
	a := inst("a", "calc", 80, map[string]string{route53backend.MetaContainerID: "c1"})
	if err := b.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err == nil {
		t.Fatal("write throttled past MaxAttempts reported no error")
	}
	for name, err := range map[string]error{
		"register":  b.Register(ctx, inst("b", "calc", 81, nil)),
		"heartbeat": b.Heartbeat(ctx),
	} {
		if !errors.Is(err, backend.ErrResync) {
			t.Fatalf("%s after a failed write: %v, want ErrResync", name, err)
		}
	}
	s.ClearInjected()
	if err := b.Sync(ctx, []registry.Instance{a}); err != nil {
		t.Fatal(err)
	}
	if err := b.Heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat after a good sync: %v", err)
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1") == nil {
		t.Fatal("record missing after resync")
	}
}

// seedOthers puts n SRV record sets of other hosts into the zone, with
// set identifiers that share this host's name as a prefix.
func seedOthers(t *testing.T, s *r53emu.Server, zone string, n int) {
	t.Helper()
	var sets []r53emu.RecordSet
	owners := []string{"ip-10-0-0-50.ec2.internal", host + "x", "ip-10-0-0-5", "other"}
	for i := range n {
		o := owners[i%len(owners)]
		sets = append(sets, r53emu.RecordSet{Name: fmt.Sprintf("svc%04d.%s", i, zoneName), Type: "SRV",
			SetIdentifier: fmt.Sprintf("%s:c%d", o, i), Weight: aws.Int64(1), Values: []string{fmt.Sprintf("1 1 %d %s", 1000+i, o)}})
	}
	if err := s.Seed(zone, sets...); err != nil {
		t.Fatal(err)
	}
}

func TestSyncOwnershipAndPaging(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	seedOthers(t, s, zone, 1500)
	// This host's stale records, spread over the pages, and one to keep.
	var stale []r53emu.RecordSet
	for _, name := range []string{"aaa", "svc0700x", "zzz"} {
		stale = append(stale, r53emu.RecordSet{Name: name + "." + zoneName, Type: "SRV", SetIdentifier: host + ":dead-" + name,
			Weight: aws.Int64(1), Values: []string{"1 1 1 " + host}})
	}
	stale = append(stale, r53emu.RecordSet{Name: "_calc._tcp." + zoneName, Type: "SRV", SetIdentifier: host + ":c1",
		Weight: aws.Int64(1), Values: []string{"1 1 80 " + host}})
	if err := s.Seed(zone, stale...); err != nil {
		t.Fatal(err)
	}
	before := s.Records(zone)
	b := newBackend(t, cfg(s))
	ctx := ctxT(t)
	s.ResetRequests()
	keep := inst("a", "calc", 80, map[string]string{route53backend.MetaContainerID: "c1"})
	add := inst("b", "time", 81, map[string]string{route53backend.MetaSRVName: "time", route53backend.MetaContainerID: "c2"})
	if err := b.Sync(ctx, []registry.Instance{keep, add}); err != nil {
		t.Fatal(err)
	}
	if n := s.Count(r53emu.OpListResourceRecordSets); n < 6 {
		t.Fatalf("%d list pages for 1,506 record sets", n)
	}
	if n := s.Count(r53emu.OpChangeResourceRecordSets); n != 1 {
		t.Fatalf("sync took %d change requests, want 1 atomic change", n)
	}
	after := s.Records(zone)
	got := map[string]bool{}
	for _, r := range after {
		got[r.Name+"|"+r.Type+"|"+r.SetIdentifier] = true
	}
	for _, r := range before {
		k := r.Name + "|" + r.Type + "|" + r.SetIdentifier
		mine := strings.HasPrefix(r.SetIdentifier, host+":")
		switch {
		case !mine && !got[k]:
			t.Fatalf("another host's record set %s was removed", k)
		case mine && strings.Contains(r.SetIdentifier, "dead-") && got[k]:
			t.Fatalf("stale record set %s kept", k)
		}
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1") == nil ||
		find(s, zone, "time.servicediscovery.internal.", "SRV", host+":c2") == nil ||
		find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", host) == nil {
		t.Fatal("wanted record sets missing")
	}
	// Release leaves the 1,500 others.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Records(zone)); n != 1500+2 {
		t.Fatalf("after Release %d record sets, want the 1,500 others, SOA and NS", n)
	}
}

func TestBadInput(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	// Another host already holds this host's record name, and someone put
	// a non-weighted SRV set where the agent will write weighted ones.
	if err := s.Seed(zone,
		r53emu.RecordSet{Name: "ip-10-0-0-5." + zoneName, Type: "A", SetIdentifier: "ip-10-0-0-5.eu-west-1.compute.internal", Weight: aws.Int64(1), Values: []string{"10.9.9.9"}},
		r53emu.RecordSet{Name: "_mail._tcp." + zoneName, Type: "SRV", Values: []string{"1 1 25 mx.example.com"}},
	); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, cfg(s))
	ctx := ctxT(t)
	err := b.Sync(ctx, []registry.Instance{inst("a", "calc", 80, nil)})
	if err == nil || !strings.Contains(err.Error(), "ip-10-0-0-5.eu-west-1.compute.internal") {
		t.Fatalf("host record conflict: %v", err)
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":a") == nil {
		t.Fatal("SRV records not written beside the conflict")
	}
	if r := find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", "ip-10-0-0-5.eu-west-1.compute.internal"); r == nil || r.Values[0] != "10.9.9.9" {
		t.Fatal("another host's record was changed")
	}
	if find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", host) != nil {
		t.Fatal("host record written despite the conflict")
	}

	for name, in := range map[string]registry.Instance{
		"srv name of another service": inst("x", "calc", 80, map[string]string{route53backend.MetaSRVName: "_time._tcp"}),
		"srv name of another proto":   inst("x", "calc", 80, map[string]string{route53backend.MetaSRVName: "_calc._udp"}),
		"bad srv name":                inst("x", "calc", 80, map[string]string{route53backend.MetaSRVName: "ca lc"}),
		"ports not a number":          inst("x", "calc", 80, map[string]string{route53backend.MetaContainerPorts: "two"}),
		"container id with colon":     inst("x", "calc", 80, map[string]string{route53backend.MetaContainerID: "a:b"}),
		"set id too long":             inst("x", "calc", 80, map[string]string{route53backend.MetaContainerID: strings.Repeat("f", 120)}),
		"port 0":                      {ID: "x", Service: "calc", Protocol: "tcp"},
	} {
		if err := b.Register(ctx, in); err == nil || !strings.Contains(err.Error(), "x") {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Route 53 refuses a weighted set beside the non-weighted one: the
	// error names the record, and the agent is asked to resync.
	mail := inst("m", "mail", 2525, nil)
	if err := b.Register(ctx, mail); err != nil {
		t.Fatal(err)
	}
	err = b.Flush(ctx)
	if err == nil || !strings.Contains(err.Error(), "_mail._tcp.servicediscovery.internal.") {
		t.Fatalf("refused write: %v", err)
	}
	if err := b.Register(ctx, inst("n", "calc", 81, nil)); !errors.Is(err, backend.ErrResync) {
		t.Fatalf("register after a refused write: %v", err)
	}
	if r := find(s, zone, "_mail._tcp.servicediscovery.internal.", "SRV", ""); r == nil {
		t.Fatal("the non-weighted set was touched")
	}
}

func TestCheckerAPI(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	seedOthers(t, s, zone, 4)
	b := newBackend(t, cfg(s))
	ctx := ctxT(t)
	if err := b.Sync(ctx, []registry.Instance{inst("a", "calc", 80, map[string]string{route53backend.MetaContainerID: "c1"})}); err != nil {
		t.Fatal(err)
	}
	c := cfg(s)
	c.Hostname, c.HostAddress = "", netip.Addr{}
	z, err := route53backend.OpenZone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := z.ListSRV(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 5 {
		t.Fatalf("%d SRV record sets, want 5", len(sets))
	}
	var mine route53backend.SRVRecordSet
	for _, rs := range sets {
		if rs.Host == host {
			mine = rs
		}
	}
	if mine.Name != "_calc._tcp.servicediscovery.internal." || len(mine.Targets) != 1 ||
		mine.Targets[0] != (route53backend.SRVTarget{Priority: 1, Weight: 1, Port: 80, Target: host}) {
		t.Fatalf("listed %+v", mine)
	}
	if err := z.DeleteRecordSet(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := z.DeleteRecordSet(ctx, mine); err != nil {
		t.Fatalf("deleting a set already gone: %v", err)
	}
	// A set changed since it was listed is left alone.
	if err := b.Sync(ctx, []registry.Instance{inst("a", "calc", 8080, map[string]string{route53backend.MetaContainerID: "c1"})}); err != nil {
		t.Fatal(err)
	}
	mine.Targets = nil
	sets, _ = z.ListSRV(ctx)
	for _, rs := range sets {
		if rs.Host == host {
			if err := b.Sync(ctx, []registry.Instance{inst("a", "calc", 9090, map[string]string{route53backend.MetaContainerID: "c1"})}); err != nil {
				t.Fatal(err)
			}
			if err := z.DeleteRecordSet(ctx, rs); !errors.Is(err, route53backend.ErrRecordChanged) {
				t.Fatalf("delete of a changed set: %v", err)
			}
		}
	}
	if find(s, zone, "_calc._tcp.servicediscovery.internal.", "SRV", host+":c1") == nil {
		t.Fatal("changed set deleted")
	}
}

func TestConfigErrors(t *testing.T) {
	s := startEmu(t)
	s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	for name, mod := range map[string]func(*route53backend.Config){
		"no zone":       func(c *route53backend.Config) { c.Zone = "" },
		"bad zone":      func(c *route53backend.Config) { c.Zone = "bad zone" },
		"negative ttl":  func(c *route53backend.Config) { c.TTL = -1 },
		"bad hostname":  func(c *route53backend.Config) { c.Hostname = "host:1" },
		"negative rate": func(c *route53backend.Config) { c.Rate = -1 },
	} {
		c := cfg(s)
		mod(&c)
		if _, err := route53backend.New(ctxT(t), c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestOnlyPassingInstancesInZone checks that an instance whose health is
// pending or critical is not written (by Register or by Sync), and that a
// transition to passing brings it in and one to critical takes it out.
func TestOnlyPassingInstancesInZone(t *testing.T) {
	s, zone, b, ctx := synced(t, nil)
	const name = "_calc._tcp.servicediscovery.internal."
	withHealth := func(id string, port uint16, status string) registry.Instance {
		in := inst(id, "calc", port, map[string]string{route53backend.MetaContainerID: id})
		in.Health.Status = status
		return in
	}
	flush := func() {
		t.Helper()
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(ctx, []registry.Instance{withHealth("p", 1, registry.HealthPassing), withHealth("q", 2, registry.HealthPending), withHealth("r", 3, registry.HealthCritical)}); err != nil {
		t.Fatal(err)
	}
	if find(s, zone, name, "SRV", host+":p") == nil || find(s, zone, name, "SRV", host+":q") != nil || find(s, zone, name, "SRV", host+":r") != nil {
		t.Fatalf("after Sync: want only the passing instance p in the zone: %+v", s.Records(zone))
	}
	if err := b.Register(ctx, withHealth("q", 2, registry.HealthPassing)); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, withHealth("p", 1, registry.HealthCritical)); err != nil {
		t.Fatal(err)
	}
	flush()
	if find(s, zone, name, "SRV", host+":p") != nil || find(s, zone, name, "SRV", host+":q") == nil {
		t.Fatalf("after p went critical and q passing: %+v", s.Records(zone))
	}
	if err := b.Register(ctx, withHealth("s", 4, registry.HealthPending)); err != nil {
		t.Fatal(err)
	}
	flush()
	if find(s, zone, name, "SRV", host+":s") != nil {
		t.Fatal("a pending instance was written")
	}
}
