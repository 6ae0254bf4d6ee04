package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/examples/internal/service"
	"github.com/signpost-dns/signpost/examples/internal/servicetest"
)

func testServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(newHandler(config{
		Settings: service.Settings{
			ContainerID: "c0ffee", InstanceID: "host-1",
			Username: "admin", Password: "s3cret",
		},
		Logger: slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(srv.Close)
	return srv
}

// get asks srv for path, as admin:s3cret if auth.
func get(t *testing.T, srv *httptest.Server, path string, auth bool) (int, map[string]any, http.Header) {
	t.Helper()
	if !auth {
		return servicetest.Get(t, srv.Client(), srv.URL+path, "", "")
	}
	return servicetest.Get(t, srv.Client(), srv.URL+path, "admin", "s3cret")
}

func TestCalcHandler(t *testing.T) {
	srv := testServer(t)
	tests := []struct {
		formula   string
		wantCode  int
		wantValue float64
		wantErr   string
	}{
		{"(2+6)*3", 200, 24, ""},
		{"8/2", 200, 4, ""}, // an escaped slash stays in the formula
		{"1+2", 200, 3, ""},
		{"2^-1", 200, 0.5, ""},
		{"(2+", 400, 0, "at position 4: unexpected end of formula"},
		{"2**3", 400, 0, "at position 3: expected a number"},
		{"", 400, 0, "empty formula"},
		{"1/0", 400, 0, "at position 2: division by zero"},
		{strings.Repeat("1", 1025), 400, 0, "limit is 1024"},
	}
	for _, tt := range tests {
		code, body, _ := get(t, srv, "/calc/"+url.PathEscape(tt.formula), true)
		if code != tt.wantCode {
			t.Errorf("GET /calc/%s: status %d, want %d (body %v)", tt.formula, code, tt.wantCode, body)
			continue
		}
		if tt.wantCode == 200 {
			if body["value"] != tt.wantValue || body["containerid"] != "c0ffee" || body["instanceid"] != "host-1" {
				t.Errorf("GET /calc/%s = %v, want value %v with the ids", tt.formula, body, tt.wantValue)
			}
			continue
		}
		if msg, _ := body["error"].(string); !strings.Contains(msg, tt.wantErr) {
			t.Errorf("GET /calc/%s error = %q, want it to say %q", tt.formula, msg, tt.wantErr)
		}
	}
}

func TestCalcFormulaPositionInJSON(t *testing.T) {
	_, body, _ := get(t, testServer(t), "/calc/"+url.PathEscape("2**3"), true)
	if body["position"] != float64(3) {
		t.Errorf("error body %v, want position 3", body)
	}
}

func TestCalcAuth(t *testing.T) {
	srv := testServer(t)
	code, body, hdr := get(t, srv, "/calc/1%2B1", false)
	if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic ") || body["error"] == nil {
		t.Errorf("without auth: %d %v %v, want 401 with a Basic challenge and a JSON error", code, hdr, body)
	}
	// Unknown paths are behind auth too.
	if code, _, _ := get(t, srv, "/", false); code != http.StatusUnauthorized {
		t.Errorf("GET / without auth: %d, want 401", code)
	}
	if code, _, _ := servicetest.Get(t, srv.Client(), srv.URL+"/calc/1", "admin", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, _, _ := get(t, srv, "/calc/1", true); code != http.StatusOK {
		t.Errorf("with auth: %d, want 200", code)
	}
}

func TestCalcHealthNeedsNoAuth(t *testing.T) {
	code, body, _ := get(t, testServer(t), "/health", false)
	if code != http.StatusOK || body["status"] != "OK" {
		t.Errorf("GET /health: %d %v, want 200 {\"status\":\"OK\"}", code, body)
	}
}
