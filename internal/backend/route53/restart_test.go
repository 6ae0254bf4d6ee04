package route53backend_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/registry"
)

// lockedBuf is a log sink safe for the backend's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRestartKeepsRecords plays an agent restart against the zone: a new
// backend (the restarted agent's) learns from Known which instances the
// zone already serves; its Sync with them passing (as the agent carries
// them) and a pending new one sends one batch holding only the DELETE of
// the container that stopped meanwhile: no record of a running container
// is deleted or written again. The log counts are those before the write.
func TestRestartKeepsRecords(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	ctx := ctxT(t)
	mk := func(id string, port uint16) registry.Instance {
		in := inst(id, "calc", port, map[string]string{route53backend.MetaSRVName: "calc", route53backend.MetaContainerID: id})
		in.Health.Status = registry.HealthPassing
		return in
	}
	a, b, gone := mk("aaa", 1001), mk("bbb", 1002), mk("ccc", 1003)
	first := newBackend(t, cfg(s))
	if err := first.Sync(ctx, []registry.Instance{a, b, gone}); err != nil {
		t.Fatal(err)
	}

	// The agent restarts: ccc stopped while it was down, ddd started, and
	// bbb's container was recreated on another port.
	logs := &lockedBuf{}
	c := cfg(s)
	c.Log = slog.New(slog.NewTextHandler(logs, nil))
	second := newBackend(t, c)
	s.ResetRequests()
	moved := mk("bbb", 2002)
	fresh := mk("ddd", 1004)
	known, err := second.Known(ctx, []registry.Instance{a, moved, fresh})
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := known["aaa"]; !ok || h.Status != registry.HealthPassing || len(known) != 1 {
		t.Fatalf("Known = %+v, want only aaa, passing (bbb moved, ddd is new)", known)
	}
	moved.Health.Status, fresh.Health.Status = registry.HealthPending, registry.HealthPending
	if err := second.Sync(ctx, []registry.Instance{a, moved, fresh}); err != nil {
		t.Fatal(err)
	}
	var changes []r53emu.Change
	for _, r := range s.Requests() {
		if r.Op == r53emu.OpChangeResourceRecordSets {
			changes = append(changes, r.Changes...)
			if len(changes) != len(r.Changes) {
				t.Fatalf("the start-up sync took more than one change batch: %+v", s.Requests())
			}
		}
	}
	var got []string
	for _, ch := range changes {
		got = append(got, ch.Action+" "+ch.SetIdentifier)
	}
	// bbb's old record goes too: its pending replacement is not served yet.
	want := "DELETE " + host + ":bbb,DELETE " + host + ":ccc"
	if strings.Join(got, ",") != want {
		t.Fatalf("the start-up batch was %q, want %q: nothing of the running, unchanged aaa", strings.Join(got, ","), want)
	}
	if find(s, zone, "calc.servicediscovery.internal.", "SRV", host+":aaa") == nil {
		t.Fatal("aaa's record is gone")
	}
	if !strings.Contains(logs.String(), "owned_before=4") || !strings.Contains(logs.String(), "deletes=2") {
		t.Errorf("sync log should count what the zone held before the write (3 SRV + the host record) and the deletes:\n%s", logs.String())
	}
	if err := second.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`msg="route53: released".* record_sets=2\n`).MatchString(logs.String()) {
		t.Errorf("release log should count the 2 record sets it deleted (aaa and the host record):\n%s", logs.String())
	}
}

// TestRepeatedPageToken makes the emulator answer a page whose next token
// is the one it was asked with: the listing must fail, naming the token,
// instead of looping.
func TestRepeatedPageToken(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	seedOthers(t, s, zone, 700)
	b := newBackend(t, cfg(s))
	ctx := ctxT(t)
	s.LoopPages(1)
	err := b.Sync(ctx, nil)
	if !errors.Is(err, route53backend.ErrRepeatedPageToken) || !strings.Contains(err.Error(), "NextRecordName=") {
		t.Fatalf("Sync over a looping listing: %v, want an error naming the repeated token", err)
	}
	if n := s.Count(r53emu.OpListResourceRecordSets); n > 5 {
		t.Fatalf("%d list requests: the loop was followed", n)
	}
	// The checker's listing is guarded too.
	s.LoopPages(1)
	if _, err := b.Zone().ListSRV(ctx); !errors.Is(err, route53backend.ErrRepeatedPageToken) {
		t.Fatalf("ListSRV over a looping listing: %v", err)
	}
	// And the listing works again once the endpoint behaves.
	s.ClearInjected()
	if err := b.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if find(s, zone, "ip-10-0-0-5.servicediscovery.internal.", "A", host) == nil {
		t.Fatal("host record missing after a good sync")
	}
}

