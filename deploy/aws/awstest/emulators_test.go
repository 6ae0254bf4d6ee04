package awstest

import (
	"regexp"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
)

// TestEmulatorsAgainstAWS sends the same Route 53 requests, with the aws
// CLI, to moto and to the in-repo emulator (r53emu), where the two were
// found to disagree. r53emu must answer as AWS does (the error codes of
// the Route 53 API reference: a change batch that cannot be applied is
// InvalidChangeBatch, a malformed request InvalidInput); moto's answers
// are logged beside them, for deploy/aws/README.md's table.
func TestEmulatorsAgainstAWS(t *testing.T) {
	moto := cli{t: t, endpoint: startMoto(t)}
	emu, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	local := cli{t: t, endpoint: emu.URL()}

	const zone = "probe.internal"
	motoZone := strings.Trim(strings.TrimSpace(moto.run("route53", "create-hosted-zone", "--name", zone, "--caller-reference", "awstest",
		"--hosted-zone-config", "PrivateZone=true", "--vpc", "VPCRegion=us-east-1,VPCId=vpc-12345678", "--query", "HostedZone.Id")), `"`)
	zones := map[string]string{"moto": motoZone, "r53emu": emu.AddZone(r53emu.Zone{Name: zone, Private: true})}
	clis := map[string]cli{"moto": moto, "r53emu": local}

	const existing = `{"Name":"x.probe.internal","Type":"A","SetIdentifier":"h1","Weight":1,"TTL":0,"ResourceRecords":[{"Value":"10.0.0.1"}]}`
	for name, c := range clis {
		c.run("route53", "change-resource-record-sets", "--hosted-zone-id", zones[name], "--change-batch",
			`{"Changes":[{"Action":"CREATE","ResourceRecordSet":`+existing+`}]}`)
	}
	code := regexp.MustCompile(`\(([A-Za-z]+)\) when calling`)
	cases := []struct {
		name, change, aws string // aws: the code AWS answers, "" for success
	}{
		{"DELETE of a missing set", `{"Action":"DELETE","ResourceRecordSet":{"Name":"y.probe.internal","Type":"A","TTL":0,"ResourceRecords":[{"Value":"10.0.0.9"}]}}`, "InvalidChangeBatch"},
		{"DELETE whose values differ", `{"Action":"DELETE","ResourceRecordSet":{"Name":"x.probe.internal","Type":"A","SetIdentifier":"h1","Weight":1,"TTL":0,"ResourceRecords":[{"Value":"10.0.0.2"}]}}`, "InvalidChangeBatch"},
		{"malformed SRV value", `{"Action":"UPSERT","ResourceRecordSet":{"Name":"s.probe.internal","Type":"SRV","TTL":0,"ResourceRecords":[{"Value":"not an srv"}]}}`, "InvalidChangeBatch"},
		{"Weight without SetIdentifier", `{"Action":"UPSERT","ResourceRecordSet":{"Name":"w.probe.internal","Type":"A","Weight":1,"TTL":0,"ResourceRecords":[{"Value":"10.0.0.3"}]}}`, "InvalidInput"},
		{"CREATE of an existing set", `{"Action":"CREATE","ResourceRecordSet":` + existing + `}`, "InvalidChangeBatch"},
		{"a name outside the zone", `{"Action":"UPSERT","ResourceRecordSet":{"Name":"x.other.internal","Type":"A","TTL":0,"ResourceRecords":[{"Value":"10.0.0.3"}]}}`, "InvalidChangeBatch"},
		{"DELETE exactly as created, TTL 0", `{"Action":"DELETE","ResourceRecordSet":` + existing + `}`, ""},
	}
	for _, tc := range cases {
		got := map[string]string{}
		for _, name := range []string{"r53emu", "moto"} {
			emu.ResetRequests()
			_, err := clis[name].try("route53", "change-resource-record-sets", "--hosted-zone-id", zones[name],
				"--change-batch", `{"Changes":[`+tc.change+`]}`)
			m := code.FindStringSubmatch(errString(err))
			switch {
			case name == "r53emu":
				// The emulator's own log: the CLI (botocore) cannot name
				// the code of AWS's <InvalidChangeBatch> error body, which
				// r53emu sends as AWS does, and prints "()".
				reqs := emu.Requests()
				if len(reqs) != 1 {
					t.Fatalf("%s: r53emu saw %d requests, want 1 (%v)", tc.name, len(reqs), err)
				}
				got[name] = reqs[0].Code
				if got[name] == "" {
					got[name] = "accepted"
				}
			case err == nil:
				got[name] = "accepted"
			case m != nil:
				got[name] = m[1]
			default:
				got[name] = errString(err)
			}
		}
		want := tc.aws
		if want == "" {
			want = "accepted"
		}
		if got["r53emu"] != want {
			t.Errorf("%s: r53emu answered %s, AWS answers %s", tc.name, got["r53emu"], want)
		}
		agree := "agrees with AWS"
		if got["moto"] != want {
			agree = "differs from AWS"
		}
		t.Logf("%-30s AWS %-18s r53emu %-18s moto %-18s (moto %s)", tc.name, want, got["r53emu"], got["moto"], agree)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
