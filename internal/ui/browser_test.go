package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// The agent's check of calc-1 in the test: three failures 200ms apart
// make it critical, so the page must show it critical within checkBound
// of the first failing probe (plus the time to write and to watch, which
// the deadline below allows generously).
const (
	checkInterval = 200 * time.Millisecond
	checkTimeout  = 150 * time.Millisecond
	checkFailures = 3
	checkBound    = checkFailures*checkInterval + checkTimeout
)

// xss is a registry string that would run script if the page ever inserted
// it as markup.
const xss = `<img src=x onerror="document.title='pwned'">`

// TestUIInChromium drives the UI in headless Chromium against a real
// server on loopback: it lists what was registered (services, instances
// with address, node, tags, metadata and health, nodes with their lease);
// an instance whose real HTTP check starts failing turns critical on the
// page without a reload; a deregistered one disappears; the filter
// narrows; the dig line the page offers works against the server's DNS;
// when the connection drops the page says so, reconnects, and shows what
// changed meanwhile; a registry string never becomes markup; and with a
// read token in front it asks for the token and sends it. Screenshots go
// to $SCREENSHOT_DIR, or to the test's artifact directory (go test
// -artifacts).
func TestUIInChromium(t *testing.T) {
	chromium := findChromium(t)
	srv := signposttest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := srv.Client(t)

	// calc-1 is a real HTTP endpoint whose /health the test can fail.
	var failing atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}))
	t.Cleanup(target.Close)
	taddr := netip.MustParseAddrPort(target.Listener.Addr().String())

	// host-a is an agent: it owns calc-1, calc-2 and time-1 under a lease.
	calc1 := registry.Instance{ID: "calc-1", Service: "calc", Address: taddr.Addr(), Port: taddr.Port(),
		Tags: []string{"v2", "blue"}, Meta: map[string]string{"version": "1.2"}, Node: "host-a", Container: "demo-calc-1",
		Health: registry.Health{Status: registry.HealthPending}}
	owned := []registry.Instance{
		calc1,
		{ID: "calc-2", Service: "calc", Address: netip.MustParseAddr("127.0.0.2"), Port: 8082, Weight: 5, Node: "host-a"},
		{ID: "time-1", Service: "time", Address: netip.MustParseAddr("127.0.0.3"), Port: 8080, Node: "host-a"},
	}
	if _, err := cl.ReplaceNode(ctx, "host-a", time.Minute, owned); err != nil {
		t.Fatalf("register host-a's instances: %v", err)
	}
	// db-1 is registered by hand and carries hostile strings.
	if _, err := cl.Register(ctx, registry.Instance{ID: "db-1", Service: "db", Address: netip.MustParseAddr("10.0.0.9"), Port: 5432,
		Tags: []string{"<b>primary</b>"}, Meta: map[string]string{"note": xss}, Container: "<i>" + xss}); err != nil {
		t.Fatalf("register db-1: %v", err)
	}

	// The agent's check of calc-1, reported as the agent reports it: the
	// instance written again with its new health.
	hcfg, err := health.Config{Interval: checkInterval, Timeout: checkTimeout, Failures: checkFailures, Passes: 2, StartPeriod: time.Millisecond}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	check := health.NewCheck(hcfg, health.Spec{Kind: health.HTTP, Path: "/health", Interval: checkInterval, Timeout: checkTimeout}, taddr, nil,
		func(tr health.Transition) {
			in := calc1
			in.Health = registry.Health{Status: tr.To, CheckedAt: tr.Result.At, Output: tr.Result.Output}
			if _, err := cl.Register(ctx, in); err != nil && ctx.Err() == nil {
				t.Errorf("agent: report calc-1 %s: %v", tr.To, err)
			}
		})
	checkCtx, stopCheck := context.WithCancel(ctx)
	defer stopCheck()
	go check.Run(checkCtx)

	// The page is loaded through a proxy that the test can cut, to see the
	// page reconnect.
	px := newCutProxy(t, srv.HTTPAddr())
	page := openBrowser(t, chromium)
	problems := watchConsole(page)
	navigate(t, page, "http://"+px.addr()+"/") // "/" redirects to /ui/

	waitFor(t, page, "calc-1 passing, and every service listed", 30*time.Second,
		`rowStatus("calc-1") === "passing" && !!row("time-1") && !!row("db-1") && !!row("calc-2")`)
	// The nodes table gets its leases from /v1/nodes, read apart from the
	// instances.
	waitFor(t, page, "host-a's lease in the nodes table", 30*time.Second,
		`!!document.querySelector('#nodes-body tr[data-node="host-a"][data-lease="live"]')`)
	got := view(t, page)
	if loc := got.URL; !strings.HasSuffix(loc, "/ui/") {
		t.Errorf("the page is at %s, want / to redirect to /ui/", loc)
	}
	if want := []string{"calc", "db", "time"}; strings.Join(got.Services, ",") != strings.Join(want, ",") {
		t.Errorf("services on the page: %q, want %q", got.Services, want)
	}
	c1 := got.Rows["calc-1"]
	for _, want := range []string{taddr.String(), "host-a", "container demo-calc-1", "v2", "blue", "version=1.2"} {
		if !strings.Contains(c1.Text, want) {
			t.Errorf("calc-1's row %q lacks %q", c1.Text, want)
		}
	}
	if !strings.Contains(c1.Text, "ago") && !strings.Contains(c1.Text, "just now") {
		t.Errorf("calc-1's row %q does not say when it was checked", c1.Text)
	}
	if c2 := got.Rows["calc-2"]; !strings.Contains(c2.Text, "127.0.0.2:8082") || !strings.Contains(c2.Text, "weight 5") {
		t.Errorf("calc-2's row %q lacks its address or weight", c2.Text)
	}
	db := got.Rows["db-1"]
	if !strings.Contains(db.Text, "by hand") || !strings.Contains(db.Text, "note="+xss) || !strings.Contains(db.Text, "<b>primary</b>") ||
		!strings.Contains(db.Text, "container <i>"+xss) {
		t.Errorf("db-1's row %q: want node 'by hand' and its tag, metadata and container as text", db.Text)
	}
	if got.Injected || got.Title == "pwned" {
		t.Errorf("a registry string became markup: injected element %v, title %q", got.Injected, got.Title)
	}
	if got.Counts != "services 3 instances 4 passing 4 critical 0 pending 0 nodes 1" {
		t.Errorf("summary %q", got.Counts)
	}
	if n := got.Nodes["host-a"]; n.Lease != "live" || !strings.Contains(n.Text, "expires in") || !strings.Contains(n.Text, "3 passing") {
		t.Errorf("nodes: host-a shows %+v, want a live lease that expires, and 3 passing instances", n)
	}
	if n, ok := got.Nodes[""]; !ok || !strings.Contains(n.Text, "by hand") {
		t.Errorf("nodes: the hand registrations show as %+v", n)
	}
	wantDig := fmt.Sprintf("dig @127.0.0.1 -p %d _calc._tcp.servicediscovery.internal SRV", port(t, srv.DNSAddr()))
	if !slices.Contains(got.Dig, wantDig) {
		t.Errorf("the page's dig lines %q lack %q", got.Dig, wantDig)
	}
	runDig(t, wantDig, fmt.Sprintf("%d calc-1.calc.servicediscovery.internal.", taddr.Port()))
	// Its Copy button copies it, or (where the clipboard is refused)
	// selects it for Ctrl+C.
	if err := chromedp.Do(page, chromedp.Click(chromedp.CSS(`.svc[data-service="calc"] .dig-line button`))); err != nil {
		t.Fatalf("clicking Copy: %v", err)
	}
	waitFor(t, page, "the dig line copied or selected", 10*time.Second, fmt.Sprintf(
		`(() => { const b = document.querySelector('.svc[data-service="calc"] .dig-line button').textContent;
		  return b === "Copied" || (b.startsWith("Selected") && getSelection().toString() === %q); })()`, wantDig))
	screenshot(t, page, "ui-overview.png")

	// calc-1's check starts failing: the page turns it critical, with the
	// check's output, without a reload.
	eval(t, page, `window.__sameDocument = true`, nil)
	start := time.Now()
	failing.Store(true)
	waitFor(t, page, "calc-1 critical", checkBound+20*time.Second,
		`rowStatus("calc-1") === "critical" && row("calc-1").textContent.includes("503")`)
	t.Logf("calc-1 critical on the page %s after its endpoint started failing (check bound %s: %d failures %s apart, timeout %s)",
		time.Since(start).Round(10*time.Millisecond), checkBound, checkFailures, checkInterval, checkTimeout)
	stopCheck()
	got = view(t, page)
	if !got.SameDocument {
		t.Error("the page was reloaded")
	}
	if card := got.Cards["calc"]; card.Health != "degraded" || !strings.Contains(card.Text, "1 critical") {
		t.Errorf("calc's card %+v: want degraded with 1 critical", card)
	}
	if !strings.HasPrefix(got.Title, "(1 critical)") {
		t.Errorf("title %q: want it to count the critical instance", got.Title)
	}
	screenshot(t, page, "ui-critical.png")

	// The filter narrows to what matches; everything comes back after.
	typeFilter(t, page, "critical")
	got = view(t, page)
	if len(got.Rows) != 1 || got.Rows["calc-1"].Text == "" || strings.Join(got.Services, ",") != "calc" {
		t.Errorf("filter 'critical': rows %v in services %q, want calc-1 alone", keys(got.Rows), got.Services)
	}
	typeFilter(t, page, "host-a time")
	got = view(t, page)
	if strings.Join(keys(got.Rows), ",") != "time-1" || strings.Join(keys(got.Nodes), ",") != "host-a" {
		t.Errorf("filter 'host-a time': rows %v and nodes %v, want time-1 on host-a", keys(got.Rows), keys(got.Nodes))
	}
	screenshot(t, page, "ui-filtered.png")
	typeFilter(t, page, "")

	// Deregistered: gone from the page.
	if _, err := cl.Deregister(ctx, "db-1"); err != nil {
		t.Fatalf("deregister db-1: %v", err)
	}
	waitFor(t, page, "db-1 and its service gone", 15*time.Second,
		`!row("db-1") && !document.querySelector('.svc[data-service="db"]') && !document.querySelector('#nodes-body tr[data-node=""]')`)

	// A node that stops heartbeating: listed with its live lease, then
	// gone with its instances when the lease runs out.
	if _, err := cl.ReplaceNode(ctx, "host-b", 3*time.Second, []registry.Instance{
		{ID: "cache-1", Service: "cache", Address: netip.MustParseAddr("127.0.0.4"), Port: 6379, Node: "host-b"},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, page, "host-b and its live lease", 15*time.Second,
		`!!row("cache-1") && !!document.querySelector('#nodes-body tr[data-node="host-b"][data-lease="live"]')`)
	waitFor(t, page, "host-b gone when its lease ran out", 20*time.Second,
		`!row("cache-1") && !document.querySelector('#nodes-body tr[data-node="host-b"]')`)

	// The connection drops: the page says so; what changes while it is
	// down (a new instance, a removal) shows once it is back.
	px.cut(true)
	waitFor(t, page, "the page to say it lost the server", 60*time.Second, `document.getElementById("conn").dataset.state !== "live"`)
	if _, err := cl.Register(ctx, registry.Instance{ID: "web-1", Service: "web", Address: netip.MustParseAddr("10.0.0.10"), Port: 80}); err != nil {
		t.Fatal(err)
	}
	// time-1 stops: host-a's agent writes its set without it.
	now, _, err := cl.Instances(ctx, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	now = slices.DeleteFunc(now, func(in registry.Instance) bool { return in.ID == "time-1" })
	if _, err := cl.ReplaceNode(ctx, "host-a", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	px.cut(false)
	waitFor(t, page, "web-1 shown and time-1 gone after the reconnection", 30*time.Second,
		`!!row("web-1") && !row("time-1") && document.getElementById("conn").dataset.state === "live"`)
	got = view(t, page)
	if !got.SameDocument {
		t.Error("the page was reloaded to reconnect")
	}

	// Dark mode and a phone-sized screen, for the eye.
	if err := chromedp.Do(page, colorScheme("dark")); err != nil {
		t.Fatalf("dark mode: %v", err)
	}
	screenshot(t, page, "ui-dark.png")
	if err := chromedp.Do(page, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatalf("narrow viewport: %v", err)
	}
	screenshot(t, page, "ui-narrow.png")
	if err := chromedp.Do(page, chromedp.EmulateViewport(1200, 900), colorScheme("light")); err != nil {
		t.Fatal(err)
	}

	// Reads behind a token: the page asks for it, then sends it as a
	// bearer token on every read, the watch included.
	tp := newTokenProxy(t, srv.URL(), "s3cret")
	navigate(t, page, tp.URL+"/ui/")
	waitFor(t, page, "the token form", 15*time.Second, `!document.getElementById("token-form").hidden`)
	screenshot(t, page, "ui-token.png")
	enter := func(tok string) {
		t.Helper()
		if err := chromedp.Do(page,
			chromedp.SendKeys(chromedp.CSS("#token-input"), tok),
			chromedp.Click(chromedp.CSS("#token-form button")),
		); err != nil {
			t.Fatalf("entering the token %q: %v", tok, err)
		}
	}
	enter("wrong")
	waitFor(t, page, "the wrong token refused", 15*time.Second,
		`!document.getElementById("token-form").hidden && document.getElementById("banner").textContent.includes("refused the token")`)
	enter("s3cret")
	waitFor(t, page, "the registry, read with the token", 15*time.Second,
		`!!row("web-1") && document.getElementById("conn").dataset.state === "live"`)
	if n := tp.watches.Load(); n == 0 {
		t.Error("the page never opened the watch with the token")
	}

	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}

// pageView is what view() (see helpers) reads off the page.
type pageView struct {
	URL          string              `json:"url"`
	Title        string              `json:"title"`
	Services     []string            `json:"services"`
	Cards        map[string]cardView `json:"cards"`
	Rows         map[string]rowView  `json:"rows"`
	Nodes        map[string]nodeView `json:"nodes"`
	Dig          []string            `json:"dig"`
	Counts       string              `json:"counts"`
	Injected     bool                `json:"injected"`
	SameDocument bool                `json:"sameDocument"`
}

type cardView struct {
	Health string `json:"health"`
	Text   string `json:"text"`
}

type rowView struct {
	Status string `json:"status"`
	Text   string `json:"text"`
}

type nodeView struct {
	Lease string `json:"lease"`
	Text  string `json:"text"`
}

// helpers are functions the test's expressions use, defined in the page
// by evaluation (the page's own CSP forbids eval, not DevTools).
const helpers = `
var row = (id) => [...document.querySelectorAll("tr.inst")].find((r) => r.dataset.id === id && !r.closest("[hidden]"));
var rowStatus = (id) => { const r = row(id); return r ? r.dataset.status : null; };
var view = () => {
  const v = {url: location.href, title: document.title, services: [], cards: {}, rows: {}, nodes: {}, dig: [],
    sameDocument: window.__sameDocument === true,
    injected: !!document.querySelector('main img, main b, main i, img[src="x"]'),
    counts: [...document.querySelectorAll(".summary .tile")].map((t) => t.querySelector(".lbl").textContent + " " + t.querySelector(".num").textContent).join(" ")};
  for (const c of document.querySelectorAll(".svc")) {
    if (c.hidden) continue;
    v.services.push(c.dataset.service);
    v.cards[c.dataset.service] = {health: c.dataset.health, text: c.querySelector(".svc-head").textContent};
    for (const r of c.querySelectorAll("tr.inst")) v.rows[r.dataset.id] = {status: r.dataset.status, text: r.innerText};
  }
  for (const r of document.querySelectorAll("#nodes-body tr")) v.nodes[r.dataset.node] = {lease: r.dataset.lease || "", text: r.innerText};
  for (const d of document.querySelectorAll(".dig-cmd")) v.dig.push(d.textContent);
  return v;
};
true`

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium in PATH, and CI=true: install it (apt-get install -y chromium)")
	}
	t.Skip("SKIPPING the UI browser test: no chromium in PATH (apt-get install -y chromium)")
	return ""
}

