package service_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/examples/internal/service"
	"github.com/signpost-dns/signpost/examples/internal/servicetest"
)

func TestProtect(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
	})
	srv := httptest.NewServer(service.Protect("demo", "u", "p", api))
	defer srv.Close()
	get := func(path, user, pass string) (int, map[string]any, http.Header) {
		return servicetest.Get(t, srv.Client(), srv.URL+path, user, pass)
	}
	if code, body, _ := get("/health", "", ""); code != 200 || body["status"] != "OK" {
		t.Errorf("GET /health without auth: %d %v", code, body)
	}
	for _, c := range []struct{ user, pass string }{{"", ""}, {"u", "x"}, {"x", "p"}} {
		code, body, hdr := get("/anything", c.user, c.pass)
		if code != 401 || body["error"] != "authentication required" ||
			hdr.Get("WWW-Authenticate") != `Basic realm="demo", charset="UTF-8"` ||
			hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s:%s: %d %v %v, want 401 with a challenge", c.user, c.pass, code, body, hdr)
		}
	}
	if code, body, _ := get("/anything", "u", "p"); code != 200 || body["ok"] != "yes" {
		t.Errorf("with auth: %d %v", code, body)
	}
}

func TestCredentials(t *testing.T) {
	t.Setenv("DEMO_USERNAME", "u")
	t.Setenv("DEMO_PASSWORD", "")
	_, _, err := service.Credentials("DEMO")
	if err == nil || err.Error() != "set DEMO_USERNAME and DEMO_PASSWORD: every endpoint but /health needs basic auth" {
		t.Errorf("without a password: %v", err)
	}
	t.Setenv("DEMO_PASSWORD", "p")
	if u, p, err := service.Credentials("DEMO"); u != "u" || p != "p" || err != nil {
		t.Errorf("Credentials = %q, %q, %v", u, p, err)
	}
}

func TestEnvOrAndIDs(t *testing.T) {
	t.Setenv("SERVICE_TEST_X", "")
	if got := service.EnvOr("SERVICE_TEST_X", "def"); got != "def" {
		t.Errorf("EnvOr of an empty variable = %q", got)
	}
	t.Setenv("SERVICE_TEST_X", "set")
	if got := service.EnvOr("SERVICE_TEST_X", "def"); got != "set" {
		t.Errorf("EnvOr = %q", got)
	}
	t.Setenv("HOSTNAME", "c0ffee")
	t.Setenv("INSTANCE_ID", "")
	if service.ContainerID() != "c0ffee" || service.InstanceID() != "unknown" {
		t.Errorf("ids %q %q", service.ContainerID(), service.InstanceID())
	}
}

func TestServeStopsWhenDone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- service.Serve(ctx, slog.New(slog.DiscardHandler), addr, http.HandlerFunc(service.Health), time.Second)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestServeFailsToListen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = service.Serve(context.Background(), slog.New(slog.DiscardHandler), l.Addr().String(), http.NotFoundHandler(), time.Second)
	if err == nil || !strings.HasPrefix(err.Error(), "listen on "+l.Addr().String()+": ") {
		t.Errorf("Serve on a busy address: %v", err)
	}
}
