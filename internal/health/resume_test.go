package health

import (
	"testing"
	"time"
)

// TestTrackerResume checks that a carried status holds while the first new
// probes run: a resumed passing check stays passing through fewer than
// Failures failures, even inside what would be its start period, and a
// resumed critical one needs Passes passes.
func TestTrackerResume(t *testing.T) {
	start := time.Now()
	c := cfg(t, 3, 2)
	c.StartPeriod = time.Hour
	tr := NewTracker(c, start)
	if !tr.Resume(Passing, Result{OK: true, At: start.Add(-time.Minute), Output: "carried"}) {
		t.Fatal("Resume(passing) refused")
	}
	if tr.Status() != Passing || tr.Starting(start) || tr.Last().Output != "carried" {
		t.Fatalf("after Resume(passing): status %s, starting %v, last %+v", tr.Status(), tr.Starting(start), tr.Last())
	}
	var got []string
	for i := 0; i < 3; i++ {
		tr.Observe(Result{At: start.Add(time.Duration(i) * time.Second)})
		got = append(got, tr.Status())
	}
	if got[0] != Passing || got[1] != Passing || got[2] != Critical {
		t.Errorf("resumed passing, then 3 failures inside the start period: %v, want passing, passing, critical", got)
	}

	tr = NewTracker(c, start)
	tr.Resume(Critical, Result{At: start})
	tr.Observe(Result{OK: true, At: start.Add(time.Second)})
	if tr.Status() != Critical {
		t.Errorf("resumed critical after one pass: %s, want critical until 2 passes", tr.Status())
	}
	tr.Observe(Result{OK: true, At: start.Add(2 * time.Second)})
	if tr.Status() != Passing {
		t.Errorf("resumed critical after two passes: %s, want passing", tr.Status())
	}

	tr = NewTracker(c, start)
	if tr.Resume(Pending, Result{}) || tr.Resume("bogus", Result{}) || tr.Status() != Pending || !tr.Starting(start) {
		t.Errorf("Resume of pending or an unknown status must change nothing: status %s", tr.Status())
	}
}
