// Package pagetest drives the portal's page in headless Chromium for the
// examples' tests: open it, ask the time or calc form and read the answer
// the page shows, save screenshots.
package pagetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Answer is what the page shows in one section after a question.
type Answer struct {
	// Text is the result element's text: the value, or the error.
	Text string `json:"text"`
	// Error is set when the page shows the answer as an error.
	Error bool `json:"error"`
	// Container is the container the page says answered; "" on error.
	Container string `json:"container"`
}

// String gives the answer as one line of a test's log.
func (a Answer) String() string {
	if a.Error {
		return fmt.Sprintf("error %q", a.Text)
	}
	return fmt.Sprintf("%q from container %q", a.Text, a.Container)
}

// fields are the input of each section of the page.
var fields = map[string]string{"time": "#time-format", "calc": "#calc-formula"}

// Chromium returns the path of a Chromium binary. Without one the test is
// skipped, loudly, except in CI (CI=true), where it fails.
func Chromium(t testing.TB) string {
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

// Open starts headless Chromium (see Chromium), opens url, and returns the
// tab's context; the browser is stopped when the test ends.
func Open(t testing.TB, url string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium(t)),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.WindowSize(1000, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser and must not have a timeout (it
	// would stop the browser when it ran out); Ask's steps get one.
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s in Chromium: %v", url, err)
	}
	return ctx
}

// settled is true, with the answer, once the section's result holds a
// final answer: neither empty (as Ask leaves it) nor "…" (the page's
// "asking" mark).
const settled = `(() => {
  const r = document.getElementById(%[1]q);
  const t = r.textContent.trim();
  if (t === "" || t === "…") return null;
  const c = document.getElementById(%[2]q);
  return {text: t, error: r.classList.contains("error"), container: c ? c.textContent : ""};
})()`

// AskTimeout bounds how long Ask waits for an answer; the portal gives
// up on a service after 5 s.
const AskTimeout = 30 * time.Second

// Ask types value into the field of section kind ("time" or "calc") of
// the page, submits it and returns the answer the page then shows, waiting
// up to AskTimeout for it. It fails the test if the page cannot be driven
// or shows no answer in time.
//
// The result element is emptied first, so that the answer returned is the
// one to this question: the previous answer may be the same text (24
// before and after a calc instance stops), and waiting for a result to be
// visible would see the previous one.
func Ask(t testing.TB, page context.Context, kind, value string) Answer {
	t.Helper()
	field, ok := fields[kind]
	if !ok {
		t.Fatalf("pagetest: no section %q in the page", kind)
	}
	ctx, cancel := context.WithTimeout(page, AskTimeout)
	defer cancel()
	clear := fmt.Sprintf(`(() => {
  const r = document.getElementById(%q);
  r.textContent = ""; r.className = "result";
  document.getElementById(%q).textContent = "";
})()`, kind+"-result", kind+"-who")
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](clear),
		chromedp.SetValue(field, value),
		chromedp.Click("#"+kind+"-go"),
	); err != nil {
		t.Fatalf("asking %s for %q in the page: %v", kind, value, err)
	}
	a, err := chromedp.Run(ctx, chromedp.Poll[Answer](
		fmt.Sprintf(settled, kind+"-result", kind+"-container"),
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(AskTimeout),
	))
	if err != nil {
		t.Fatalf("waiting for the page's answer of %s to %q: %v", kind, value, err)
	}
	return a
}

// Screenshot saves a PNG of the whole page as name in $SCREENSHOT_DIR, or
// in the test's temporary directory, logs where, and returns the path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 gives a PNG
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
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s", path)
	return path
}