// TestRestartWithNewTTLKeepsRecords restarts the agent with another
// --route53-ttl (a configuration change, the usual reason to restart):
// the zone's records differ from the new ones only in TTL. Known must
// still report them, so that the start-up sync UPSERTs the new TTL in one
// batch instead of deleting every record of the host until its checks
// pass again.
func TestRestartWithNewTTLKeepsRecords(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	ctx := ctxT(t)
	a := inst("aaa", "calc", 1001, map[string]string{route53backend.MetaSRVName: "calc", route53backend.MetaContainerID: "aaa"})
	a.Health.Status = registry.HealthPassing
	if err := newBackend(t, cfg(s)).Sync(ctx, []registry.Instance{a}); err != nil {
		t.Fatal(err)
	}
	c := cfg(s)
	c.TTL = 30
	second := newBackend(t, c)
	s.ResetRequests()
	known, err := second.Known(ctx, []registry.Instance{a})
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := known["aaa"]; !ok || h.Status != registry.HealthPassing {
		t.Fatalf("Known = %+v: a record that differs only in TTL is still the running instance's", known)
	}
	if err := second.Sync(ctx, []registry.Instance{a}); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests() {
		for _, ch := range r.Changes {
			if ch.Action == "DELETE" {
				t.Fatalf("the start-up sync deleted %s %s: %+v", ch.Name, ch.SetIdentifier, r.Changes)
			}
		}
	}
	rs := find(s, zone, "calc.servicediscovery.internal.", "SRV", host+":aaa")
	if rs == nil || rs.TTL != 30 {
		t.Fatalf("aaa's record after the sync: %+v, want TTL 30", rs)
	}
}

// TestRepeatedZonePageToken: finding the zone by name follows
// ListHostedZonesByName's NextDNSName/NextHostedZoneId; a page that gives
// back the token it was asked with must fail New, naming the token,
// instead of looping. (Three pages of zones of the same name, so that a
// page asked for by token is itself truncated.)
func TestRepeatedZonePageToken(t *testing.T) {
	s := startEmu(t)
	for range 2*r53emu.MaxZoneItems + 1 {
		s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	}
	s.LoopPages(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := route53backend.New(ctx, cfg(s))
	if !errors.Is(err, route53backend.ErrRepeatedPageToken) || !strings.Contains(err.Error(), "NextHostedZoneId=") {
		t.Fatalf("New over a looping zone listing: %v, want an error naming the repeated token", err)
	}
	if n := s.Count(r53emu.OpListHostedZonesByName); n > 5 {
		t.Fatalf("%d zone list requests: the loop was followed", n)
	}
	// Without the loop, the listing reaches the end and says there are too many.
	s.ClearInjected()
	if _, err := route53backend.New(ctx, cfg(s)); err == nil || !strings.Contains(err.Error(), "201 hosted zones are named") {
		t.Fatalf("New over 101 zones of one name: %v", err)
	}
}

// TestRestartAfterHalfARun: the zone holds what an earlier agent left
// half done (its instance's SRV set, but not yet its host record) among
// other hosts' record sets, some of whose owners' names begin like this
// host's. Known carries the instance; the start-up Sync is one batch
// that adds the host record and touches nothing else.
func TestRestartAfterHalfARun(t *testing.T) {
	s := startEmu(t)
	zone := s.AddZone(r53emu.Zone{Name: zoneName, Private: true})
	seedOthers(t, s, zone, 12)
	one := int64(1)
	if err := s.Seed(zone, r53emu.RecordSet{Name: "calc." + zoneName + ".", Type: "SRV", SetIdentifier: host + ":aaa",
		Weight: &one, Values: []string{"1 1 1001 " + host}}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	a := inst("aaa", "calc", 1001, map[string]string{route53backend.MetaSRVName: "calc", route53backend.MetaContainerID: "aaa"})
	b := newBackend(t, cfg(s))
	s.ResetRequests()
	known, err := b.Known(ctx, []registry.Instance{a})
	if err != nil {
		t.Fatal(err)
	}
	h, ok := known["aaa"]
	if !ok || len(known) != 1 {
		t.Fatalf("Known = %+v, want aaa only", known)
	}
	a.Health = h
	if err := b.Sync(ctx, []registry.Instance{a}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.Requests() {
		for _, ch := range r.Changes {
			got = append(got, ch.Action+" "+ch.Type+" "+ch.Name+" ["+ch.SetIdentifier+"]")
		}
	}
	want := "UPSERT A ip-10-0-0-5." + zoneName + ". [" + host + "]"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("the start-up sync sent %q, want only %q", got, want)
	}
}
