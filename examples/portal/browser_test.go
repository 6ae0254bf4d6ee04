package main

import (
	"regexp"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/discovery/discoverytest"
	"github.com/signpost-dns/signpost/examples/internal/pagetest"
)

// TestPortalPageInChromium drives the page in headless Chromium: a formula
// gives its result and the container that answered, a time format gives a
// time, and a missing service shows an error naming it. It saves a
// screenshot in $SCREENSHOT_DIR, or in the test's temporary directory.
func TestPortalPageInChromium(t *testing.T) {
	pagetest.Chromium(t)
	rg := newRig(t)
	rg.dns.Add(
		discoverytest.Service("_calc._tcp", "calc-1", fakeCalc(t, "calc-c0ffee"), 0, 1, 0),
		discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-beef"), 0, 1, 0),
	)
	page := pagetest.Open(t, rg.portal.URL+"/")
	ask := func(kind, value string) pagetest.Answer {
		t.Helper()
		return pagetest.Ask(t, page, kind, value)
	}

	if a := ask("calc", "(2+6)*3"); a.Error || a.Text != "24" || a.Container != "calc-c0ffee" {
		t.Errorf("calc (2+6)*3: the page shows %v, want 24 from calc-c0ffee", a)
	}
	a := ask("time", "15:04 Jan 2")
	if a.Error || !regexp.MustCompile(`^\d\d:\d\d [A-Z][a-z]{2} \d{1,2}$`).MatchString(a.Text) || a.Container != "time-beef" {
		t.Errorf("time 15:04 Jan 2: the page shows %v, want a time like 15:04 Jan 2 from time-beef", a)
	}

	// Every calc gone: the page says which service is missing, once the
	// rig's resolver lets its cached answer go (after 1 ms).
	rg.dns.Reset()
	rg.dns.Add(discoverytest.Service("_time._tcp", "time-1", fakeTime(t, "time-beef"), 0, 1, 30))
	missing := regexp.MustCompile(`no instance of service "calc"`)
	for deadline := time.Now().Add(30 * time.Second); ; {
		a := ask("calc", "(2+6)*3")
		if a.Error && missing.MatchString(a.Text) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with calc missing the page shows %v, want an error naming calc", a)
		}
	}
	pagetest.Screenshot(t, page, "portal.png")
}
