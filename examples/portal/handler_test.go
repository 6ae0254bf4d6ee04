package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/discovery"
	"github.com/signpost-dns/signpost/discovery/discoverytest"
	"github.com/signpost-dns/signpost/examples/internal/service"
	"github.com/signpost-dns/signpost/examples/internal/servicetest"
)

const zone = "servicediscovery.internal"

// rig is a portal wired to a test DNS server, with fake backends.
type rig struct {
	dns    *discoverytest.Server
	portal *httptest.Server
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv, err := discoverytest.Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	resolver := &discovery.Resolver{
		Server: srv.Addr(), Zone: zone, Timeout: time.Second,
		// Tests change the records: keep answers only briefly.
		MinTTL: time.Millisecond, NegativeTTL: time.Millisecond,
	}
	transport := resolver.Transport()
	transport.DisableKeepAlives = true
	portal := httptest.NewServer(newHandler(config{
		Client:  &http.Client{Transport: transport},
		Time:    backend{Service: "time", Username: "tu", Password: "tp"},
		Calc:    backend{Service: "calc", Username: "cu", Password: "cp"},
		Timeout: 3 * time.Second,
		Logger:  slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(portal.Close)
	return &rig{dns: srv, portal: portal}
}

// fakeCalc starts a calc backend that knows one formula and wants cu:cp.
func fakeCalc(t *testing.T, containerID string) uint16 {
	t.Helper()
	return fakeBackend(t, "cu", "cp", func(w http.ResponseWriter, r *http.Request) {
		if f := r.PathValue("arg"); f != "(2+6)*3" {
			service.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "at position 1: fake calc knows only (2+6)*3, got " + f})
			return
		}
		service.WriteJSON(w, http.StatusOK, map[string]any{"value": 24, "containerid": containerID, "instanceid": "host-1"})
	})
}

// fakeTime starts a time backend that wants tu:tp.
func fakeTime(t *testing.T, containerID string) uint16 {
	t.Helper()
	return fakeBackend(t, "tu", "tp", func(w http.ResponseWriter, r *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]any{
			"value": time.Now().Format(r.PathValue("arg")), "containerid": containerID, "instanceid": "host-1",
		})
	})
}

func fakeBackend(t *testing.T, user, pass string, h http.HandlerFunc) uint16 {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{kind}/{arg...}", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			service.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "authentication required"})
			return
		}
		h(w, r)
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return uint16(hs.Listener.Addr().(*net.TCPAddr).Port)
}

func deadPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func (rg *rig) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	code, body, _ := servicetest.Get(t, http.DefaultClient, rg.portal.URL+path, "", "")
	return code, body
}

func TestPortalProxies(t *testing.T) {
	rg := newRig(t)
	rg.dns.Add(
		discoverytest.Service("_calc._tcp", "calc-1", fakeCalc(t, "calc-c1"), 0, 1, 30),
		discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-c1"), 0, 1, 30),
	)
	code, body := rg.get(t, "/calc/"+url.PathEscape("(2+6)*3"))
	if code != 200 || body["value"] != float64(24) || body["containerid"] != "calc-c1" {
		t.Errorf("GET /calc/(2+6)*3 = %d %v, want 24 from calc-c1", code, body)
	}
	code, body = rg.get(t, "/time/"+url.PathEscape("2006/01/02"))
	if code != 200 || body["value"] != time.Now().Format("2006/01/02") || body["containerid"] != "time-c1" {
		t.Errorf("GET /time/2006/01/02 = %d %v, want today from time-c1", code, body)
	}
	// A backend's own 400 is passed on as it is.
	code, body = rg.get(t, "/calc/"+url.PathEscape("2**3"))
	if code != 400 || !strings.Contains(body["error"].(string), "fake calc") {
		t.Errorf("GET /calc/2**3 = %d %v, want the backend's 400", code, body)
	}
}

func TestPortalServiceErrors(t *testing.T) {
	rg := newRig(t)
	rg.dns.Add(discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-c1"), 0, 1, 30))

	// No calc registered.
	code, body := rg.get(t, "/calc/1")
	if code != 503 || body["service"] != "calc" || !strings.Contains(body["error"].(string), `no instance of service "calc"`) {
		t.Errorf("no calc: %d %v, want 503 naming calc", code, body)
	}
	// The other service still works.
	if code, _ := rg.get(t, "/time/15:04"); code != 200 {
		t.Errorf("time while calc is missing: %d, want 200", code)
	}
	// Registered but down.
	rg.dns.Add(
		discoverytest.Service("_calc._tcp", "calc-1", deadPort(t), 0, 1, 30),
		discoverytest.Service("_calc._tcp", "calc-2", deadPort(t), 0, 1, 30),
	)
	time.Sleep(10 * time.Millisecond) // past the negative TTL
	code, body = rg.get(t, "/calc/1")
	if code != 503 || !strings.Contains(body["error"].(string), `every instance of service "calc" is down`) {
		t.Errorf("calc down: %d %v, want 503 saying it is down", code, body)
	}
	// One comes up: answers come back without a restart.
	rg.dns.Reset()
	rg.dns.Add(discoverytest.Service("_calc._tcp", "calc-3", fakeCalc(t, "calc-c3"), 0, 1, 30))
	code, body = rg.get(t, "/calc/"+url.PathEscape("(2+6)*3"))
	if code != 200 || body["containerid"] != "calc-c3" {
		t.Errorf("after calc came back: %d %v, want 200 from calc-c3", code, body)
	}
}

func TestPortalFailsOverToLiveInstance(t *testing.T) {
	rg := newRig(t)
	rg.dns.Add(
		discoverytest.Service("_calc._tcp", "calc-dead", deadPort(t), 0, 100, 30),
		discoverytest.Service("_calc._tcp", "calc-live", fakeCalc(t, "live"), 0, 1, 30),
	)
	for range 10 {
		code, body := rg.get(t, "/calc/"+url.PathEscape("(2+6)*3"))
		if code != 200 || body["containerid"] != "live" {
			t.Fatalf("with one calc down: %d %v, want 200 from the live one", code, body)
		}
	}
}

func TestPortalWrongCredentials(t *testing.T) {
	rg := newRig(t)
	port := fakeBackend(t, "someone", "else", func(http.ResponseWriter, *http.Request) {})
	rg.dns.Add(discoverytest.Service("_calc._tcp", "calc-1", port, 0, 1, 30))
	code, body := rg.get(t, "/calc/1")
	if code != http.StatusBadGateway || !strings.Contains(body["error"].(string), "rejected the portal's credentials") {
		t.Errorf("rejected credentials: %d %v, want 502 saying so", code, body)
	}
}

func TestPortalDNSDown(t *testing.T) {
	rg := newRig(t)
	rg.dns.Close()
	code, body := rg.get(t, "/time/15:04")
	if code != 503 || !strings.Contains(body["error"].(string), `cannot reach the DNS server to find service "time"`) {
		t.Errorf("DNS down: %d %v, want 503 saying so", code, body)
	}
}

func TestPortalPageAndHealth(t *testing.T) {
	rg := newRig(t)
	resp, err := http.Get(rg.portal.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, id := range []string{`id="time-format"`, `id="calc-formula"`, `id="calc-result"`, "encodeURIComponent"} {
		if !strings.Contains(string(page), id) {
			t.Errorf("the page lacks %s", id)
		}
	}
	if code, body := rg.get(t, "/health"); code != 200 || body["status"] != "OK" {
		t.Errorf("GET /health: %d %v", code, body)
	}
}
