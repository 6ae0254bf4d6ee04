package httpguard_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/signpost-dns/signpost/internal/signposttest"
)

// forgePage is a web page of another origin that tries every write a
// page can send to a tokenless signpost on loopback without the user
// noticing: no-cors fetches (simple requests: POST with a text/plain
// body; PUT and DELETE, which no-cors refuses), CORS fetches that need a
// preflight (DELETE, JSON PUT), a beacon and a form post.
const forgePage = `<!doctype html><meta charset=utf-8><title>loading</title>
<form id=f method=POST enctype=text/plain action="API/v1/nodes/agent/heartbeat" target=sink><input name='{"a":"' value='"}'></form>
<iframe name=sink></iframe>
<script>
const T = "API", r = [];
const instance = '{"service":"evil","address":"10.6.6.6","port":1}';
async function tryit(name, f) {
  try { const x = await f(); r.push(name + ":" + x.type + ":" + x.status); } catch (e) { r.push(name + ":refused-by-browser"); }
}
(async () => {
  await tryit("heartbeat-no-cors", () => fetch(T + "/v1/nodes/agent/heartbeat", {method: "POST", mode: "no-cors", body: "{}"}));
  await tryit("post-json-as-text", () => fetch(T + "/v1/nodes/agent/heartbeat", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: instance}));
  await tryit("delete-no-cors", () => fetch(T + "/v1/nodes/agent", {method: "DELETE", mode: "no-cors"}));
  await tryit("put-no-cors", () => fetch(T + "/v1/instances/evil", {method: "PUT", mode: "no-cors", body: instance}));
  await tryit("delete-cors", () => fetch(T + "/v1/instances/victim?force=true", {method: "DELETE"}));
  await tryit("put-json-cors", () => fetch(T + "/v1/instances/victim", {method: "PUT", headers: {"Content-Type": "application/json"}, body: instance}));
  try { r.push("beacon:" + navigator.sendBeacon(T + "/v1/nodes/agent/heartbeat", new Blob(["{}"], {type: "application/json"}))); } catch (e) { r.push("beacon:refused-by-browser"); }
  document.getElementById("f").submit();
  await new Promise((ok) => setTimeout(ok, 1000));
  document.title = "done " + r.join(" ");
})();
</script>`

// TestBrowserCannotForgeWrites: a real Chromium, on a page of another
// origin, cannot change a tokenless loopback server's registry: the
// simple requests it may send reach the server and are refused
// (text/plain bodies), the others are stopped by the browser itself.
func TestBrowserCannotForgeWrites(t *testing.T) {
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no chromium in PATH, and CI=true: install it (apt-get install -y chromium)")
		}
		t.Skip("SKIPPING the browser forgery test: no chromium in PATH (apt-get install -y chromium)")
	}
	p := signposttest.StartProcess(t, 0)
	if status, msg := call(t, "PUT", p.URL+"/v1/instances/victim", instance, jsonCT); status != 200 {
		t.Fatalf("PUT victim: %d %s", status, msg)
	}
	if status, msg := call(t, "PUT", p.URL+"/v1/nodes/agent", `{"ttl":"1h","instances":[{"id":"agent-1","service":"calc","address":"10.0.0.2","port":80}]}`, jsonCT); status != 200 {
		t.Fatalf("PUT node: %d %s", status, msg)
	}
	// The attacker's page, on another loopback address (another origin).
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(forgePage, "API", p.URL)
	site := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	site.Listener = ln
	site.Start()
	t.Cleanup(site.Close)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("headless", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	// The first action starts the browser, without a timeout.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(site.URL)); err != nil {
		t.Fatalf("the attacker's page: %v", err)
	}
	var title string
	for !strings.HasPrefix(title, "done") {
		if title, err = chromedp.Run(ctx, chromedp.Evaluate[string]("document.title")); err != nil {
			t.Fatalf("the attacker's page: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("what the page saw: %s", title)

	// Nothing changed.
	if status, body := get(t, p.URL+"/v1/instances/victim"); status != 200 || !strings.Contains(body, `"calc"`) {
		t.Errorf("victim after the page: %d %s", status, body)
	}
	if status, body := get(t, p.URL+"/v1/instances/evil"); status != 404 {
		t.Errorf("an instance the page put: %d %s", status, body)
	}
	if _, body := get(t, p.URL+"/v1/nodes"); !strings.Contains(body, `"agent"`) {
		t.Errorf("the agent's node after the page: %s", body)
	}
	// The simple requests reached the server and were refused there:
	// the two no-cors POSTs and the form (the beacon too, when sent).
	refused, err := p.Metric(context.Background(), `signpost_http_refused_total{reason="content_type"}`)
	if err != nil || refused < 3 {
		t.Errorf("writes refused for their Content-Type: %v (%v), want at least 3 (two no-cors POSTs and a form)", refused, err)
	}
}

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
