package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/api"
	"github.com/signpost-dns/signpost/internal/httpguard"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
)

// TestServerNamesABadHTTPAddress: an --http value that is no address is
// reported as such, not as a missing token.
func TestServerNamesABadHTTPAddress(t *testing.T) {
	_, err := server.New(server.Config{HTTPAddr: "nonsense", DNSAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `HTTP address "nonsense"`) || strings.Contains(err.Error(), "token") {
		t.Fatalf("server.New with HTTPAddr nonsense: %v, want an error naming the address", err)
	}
}

// TestNodeNamesCheckedAtTheDoor: a node's name is checked when its set is
// written, even an empty set: no control characters, at most
// registry.MaxNodeLen bytes; nothing is stored for a refused one. (A name
// long enough to pass the 16 KiB header limit gets 431 before that.)
func TestNodeNamesCheckedAtTheDoor(t *testing.T) {
	ts := startServer(t, nil)
	for _, node := range []string{"bad%1B%5B31mnode", "evil%E2%80%AEnode", strings.Repeat("x", registry.MaxNodeLen+1), strings.Repeat("y", 12_000)} {
		code, e := do(t, "PUT", ts.URL()+"/v1/nodes/"+node, "", `{"instances":[]}`)
		if code != 400 || e.Field != "node" || len(e.Error) > 300 {
			t.Errorf("PUT /v1/nodes/%.20s... (%d bytes): %d %.400q (field %q), want 400 naming the node, briefly", node, len(node), code, e.Error, e.Field)
		}
	}
	// A name too long for the request line is refused before it is read.
	if code, _ := do(t, "PUT", ts.URL()+"/v1/nodes/"+strings.Repeat("z", 100_000), "", `{"instances":[]}`); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("PUT /v1/nodes/zzz... (100000 bytes): %d, want 431", code)
	}
	leases, err := ts.client.Leases(context.Background())
	if err != nil || len(leases) != 0 {
		t.Errorf("nodes after the refused writes: %v %v, want none", leases, err)
	}
	if code, e := do(t, "PUT", ts.URL()+"/v1/nodes/"+strings.Repeat("x", registry.MaxNodeLen), "", `{"instances":[]}`); code != 200 {
		t.Errorf("a node name of %d bytes: %d %+v, want 200", registry.MaxNodeLen, code, e)
	}
}

// TestContainerNamesCheckedAtTheDoor: a container name that would look
// like another in a log, the CLI or the UI (a bidirectional override, a
// zero-width space) is refused.
func TestContainerNamesCheckedAtTheDoor(t *testing.T) {
	ts := startServer(t, nil)
	for _, c := range []string{`web\u202egnp`, `web\u200b1`, `web\u001b[31m`} { // JSON escapes
		code, e := do(t, "PUT", ts.URL()+"/v1/instances/web-1", "", `{"service":"web","address":"10.0.0.1","port":80,"container":"`+c+`"}`)
		if code != 400 || e.Field != "container" {
			t.Errorf("container %s: %d %+v, want 400 naming the container", c, code, e)
		}
	}
	if code, e := do(t, "PUT", ts.URL()+"/v1/instances/web-1", "", `{"service":"web","address":"10.0.0.1","port":80,"container":"web_1.blue-2"}`); code != 200 {
		t.Errorf("a Docker container name: %d %+v, want 200", code, e)
	}
}

// TestBodyLimitsWithinTheAPIsCap: a body limit over what the API's
// decoder reads (api.MaxBodyBytes) is refused at start, naming the flag,
// rather than taken and then cut at 8 MiB with a 413.
func TestBodyLimitsWithinTheAPIsCap(t *testing.T) {
	for _, tc := range []struct {
		flag string
		lim  httpguard.Limits
	}{
		{"--max-node-set-body", httpguard.Limits{NodeSetBody: api.MaxBodyBytes + 1}},
		{"--max-instance-body", httpguard.Limits{InstanceBody: api.MaxBodyBytes + 1}},
	} {
		_, err := server.New(server.Config{HTTPAddr: "127.0.0.1:0", DNSAddr: "127.0.0.1:0", DataDir: t.TempDir(), HTTPLimits: tc.lim})
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s over %d bytes: %v, want an error naming the flag", tc.flag, api.MaxBodyBytes, err)
		}
	}
}