func openBrowser(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.WindowSize(1200, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser; it must have no timeout, which
	// would stop the browser when it ran out.
	enableLog := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	})
	if err := chromedp.Do(ctx, enableLog); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// watchConsole collects uncaught exceptions and Content-Security-Policy
// violations in the page.
func watchConsole(page context.Context) func() []string {
	var mu sync.Mutex
	var out []string
	msgs := chromedp.Console(page)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Trusted Type") {
				mu.Lock()
				out = append(out, m.String())
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), out...)
	}
}

// colorScheme makes the page see prefers-color-scheme: scheme.
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})
}

func navigate(t *testing.T, page context.Context, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(u), chromedp.Evaluate[chromedp.Void](helpers)); err != nil {
		t.Fatalf("opening %s: %v", u, err)
	}
}

// view reads what the page shows (see view() in helpers).
func view(t *testing.T, page context.Context) pageView {
	t.Helper()
	var v pageView
	eval(t, page, `view()`, &v)
	return v
}

func eval(t *testing.T, page context.Context, expr string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, 20*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		t.Fatalf("evaluating %s in the page: %v", expr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("decoding %s: %v", raw, err)
		}
	}
}

// waitFor evaluates cond in the page every 50ms until it is true, and
// fails the test with the page's state if it is not within timeout.
func waitFor(t *testing.T, page context.Context, what string, timeout time.Duration, cond string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(page, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+cond+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var v json.RawMessage
			eval(t, page, `view()`, &v)
			t.Fatalf("waited %s for %s (%s): err %v; the page shows %s", timeout, what, cond, err, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// typeFilter replaces the filter box's text as a person would type it.
func typeFilter(t *testing.T, page context.Context, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, 20*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.getElementById("filter"); f.value = ""; f.dispatchEvent(new Event("input")); })()`),
		chromedp.SendKeys(chromedp.CSS("#filter"), text),
		// The page draws on a 30ms timer after the input event.
		chromedp.Sleep(150*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("typing %q in the filter: %v", text, err)
	}
}

func screenshot(t *testing.T, page context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(page, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("SCREENSHOT_DIR")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s", p)
}

// runDig runs a dig line the page offers, as a person pasting it would,
// and checks that the answer holds want. Without dig it says so and
// returns, except in CI.
func runDig(t *testing.T, line, want string) {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no dig in PATH, and CI=true: install dnsutils")
		}
		t.Logf("SKIPPING the dig line check: no dig in PATH")
		return
	}
	f := strings.Fields(line)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, f[0], append(f[1:], "+tries=3", "+time=2")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Errorf("the page's %q: err %v, want %q in:\n%s", line, err, want, out)
	}
}

// cutProxy forwards TCP to the server; cut(true) closes every connection
// and refuses new ones until cut(false).
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func newCutProxy(t *testing.T, to string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, to)
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *cutProxy) serve(c net.Conn, to string) {
	up, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// tokenProxy stands for a server whose reads need a token: /v1 without
// "Authorization: Bearer <token>" gets a 401.
type tokenProxy struct {
	*httptest.Server
	watches atomic.Int32
}

func newTokenProxy(t *testing.T, to, token string) *tokenProxy {
	t.Helper()
	u, err := url.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // server-sent events as they come
	tp := &tokenProxy{}
	tp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"missing bearer token: reads need Authorization: Bearer <token>"}`)
			return
		}
		if r.URL.Path == "/v1/watch" {
			tp.watches.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		tp.CloseClientConnections() // the page's watch would hold Close
		tp.Close()
	})
	return tp
}

