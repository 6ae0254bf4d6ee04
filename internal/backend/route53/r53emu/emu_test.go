package r53emu_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
	"github.com/aws/smithy-go"

	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
)

func start(t *testing.T) (*r53emu.Server, *route53.Client, string) {
	t.Helper()
	s, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	id := s.AddZone(r53emu.Zone{Name: "example.internal", Private: true})
	c := route53.New(route53.Options{
		BaseEndpoint: aws.String(s.URL()),
		Region:       "us-east-1",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "secret", Source: "test"}, nil
		}),
		Retryer: aws.NopRetryer{},
	})
	return s, c, id
}

func srv(name, id, value string, ttl int64) *types.ResourceRecordSet {
	return &types.ResourceRecordSet{
		Name: aws.String(name), Type: types.RRTypeSrv, SetIdentifier: aws.String(id), Weight: aws.Int64(1),
		TTL: aws.Int64(ttl), ResourceRecords: []types.ResourceRecord{{Value: aws.String(value)}},
	}
}

func change(ctx context.Context, c *route53.Client, zone string, changes ...types.Change) error {
	_, err := c.ChangeResourceRecordSets(ctx, &route53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(zone), ChangeBatch: &types.ChangeBatch{Changes: changes}})
	return err
}

func messages(t *testing.T, err error) string {
	t.Helper()
	var icb *types.InvalidChangeBatch
	if !errors.As(err, &icb) {
		t.Fatalf("want InvalidChangeBatch, got %v", err)
	}
	return strings.Join(icb.Messages, "; ")
}

func TestStrictChanges(t *testing.T) {
	s, c, zone := start(t)
	ctx := context.Background()
	a := srv("calc.example.internal", "h:1", "1 1 80 h", 0)
	if err := change(ctx, c, zone, types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: a}); err != nil {
		t.Fatal(err)
	}
	// CREATE of an existing set fails, and the whole batch with it.
	b := srv("calc.example.internal", "h:2", "1 1 81 h", 0)
	err := change(ctx, c, zone,
		types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: b},
		types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: a})
	if m := messages(t, err); !strings.Contains(m, "already exists") || !strings.Contains(m, "set-identifier='h:1'") {
		t.Fatalf("messages %q", m)
	}
	if n := len(s.Records(zone)); n != 3 { // SOA, NS, calc h:1
		t.Fatalf("batch partly applied: %d record sets", n)
	}
	// DELETE must match exactly.
	wrongTTL := srv("calc.example.internal", "h:1", "1 1 80 h", 60)
	err = change(ctx, c, zone, types.Change{Action: types.ChangeActionDelete, ResourceRecordSet: wrongTTL})
	if m := messages(t, err); !strings.Contains(m, "do not match") {
		t.Fatalf("messages %q", m)
	}
	missing := srv("calc.example.internal", "h:9", "1 1 80 h", 0)
	err = change(ctx, c, zone, types.Change{Action: types.ChangeActionDelete, ResourceRecordSet: missing})
	if m := messages(t, err); !strings.Contains(m, "not found") {
		t.Fatalf("messages %q", m)
	}
	// Weighted beside non-weighted.
	plain := &types.ResourceRecordSet{Name: aws.String("calc.example.internal"), Type: types.RRTypeSrv, TTL: aws.Int64(0),
		ResourceRecords: []types.ResourceRecord{{Value: aws.String("1 1 80 h")}}}
	err = change(ctx, c, zone, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: plain})
	if m := messages(t, err); !strings.Contains(m, "weighted") {
		t.Fatalf("messages %q", m)
	}
	// Outside the zone; malformed SRV.
	err = change(ctx, c, zone, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: srv("calc.other.internal", "h:1", "1 1 80 h", 0)})
	if m := messages(t, err); !strings.Contains(m, "not permitted in zone") {
		t.Fatalf("messages %q", m)
	}
	err = change(ctx, c, zone, types.Change{Action: types.ChangeActionUpsert, ResourceRecordSet: srv("calc.example.internal", "h:3", "1 1 h", 0)})
	if m := messages(t, err); !strings.Contains(m, "SRVRRDATA") {
		t.Fatalf("messages %q", m)
	}
	// DELETE then CREATE of the same set in one batch is an update.
	a2 := srv("calc.example.internal", "h:1", "1 1 8080 h", 0)
	if err := change(ctx, c, zone,
		types.Change{Action: types.ChangeActionDelete, ResourceRecordSet: a},
		types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: a2}); err != nil {
		t.Fatal(err)
	}
}

func TestStrictShape(t *testing.T) {
	_, c, zone := start(t)
	ctx := context.Background()
	noWeight := &types.ResourceRecordSet{Name: aws.String("x.example.internal"), Type: types.RRTypeA, SetIdentifier: aws.String("h"),
		TTL: aws.Int64(0), ResourceRecords: []types.ResourceRecord{{Value: aws.String("10.0.0.1")}}}
	noID := &types.ResourceRecordSet{Name: aws.String("x.example.internal"), Type: types.RRTypeA, Weight: aws.Int64(1),
		TTL: aws.Int64(0), ResourceRecords: []types.ResourceRecord{{Value: aws.String("10.0.0.1")}}}
	alias := &types.ResourceRecordSet{Name: aws.String("x.example.internal"), Type: types.RRTypeA,
		AliasTarget: &types.AliasTarget{DNSName: aws.String("y.example.internal"), HostedZoneId: aws.String(zone)}}
	bigWeight := srv("x.example.internal", "h:1", "1 1 80 h", 0)
	bigWeight.Weight = aws.Int64(256)
	for name, rs := range map[string]*types.ResourceRecordSet{"set id without weight": noWeight, "weight without set id": noID, "alias": alias, "weight 256": bigWeight} {
		err := change(ctx, c, zone, types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: rs})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != r53emu.CodeInvalidInput {
			t.Errorf("%s: want InvalidInput, got %v", name, err)
		}
	}
}

