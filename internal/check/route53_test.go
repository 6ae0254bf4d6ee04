package check_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/check"
)

// TestSweepRoute53 runs the sweep against the Route 53 emulator (a strict
// stand-in for AWS): healthy targets stay, a failing one goes after three
// sweeps, one whose target does not resolve goes at once, one whose
// resolver timed out is not removed for that alone.
func TestSweepRoute53(t *testing.T) {
	emu, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	const zoneName = "servicediscovery.internal"
	zoneID := emu.AddZone(r53emu.Zone{Name: zoneName, Private: true})

	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer sick.Close()
	_, hp := hostPort(t, healthy.URL)
	_, sp := hostPort(t, sick.URL)

	one := int64(1)
	srv := func(setID string, port uint16, target string) r53emu.RecordSet {
		return r53emu.RecordSet{Name: "_calc._tcp." + zoneName + ".", Type: "SRV", SetIdentifier: setID, Weight: &one, TTL: 0,
			Values: []string{fmt.Sprintf("1 1 %d %s", port, target)}}
	}
	if err := emu.Seed(zoneID,
		srv("host-a:c1", hp, "host-a."+zoneName),
		srv("host-a:c2", sp, "host-a."+zoneName),
		srv("host-gone:c3", hp, "host-gone."+zoneName),
		srv("host-flaky:c4", hp, "host-flaky."+zoneName),
	); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	zone, err := route53backend.OpenZone(ctx, route53backend.Config{
		Zone: zoneName, Endpoint: emu.URL(), Region: "us-east-1", Rate: 1000,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "secret"}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(_ context.Context, host string) (netip.Addr, error) {
		switch host {
		case "host-a." + zoneName:
			return netip.MustParseAddr("127.0.0.1"), nil
		case "host-flaky." + zoneName:
			return netip.Addr{}, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
		}
		return netip.Addr{}, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	sw, err := check.New(&check.Route53Source{Zone: zone, Resolve: resolve}, check.Config{Failures: 3, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	left := func() map[string]bool {
		out := map[string]bool{}
		for _, r := range emu.Records(zoneID) {
			if r.Type == "SRV" {
				out[r.SetIdentifier] = true
			}
		}
		return out
	}
	res, err := sw.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unresolved != 1 || left()["host-gone:c3"] {
		t.Fatalf("first sweep: %+v, records %v: the unresolvable target should go at once", res, left())
	}
	for i := 0; i < 2; i++ {
		if _, err := sw.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := left()
	if got["host-a:c2"] || got["host-flaky:c4"] || !got["host-a:c1"] {
		t.Fatalf("after three sweeps: %v; want only host-a:c1 (the 503 one and the one that never resolved gone after 3)", got)
	}
}
