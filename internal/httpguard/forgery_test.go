package httpguard_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// call sends one request with the given headers ("Host" sets the Host
// header) and returns the status and the JSON error, if any.
func call(t *testing.T, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e apiclient.ErrorResponse
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.Error
}

const instance = `{"service":"calc","address":"10.0.0.1","port":8081}`

var jsonCT = map[string]string{"Content-Type": "application/json"}

// TestForgedWritesRefused: on a tokenless loopback server, the writes a
// web page could send (cross-site simple requests, or same-origin ones
// through DNS rebinding) are refused; a client's own writes are not.
func TestForgedWritesRefused(t *testing.T) {
	p := signposttest.StartProcess(t, 0, "--allowed-hosts", "signpost.example")
	u := p.URL
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		inError                  string
	}{
		{"foreign Host", "PUT", "/v1/instances/a", instance, map[string]string{"Content-Type": "application/json", "Host": "attacker.example:8080"}, 403, "attacker.example"},
		{"foreign Host on a read", "GET", "/v1/instances", "", map[string]string{"Host": "attacker.example"}, 403, "--allowed-hosts"},
		{"text/plain body", "PUT", "/v1/instances/a", instance, map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{"form body", "POST", "/v1/nodes/n1/heartbeat", "a=b", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"},
		{"no Content-Type", "PUT", "/v1/instances/a", instance, nil, 415, "no Content-Type"},
		{"text/plain heartbeat", "POST", "/v1/nodes/n1/heartbeat", "", map[string]string{"Content-Type": "text/plain"}, 415, "application/json"},
		{"heartbeat without Content-Type", "POST", "/v1/nodes/n1/heartbeat", "", nil, 415, "no Content-Type"},
		{"loopback IP Host", "PUT", "/v1/instances/a", instance, map[string]string{"Content-Type": "application/json", "Host": "127.0.0.1:9"}, 200, ""},
		{"localhost Host", "PUT", "/v1/instances/b", instance, map[string]string{"Content-Type": "application/json; charset=utf-8", "Host": "localhost"}, 200, ""},
		{"allowed Host", "PUT", "/v1/instances/c", instance, map[string]string{"Content-Type": "application/json", "Host": "SIGNPOST.example:80"}, 200, ""},
		{"delete without body or Content-Type", "DELETE", "/v1/instances/c", "", nil, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, msg := call(t, c.method, u+c.path, c.body, c.hdr)
			if status != c.status || !strings.Contains(msg, c.inError) {
				t.Fatalf("%s %s: got %d %q, want %d containing %q", c.method, c.path, status, msg, c.status, c.inError)
			}
		})
	}
	// Nothing refused reached the registry.
	if status, _ := call(t, "GET", u+"/v1/instances/a", "", nil); status != 200 {
		t.Fatalf("instance a written with a good Host: GET gives %d", status)
	}
	if status, _ := call(t, "GET", u+"/v1/nodes", "", nil); status != 200 {
		t.Fatalf("GET /v1/nodes: %d", status)
	}
}

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTokens: the Bearer scheme is case-insensitive; with a read token,
// reads need a token (either one) but /healthz does not; with a write
// token, any Host is accepted (a browser has no token to forge with).
func TestTokens(t *testing.T) {
	write := "write-token-0123456789abcdef"
	read := "read-token-0123456789abcdef"
	p := signposttest.StartProcess(t, 0,
		"--token-file", writeFile(t, "token", write+"\n", 0o600),
		"--read-token-file", writeFile(t, "read-token", read+"\n", 0o600))
	u := p.URL
	hdr := func(auth string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "Authorization": auth, "Host": "signpost.internal"}
	}
	cases := []struct {
		name, method, path, body, auth string
		status                         int
	}{
		{"write, lower-case scheme", "PUT", "/v1/instances/a", instance, "bearer " + write, 200},
		{"write, upper-case scheme", "PUT", "/v1/instances/b", instance, "BEARER " + write, 200},
		{"write with the read token", "PUT", "/v1/instances/c", instance, "Bearer " + read, 401},
		{"write, no token", "PUT", "/v1/instances/c", instance, "", 401},
		{"write, Basic scheme", "PUT", "/v1/instances/c", instance, "Basic " + write, 401},
		{"read, no token", "GET", "/v1/instances", "", "", 401},
		{"read, wrong token", "GET", "/v1/instances", "", "Bearer nope", 401},
		{"read, read token", "GET", "/v1/instances", "", "Bearer " + read, 200},
		{"read, write token", "GET", "/v1/services/calc", "", "bearer " + write, 200},
		{"metrics need the read token", "GET", "/metrics", "", "", 401},
		{"healthz is open", "GET", "/healthz", "", "", 200},
		{"the UI's page is open (it asks for the token)", "GET", "/ui/", "", "", 200},
		{"the UI's script is open", "GET", "/ui/app.js", "", "", 200},
		{"/ leads to the UI without a token", "GET", "/", "", "", 200},
		{"the API under the UI's prefix is not: /v1 still needs it", "GET", "/v1/nodes", "", "", 401},
		{"no other path is open", "GET", "/v1/ui/", "", "", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if status, msg := call(t, c.method, u+c.path, c.body, hdr(c.auth)); status != c.status {
				t.Fatalf("%s %s with %q: got %d %q, want %d", c.method, c.path, c.auth, status, msg, c.status)
			}
		})
	}
}