func TestLimits(t *testing.T) {
	s, c, zone := start(t)
	ctx := context.Background()
	// 500 UPSERTs count as 1,000 records: accepted. 501 count as 1,002.
	mk := func(n int, action types.ChangeAction) []types.Change {
		var out []types.Change
		for i := range n {
			out = append(out, types.Change{Action: action, ResourceRecordSet: srv(fmt.Sprintf("s%d.example.internal", i), "h:1", "1 1 80 h", 0)})
		}
		return out
	}
	if err := change(ctx, c, zone, mk(500, types.ChangeActionUpsert)...); err != nil {
		t.Fatalf("500 upserts: %v", err)
	}
	if m := messages(t, change(ctx, c, zone, mk(501, types.ChangeActionUpsert)...)); !strings.Contains(m, "1000") {
		t.Fatalf("messages %q", m)
	}
	if m := messages(t, change(ctx, c, zone, mk(1001, types.ChangeActionCreate)...)); !strings.Contains(m, "1000") {
		t.Fatalf("messages %q", m)
	}
	// 32,000 characters: 110 values of 319 characters.
	long := strings.Repeat("a", 300) + ".example.internal"
	var chs []types.Change
	for i := range 110 {
		chs = append(chs, types.Change{Action: types.ChangeActionCreate, ResourceRecordSet: &types.ResourceRecordSet{
			Name: aws.String(fmt.Sprintf("t%d.example.internal", i)), Type: types.RRTypeTxt, TTL: aws.Int64(0),
			ResourceRecords: []types.ResourceRecord{{Value: aws.String(`"` + long + `"`)}}}})
	}
	if m := messages(t, change(ctx, c, zone, chs...)); !strings.Contains(m, "32000") {
		t.Fatalf("messages %q", m)
	}
	if got := s.Count(r53emu.OpChangeResourceRecordSets); got != 4 {
		t.Fatalf("logged %d change requests, want 4", got)
	}
}

func TestInjectedAndPaging(t *testing.T) {
	s, c, zone := start(t)
	ctx := context.Background()
	s.FailNext(r53emu.OpGetHostedZone, r53emu.CodeThrottling, 1)
	s.FailNext("", r53emu.CodeServiceUnavailable, 1)
	_, err := c.GetHostedZone(ctx, &route53.GetHostedZoneInput{Id: aws.String(zone)})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "Throttling" {
		t.Fatalf("want Throttling, got %v", err)
	}
	_, err = c.ListHostedZones(ctx, &route53.ListHostedZonesInput{})
	if !errors.As(err, &ae) || ae.ErrorCode() != r53emu.CodeServiceUnavailable {
		t.Fatalf("want ServiceUnavailable, got %v", err)
	}
	if _, err := c.GetHostedZone(ctx, &route53.GetHostedZoneInput{Id: aws.String(zone)}); err != nil {
		t.Fatal(err)
	}
	var seed []r53emu.RecordSet
	for i := range 700 {
		seed = append(seed, r53emu.RecordSet{Name: fmt.Sprintf("s%03d.example.internal", i), Type: "SRV", SetIdentifier: "a", Weight: aws.Int64(1), Values: []string{"1 1 80 h"}})
		seed = append(seed, r53emu.RecordSet{Name: fmt.Sprintf("s%03d.example.internal", i), Type: "SRV", SetIdentifier: "b", Weight: aws.Int64(1), Values: []string{"1 1 80 h"}})
	}
	if err := s.Seed(zone, seed...); err != nil {
		t.Fatal(err)
	}
	p := route53.NewListResourceRecordSetsPaginator(c, &route53.ListResourceRecordSetsInput{HostedZoneId: aws.String(zone), MaxItems: aws.Int32(1000)})
	n, pages := 0, 0
	seen := map[string]bool{}
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(out.ResourceRecordSets) > r53emu.MaxListItems {
			t.Fatalf("page of %d", len(out.ResourceRecordSets))
		}
		for _, rs := range out.ResourceRecordSets {
			k := aws.ToString(rs.Name) + string(rs.Type) + aws.ToString(rs.SetIdentifier)
			if seen[k] {
				t.Fatalf("%s listed twice", k)
			}
			seen[k] = true
			n++
		}
	}
	if n != 1402 || pages != 5 {
		t.Fatalf("listed %d record sets in %d pages, want 1402 in 5", n, pages)
	}
}

func TestUnsignedRefused(t *testing.T) {
	s, _, zone := start(t)
	resp, err := http.Get(s.URL() + "/2013-04-01/hostedzone/" + zone)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned request: status %d", resp.StatusCode)
	}
}
