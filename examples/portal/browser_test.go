package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/signpost-dns/signpost/discovery/discoverytest"
)

// findChromium returns the path of a Chromium binary. Without one the test
// is skipped, loudly, except in CI (CI=true), where it fails.
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
	t.Skip("SKIPPING the browser test: no chromium in PATH (apt-get install -y chromium)")
	return ""
}

// TestPortalPageInChromium drives the page in headless Chromium: a formula
// gives its result and the container that answered, a time format gives a
// time, and a missing service shows an error naming it. It saves a
// screenshot in $SCREENSHOT_DIR, or in the test's temporary directory.
func TestPortalPageInChromium(t *testing.T) {
	chromium := findChromium(t)
	rg := newRig(t)
	rg.dns.Add(
		discoverytest.Service("_calc._tcp", "calc-1", fakeCalc(t, "calc-c0ffee"), 0, 1, 0),
		discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-beef"), 0, 1, 0),
	)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.WindowSize(1000, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first call starts the browser and must not have a timeout (it
	// would stop the browser); later steps get one.
	if err := chromedp.Do(ctx, chromedp.Navigate(rg.portal.URL+"/")); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	step, cancelStep := context.WithTimeout(ctx, 60*time.Second)
	defer cancelStep()

	calcResult, calcContainer := ask(t, step, "calc", "#calc-formula", "(2+6)*3")
	if calcResult != "24" || calcContainer != "calc-c0ffee" {
		t.Errorf("calc shows %q from %q, want 24 from calc-c0ffee", calcResult, calcContainer)
	}
	timeResult, timeContainer := ask(t, step, "time", "#time-format", "15:04 Jan 2")
	if !regexp.MustCompile(`^\d\d:\d\d [A-Z][a-z]{2} \d{1,2}$`).MatchString(timeResult) || timeContainer != "time-beef" {
		t.Errorf("time shows %q from %q, want a time like 15:04 Jan 2 from time-beef", timeResult, timeContainer)
	}

	// Every calc gone: the page says which service is missing.
	rg.dns.Reset()
	rg.dns.Add(discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-beef"), 0, 1, 30))
	time.Sleep(10 * time.Millisecond) // past the TTL: 0 s, cached 1 ms here
	if err := chromedp.Do(step, chromedp.Click("#calc-go"), chromedp.WaitVisible(chromedp.CSS("#calc-result.error"))); err != nil {
		t.Fatalf("driving the page with calc missing: %v", err)
	}
	calcError, err := chromedp.Run(step, chromedp.Text("#calc-result"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`no instance of service "calc"`).MatchString(calcError) {
		t.Errorf("with calc missing the page shows %q, want an error naming calc", calcError)
	}

	png, err := chromedp.Run(step, chromedp.FullScreenshot(100)) // 100 gives a PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "portal.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s", path)
}

// ask types value into the field, submits the form of kind ("calc" or
// "time"), waits for the answer and returns the result and the container
// shown.
func ask(t *testing.T, ctx context.Context, kind, field, value string) (result, container string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.SetValue(field, value),
		chromedp.Click("#"+kind+"-go"),
		chromedp.WaitVisible("#"+kind+"-container"),
	)
	if err != nil {
		t.Fatalf("asking %s for %q: %v", kind, value, err)
	}
	if result, err = chromedp.Run(ctx, chromedp.Text("#"+kind+"-result")); err != nil {
		t.Fatal(err)
	}
	if container, err = chromedp.Run(ctx, chromedp.Text("#"+kind+"-container")); err != nil {
		t.Fatal(err)
	}
	return result, container
}
