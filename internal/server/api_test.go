package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
)

func do(t *testing.T, method, url, token, body string) (int, apiclient.ErrorResponse) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var e apiclient.ErrorResponse
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e
}

func TestAPIRefusesBadInput(t *testing.T) {
	ts := startServer(t, nil)
	u := ts.URL()
	good := `{"service":"calc","address":"10.0.0.1","port":8081}`
	cases := []struct {
		name, method, path, body string
		status                   int
		field, inError           string
	}{
		{"bad JSON", "PUT", "/v1/instances/a", `{"service":`, 400, "", "bad JSON"},
		{"not JSON", "PUT", "/v1/instances/a", `service=calc`, 400, "", "bad JSON"},
		{"two values", "PUT", "/v1/instances/a", good + good, 400, "", "more than one"},
		{"empty body", "PUT", "/v1/instances/a", ``, 400, "", "empty body"},
		{"unknown field", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":8081,"colour":"red"}`, 400, "", "colour"},
		{"service with space", "PUT", "/v1/instances/a", `{"service":"Calc Service!","address":"10.0.0.1","port":8081}`, 400, "service", "Calc Service!"},
		{"service too long", "PUT", "/v1/instances/a", `{"service":"` + strings.Repeat("x", 64) + `","address":"10.0.0.1","port":8081}`, 400, "service", "longer than 63"},
		{"port zero", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":0}`, 400, "port", "1-65535"},
		{"port too big", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":70000}`, 400, "", "port"},
		{"port negative", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":-1}`, 400, "", "port"},
		{"bad address", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.300","port":8081}`, 400, "", "10.0.0.300"},
		{"host name as address", "PUT", "/v1/instances/a", `{"service":"calc","address":"calc.example","port":8081}`, 400, "", "calc.example"},
		{"no address", "PUT", "/v1/instances/a", `{"service":"calc","port":8081}`, 400, "address", "address"},
		{"unspecified address", "PUT", "/v1/instances/a", `{"service":"calc","address":"0.0.0.0","port":8081}`, 400, "address", "unspecified"},
		{"bad id", "PUT", "/v1/instances/a_b", `{"service":"calc","address":"10.0.0.1","port":8081}`, 400, "id", "a_b"},
		{"id mismatch", "PUT", "/v1/instances/a", `{"id":"b","service":"calc","address":"10.0.0.1","port":8081}`, 400, "id", "differs"},
		{"bad protocol", "PUT", "/v1/instances/a", `{"service":"calc","protocol":"sctp","address":"10.0.0.1","port":8081}`, 400, "protocol", "sctp"},
		{"protocol clash", "PUT", "/v1/instances/a", `{"service":"_calc._udp","protocol":"tcp","address":"10.0.0.1","port":8081}`, 400, "protocol", "udp"},
		{"bad health", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":8081,"health":{"status":"fine"}}`, 400, "health.status", "fine"},
		{"meta too big", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":8081,"meta":{"k":"` + strings.Repeat("v", 300) + `"}}`, 400, "meta.k", "longer than 255"},
		{"meta key with =", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":8081,"meta":{"a=b":"c"}}`, 400, "meta key", "a=b"},
		{"node set without lease", "PUT", "/v1/instances/a", `{"service":"calc","address":"10.0.0.1","port":8081,"node":"host-1"}`, 404, "node", "no live lease"},
		{"bad ttl", "PUT", "/v1/nodes/host-1", `{"ttl":"forever","instances":[]}`, 400, "ttl", "forever"},
		{"ttl too short", "PUT", "/v1/nodes/host-1", `{"ttl":"10ms","instances":[]}`, 400, "ttl", "10ms"},
		{"bad instance in node set", "PUT", "/v1/nodes/host-1", `{"ttl":"10s","instances":[` + `{"id":"ok-1","service":"calc","address":"10.0.0.1","port":8081},{"id":"bad-1","service":"calc","address":"10.0.0.1","port":0}]}`, 400, "port", "instances[1]"},
		{"heartbeat unknown node", "POST", "/v1/nodes/ghost/heartbeat", ``, 404, "node", "ghost"},
		{"delete unknown", "DELETE", "/v1/instances/ghost", ``, 404, "", "ghost"},
		{"bad blocking index", "GET", "/v1/services/calc?index=x", ``, 400, "", "index"},
		{"bad service name read", "GET", "/v1/services/Bad_Name", ``, 400, "service", "Bad_Name"},
		{"no such endpoint", "GET", "/v2/things", ``, 404, "", "/v2/things"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, e := do(t, c.method, u+c.path, "", c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d (%s)", status, c.status, e.Error)
			}
			if e.Field != c.field {
				t.Errorf("field %q, want %q (%s)", e.Field, c.field, e.Error)
			}
			if !strings.Contains(e.Error, c.inError) {
				t.Errorf("error %q does not name %q", e.Error, c.inError)
			}
		})
	}
	// Nothing was written, not even the good half of the node set.
	if n := ts.Index().Len(); n != 0 {
		all, _ := ts.Index().All()
		t.Fatalf("refused writes left %d instances: %+v", n, all)
	}
	if leases, _ := ts.client.Leases(context.Background()); len(leases) != 0 {
		t.Fatalf("refused writes left leases: %+v", leases)
	}
}

func TestAPITokens(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *server.Config) { c.TokenFile = tokenFile })
	body := `{"service":"calc","address":"10.0.0.1","port":8081}`
	for _, c := range []struct{ name, token string }{{"missing", ""}, {"wrong", "guess"}, {"prefix", "s3cret"}} {
		status, e := do(t, "PUT", ts.URL()+"/v1/instances/calc-1", c.token, body)
		if status != 401 || e.Error == "" {
			t.Errorf("%s token: status %d (%s), want 401", c.name, status, e.Error)
		}
		if status, _ := do(t, "DELETE", ts.URL()+"/v1/nodes/x", c.token, ""); status != 401 {
			t.Errorf("%s token on DELETE: %d", c.name, status)
		}
	}
	if ts.Index().Len() != 0 {
		t.Fatal("a write without the right token changed the registry")
	}
	// Reads need no token.
	if status, _ := do(t, "GET", ts.URL()+"/v1/services", "", ""); status != 200 {
		t.Fatalf("read: %d", status)
	}
	if status, e := do(t, "PUT", ts.URL()+"/v1/instances/calc-1", "s3cret-token", body); status != 200 {
		t.Fatalf("right token: %d %s", status, e.Error)
	}
	if ts.Index().Len() != 1 {
		t.Fatal("write with the right token not applied")
	}
}

func TestServerRefusesOpenWritesWithoutToken(t *testing.T) {
	_, err := server.New(server.Config{DNSAddr: "127.0.0.1:0", HTTPAddr: "0.0.0.0:0", DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("want a refusal naming --token-file, got %v", err)
	}
}

func TestLeaseExpiry(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	ts.register(t, inst("db-1", "db", "10.8.0.1", 5432)) // by hand: no node
	agentSet := []registry.Instance{inst("web-1", "web", "10.8.0.2", 80), inst("web-2", "web", "10.8.0.3", 80)}
	if _, err := ts.client.ReplaceNode(ctx, "host-dying", 2*time.Second, agentSet); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.client.ReplaceNode(ctx, "host-alive", 2*time.Second, []registry.Instance{inst("web-3", "web", "10.8.0.4", 80)}); err != nil {
		t.Fatal(err)
	}
	if r := ts.ask(t, "udp", "web."+zone, dns.TypeSRV, 0); len(r.Answer) != 3 {
		t.Fatalf("before expiry: %v", r)
	}
	// host-alive heartbeats; host-dying does not.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
				_ = ts.client.Heartbeat(ctx, "host-alive")
			}
		}
	}()
	waitFor(t, "host-dying's instances to leave DNS", func() bool {
		r := ts.ask(t, "udp", "web."+zone, dns.TypeSRV, 0)
		return len(r.Answer) == 1
	})
	r := ts.ask(t, "udp", "web."+zone, dns.TypeSRV, 0)
	if s := records[*dns.SRV](r.Answer); !strings.HasPrefix(s[0].Target, "web-3.") {
		t.Fatalf("the heartbeating node's instance should stay: %v", r.Answer)
	}
	if _, err := ts.client.Service(ctx, "web", 0, 0); err != nil {
		t.Fatal(err)
	}
	sr, _ := ts.client.Service(ctx, "web", 0, 0)
	if len(sr.Instances) != 1 {
		t.Fatalf("API still lists expired instances: %+v", sr.Instances)
	}
	if r := ts.ask(t, "udp", "db."+zone, dns.TypeSRV, 0); len(r.Answer) != 1 {
		t.Fatalf("hand-registered instance gone: %v", r)
	}
	// The dead node's heartbeat is refused: it must replace its set.
	err := ts.client.Heartbeat(ctx, "host-dying")
	if !apiclient.IsStatus(err, 404) {
		t.Fatalf("heartbeat after expiry: %v", err)
	}
	// And single writes for it are refused too, until it does.
	w := inst("web-1", "web", "10.8.0.2", 80)
	w.Node = "host-dying"
	if _, err := ts.client.Register(ctx, w); !apiclient.IsStatus(err, 404) {
		t.Fatalf("register without a lease: %v", err)
	}
	resp, err := http.Get(ts.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "signpost_lease_expired_instances_total 2" {
			found = true
		}
	}
	if !found {
		t.Error("metrics do not count the 2 expired instances")
	}
}

func TestBlockingQueryAndWatch(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := ts.client.Service(ctx, "calc", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The SSE stream, from now.
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL()+"/v1/watch", nil)
	req.URL.RawQuery = "service=calc&index=" + strconv.FormatInt(ts.Index().Rev(), 10)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("watch content type %q", ct)
	}
	got := make(chan apiclient.ServiceResponse, 1)
	go func() {
		r, err := ts.client.Service(ctx, "calc", max(first.Index, 1), 15*time.Second)
		if err == nil {
			got <- r
		}
	}()
	time.Sleep(100 * time.Millisecond)                       // let the blocking query block
	ts.register(t, inst("other-1", "other", "10.9.0.9", 80)) // another service: no wake-up
	ts.register(t, inst("calc-1", "calc", "10.9.0.1", 8081))
	select {
	case r := <-got:
		if len(r.Instances) != 1 || r.Instances[0].ID != "calc-1" {
			t.Fatalf("blocking query returned %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("blocking query did not return after the service changed")
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev apiclient.WatchEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("bad event %q: %v", data, err)
		}
		if ev.Service != "calc" {
			t.Fatalf("watch for calc sent %q", ev.Service)
		}
		if len(ev.Instances) == 1 && ev.Instances[0].Address.String() == "10.9.0.1" {
			return
		}
	}
	t.Fatalf("watch stream ended without the new instance: %v", errors.Join(sc.Err(), ctx.Err()))
}