func port(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestUIFoldsALargeRegistry loads a registry of 5,000 instances in 50
// services: the page counts them all, draws the cards folded (no 5,000
// rows), and a filter or a click opens what is asked for.
func TestUIFoldsALargeRegistry(t *testing.T) {
	chromium, srv, cl := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const services, per = 50, 100
	for n := range 5 { // five agents, ten services each
		var set []registry.Instance
		for s := n * services / 5; s < (n+1)*services/5; s++ {
			for i := range per {
				set = append(set, registry.Instance{
					ID: fmt.Sprintf("svc%02d-%03d", s, i), Service: fmt.Sprintf("svc%02d", s),
					Address: netip.AddrFrom4([4]byte{10, byte(s), byte(i / 250), byte(1 + i%250)}), Port: 8080,
					Meta: map[string]string{"zone": fmt.Sprintf("z%d", i%3)},
				})
			}
		}
		if _, err := cl.ReplaceNode(ctx, fmt.Sprintf("host-%d", n), time.Minute, set); err != nil {
			t.Fatalf("register host-%d: %v", n, err)
		}
	}
	page := openBrowser(t, chromium)
	problems := watchConsole(page)
	start := time.Now()
	navigate(t, page, srv.URL()+"/ui/")
	waitFor(t, page, "every instance counted", 30*time.Second, `document.getElementById("n-instances").textContent === "5000"`)
	waitFor(t, page, "every card drawn", 30*time.Second, `document.querySelectorAll(".svc").length === 50`)
	t.Logf("5,000 instances in 50 services on the page %s after it was opened", time.Since(start).Round(10*time.Millisecond))
	got := view(t, page)
	if len(got.Rows) != 0 || len(got.Services) != 50 {
		t.Errorf("5,000 instances: %d rows drawn in %d cards, want 50 folded cards", len(got.Rows), len(got.Services))
	}
	if n := len(got.Nodes); n != 5 {
		t.Errorf("nodes: %d rows, want 5", n)
	}
	screenshot(t, page, "ui-large.png")

	typeFilter(t, page, "svc07 z1")
	waitFor(t, page, "svc07's z1 instances open", 10*time.Second, `document.querySelectorAll("tr.inst").length === 33`)
	got = view(t, page)
	if strings.Join(got.Services, ",") != "svc07" {
		t.Errorf("filter 'svc07 z1': services %q, want svc07", got.Services)
	}
	typeFilter(t, page, "")
	waitFor(t, page, "folded again", 10*time.Second, `document.querySelectorAll("tr.inst").length === 0`)
	if err := chromedp.Do(page, chromedp.Click(chromedp.CSS(`.svc[data-service="svc03"] .fold`))); err != nil {
		t.Fatalf("opening svc03: %v", err)
	}
	waitFor(t, page, "svc03 open", 10*time.Second, `document.querySelectorAll('.svc[data-service="svc03"] tr.inst').length === 100 && document.querySelectorAll("tr.inst").length === 100`)
	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}

// TestUIWrapsTheLongestStrings registers an instance whose every string is
// as long as the registry takes (node, container, tag, metadata) at a
// long IPv6 address, and checks that each cell of its row, and of its
// node's row, holds its text: nothing spills over the next column.
func TestUIWrapsTheLongestStrings(t *testing.T) {
	chromium, srv, cl := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := strings.Repeat("n", registry.MaxNodeLen)
	long := registry.Instance{ID: "long-1", Service: "long", Address: netip.MustParseAddr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"), Port: 65535,
		Container: strings.Repeat("c", registry.MaxNodeLen), Tags: []string{strings.Repeat("t", 200)},
		Meta: map[string]string{"k": strings.Repeat("v", 200)}}
	if _, err := cl.ReplaceNode(ctx, node, time.Minute, []registry.Instance{long}); err != nil {
		t.Fatal(err)
	}
	page := openBrowser(t, chromium)
	navigate(t, page, srv.URL()+"/ui/")
	waitFor(t, page, "long-1 and its node", 30*time.Second, `!!row("long-1") && document.querySelectorAll("#nodes-body tr").length === 1`)
	var spills []string
	eval(t, page, `(() => {
	  const out = [];
	  for (const td of [...row("long-1").cells, ...document.querySelector("#nodes-body tr").cells]) {
	    const box = td.getBoundingClientRect();
	    for (const e of [td, ...td.querySelectorAll("*")]) {
	      const r = e.getBoundingClientRect();
	      if (r.right > box.right + 1 || e.scrollWidth > e.clientWidth + 1) {
	        out.push((td.dataset.label || td.cellIndex) + ": " + e.className + " " + Math.round(r.right - box.right) + "px past the cell");
	      }
	    }
	  }
	  return out;
	})()`, &spills)
	screenshot(t, page, "ui-long-strings.png")
	for _, s := range spills {
		t.Errorf("a long string spills out of its cell: %s", s)
	}
}

// startServer finds Chromium and starts a server for a browser test, with
// a client of its API.
func startServer(t *testing.T) (string, *signposttest.Server, *apiclient.Client) {
	t.Helper()
	chromium := findChromium(t)
	srv := signposttest.Start(t, server.Config{})
	cl := srv.Client(t)
	return chromium, srv, cl
}
