package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/examples/internal/service"
	"github.com/signpost-dns/signpost/examples/internal/servicetest"
)

var fixedNow = time.Date(2024, time.March, 5, 10, 4, 9, 0, time.UTC)

func testServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(newHandler(config{
		Settings: service.Settings{
			ContainerID: "c0ffee", InstanceID: "host-1",
			Username: "admin", Password: "s3cret",
		},
		Now:    func() time.Time { return fixedNow },
		Logger: slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path, user, pass string) (int, map[string]any, http.Header) {
	t.Helper()
	return servicetest.Get(t, srv.Client(), srv.URL+path, user, pass)
}

func TestTimeFormats(t *testing.T) {
	srv := testServer(t)
	tests := []struct {
		layout   string
		wantCode int
		want     string
	}{
		{"15:04 Jan 2", 200, "10:04 Mar 5"},
		{"2 Jan", 200, "5 Mar"},
		{"Jan -> 15", 200, "Mar -> 10"},
		{"2006-01-02T15:04:05Z07:00", 200, "2024-03-05T10:04:09Z"},
		{"01/02/2006", 200, "03/05/2024"}, // slashes stay in the layout
		{"", 400, "empty format"},
		{strings.Repeat("x", 257), 400, "limit is 256"},
	}
	for _, tt := range tests {
		code, body, _ := get(t, srv, "/time/"+url.PathEscape(tt.layout), "admin", "s3cret")
		if code != tt.wantCode {
			t.Errorf("GET /time/%s: %d, want %d (%v)", tt.layout, code, tt.wantCode, body)
			continue
		}
		if code != 200 {
			if msg, _ := body["error"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("GET /time/%s error %q, want it to say %q", tt.layout, msg, tt.want)
			}
			continue
		}
		if body["value"] != tt.want || body["containerid"] != "c0ffee" || body["instanceid"] != "host-1" {
			t.Errorf("GET /time/%s = %v, want value %q with the ids", tt.layout, body, tt.want)
		}
	}
}

func TestTimeAuth(t *testing.T) {
	srv := testServer(t)
	tests := []struct {
		name, user, pass string
		wantCode         int
	}{
		{"no credentials", "", "", 401},
		{"wrong password", "admin", "nope", 401},
		{"wrong user", "root", "s3cret", 401},
		{"right credentials", "admin", "s3cret", 200},
	}
	for _, tt := range tests {
		code, _, hdr := get(t, srv, "/time/15:04", tt.user, tt.pass)
		if code != tt.wantCode {
			t.Errorf("%s: %d, want %d", tt.name, code, tt.wantCode)
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), `Basic realm="time"`) {
			t.Errorf("%s: no Basic challenge in %v", tt.name, hdr)
		}
	}
}

func TestTimeHealthNeedsNoAuth(t *testing.T) {
	code, body, _ := get(t, testServer(t), "/health", "", "")
	if code != http.StatusOK || body["status"] != "OK" {
		t.Errorf("GET /health: %d %v, want 200 {\"status\":\"OK\"}", code, body)
	}
}
