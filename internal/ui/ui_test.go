package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/ui"
)

// newMux is the server's arrangement: an API behind "/" and the UI
// registered beside it.
func newMux(t *testing.T, cfg ui.Config) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"api"}`)
	})
	if err := ui.Register(mux, cfg); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestServesThePageWithItsHeaders(t *testing.T) {
	ts := newMux(t, ui.Config{Zone: "servicediscovery.internal.", DNSAddr: "127.0.0.1:8053", TTL: 5 * time.Second})
	cases := []struct {
		method, path string
		status       int
		ctype        string // prefix
		body         string // substring
		csp          bool
	}{
		{"GET", "/ui/", 200, "text/html", `<script src="app.js"`, true},
		{"HEAD", "/ui/", 200, "text/html", "", true},
		{"GET", "/ui/index.html", 200, "text/html", "signpost", true},
		{"GET", "/ui/app.js", 200, "text/javascript", `"use strict"`, true},
		{"GET", "/ui/style.css", 200, "text/css", "prefers-color-scheme: dark", true},
		{"GET", "/ui/favicon.svg", 200, "image/svg+xml", "<svg", true},
		{"GET", "/ui/config.json", 200, "application/json", `"dns_port":8053`, true},
		{"GET", "/ui/nope.js", 404, "text/plain", "no such page", true},
		{"GET", "/ui/../../etc/passwd", 307, "", "", false}, // the mux redirects to the clean path, outside the UI
		{"POST", "/ui/", 405, "text/plain", "read-only", true},
		{"DELETE", "/ui/app.js", 405, "text/plain", "read-only", true},
		{"GET", "/", 302, "", "", true},
		{"GET", "/ui", 307, "", "", false}, // the mux adds the slash
		{"GET", "/v1/services", 404, "application/json", `"api"`, false},
		{"POST", "/", 404, "application/json", `"api"`, false},
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.method, ts.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := c.method + " " + c.path
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d (%s)", name, resp.StatusCode, c.status, body)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, c.ctype) {
			t.Errorf("%s: Content-Type %q, want %q", name, ct, c.ctype)
		}
		if !strings.Contains(string(body), c.body) {
			t.Errorf("%s: body lacks %q:\n%.300s", name, c.body, body)
		}
		if got := resp.Header.Get("Content-Security-Policy"); c.csp && got != ui.ContentSecurityPolicy {
			t.Errorf("%s: Content-Security-Policy %q, want %q", name, got, ui.ContentSecurityPolicy)
		}
		if c.csp && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no X-Content-Type-Options: nosniff", name)
		}
		if c.status == 302 && resp.Header.Get("Location") != ui.Prefix {
			t.Errorf("%s: Location %q, want %q", name, resp.Header.Get("Location"), ui.Prefix)
		}
	}
}

func TestPolicyForbidsWhatTheUIMustNotDo(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(ui.ContentSecurityPolicy, want) {
			t.Errorf("the policy %q lacks %q", ui.ContentSecurityPolicy, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:", "data:"} {
		if strings.Contains(ui.ContentSecurityPolicy, bad) {
			t.Errorf("the policy %q allows %q", ui.ContentSecurityPolicy, bad)
		}
	}
}

func TestRevalidatesWithETag(t *testing.T) {
	ts := newMux(t, ui.Config{Zone: "z.internal", DNSAddr: "127.0.0.1:8053"})
	resp, err := http.Get(ts.URL + "/ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("app.js: ETag %q, Cache-Control %q: want an ETag and no-cache", etag, resp.Header.Get("Cache-Control"))
	}
	req, _ := http.NewRequest("GET", ts.URL+"/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("app.js with If-None-Match %s: status %d, want 304", etag, resp.StatusCode)
	}
}

func TestConfigSaysWhereDNSIs(t *testing.T) {
	cases := []struct {
		dns      string
		wantHost string
		wantPort int
	}{
		{"127.0.0.1:8053", "127.0.0.1", 8053},
		{"[::1]:53", "::1", 53},
		{"0.0.0.0:8053", "", 8053}, // every address: the page uses its own host
		{"[::]:5353", "", 5353},
		{"dns.example:53", "dns.example", 53},
	}
	for _, c := range cases {
		ts := newMux(t, ui.Config{Zone: "servicediscovery.internal.", DNSAddr: c.dns, TTL: 5 * time.Second})
		resp, err := http.Get(ts.URL + "/ui/config.json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Zone    string `json:"zone"`
			DNSHost string `json:"dns_host"`
			DNSPort int    `json:"dns_port"`
			TTL     int    `json:"ttl_seconds"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: config.json: %v", c.dns, err)
		}
		if got.Zone != "servicediscovery.internal" || got.DNSHost != c.wantHost || got.DNSPort != c.wantPort || got.TTL != 5 {
			t.Errorf("DNS on %s: config %+v, want zone servicediscovery.internal, host %q, port %d, ttl 5", c.dns, got, c.wantHost, c.wantPort)
		}
	}
}

func TestRefusesABadDNSAddress(t *testing.T) {
	for _, addr := range []string{"", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:dns", "127.0.0.1:70000"} {
		err := ui.Register(http.NewServeMux(), ui.Config{Zone: "z.internal", DNSAddr: addr})
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("DNS address %q: error %v, want one naming it", addr, err)
		}
	}
}
