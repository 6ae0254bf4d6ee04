package health

import "time"

// Tracker is the threshold state machine of one check (see the package
// doc). It is not safe for concurrent use.
type Tracker struct {
	failures, passes int
	startEnd         time.Time

	status     string
	passRun    int // passes in a row
	failRun    int // failures in a row that count
	everPassed bool
	last       Result
	lastChange time.Time
}

// NewTracker returns a pending tracker whose start period ends at start +
// cfg.StartPeriod. cfg must have its defaults filled.
func NewTracker(cfg Config, start time.Time) *Tracker {
	return &Tracker{failures: cfg.Failures, passes: cfg.Passes, startEnd: start.Add(cfg.StartPeriod), status: Pending, lastChange: start}
}

// Status is the current status: Pending, Passing or Critical.
func (t *Tracker) Status() string { return t.status }

// Last is the last probe's result.
func (t *Tracker) Last() Result { return t.last }

// Starting reports whether the check is still pending inside its start
// period, when probes are retried quickly.
func (t *Tracker) Starting(now time.Time) bool {
	return t.status == Pending && !t.everPassed && now.Before(t.startEnd)
}

// FailRun is the number of failures in a row that counted.
func (t *Tracker) FailRun() int { return t.failRun }

// Observe takes one probe's result and returns the status before it and
// whether the status changed.
func (t *Tracker) Observe(r Result) (from string, changed bool) {
	from = t.status
	t.last = r
	if r.OK {
		t.failRun = 0
		t.passRun++
		switch t.status {
		case Pending:
			t.status = Passing
		case Critical:
			if t.passRun >= t.passes {
				t.status = Passing
			}
		}
		t.everPassed = true
	} else {
		t.passRun = 0
		if t.status == Pending && !t.everPassed && r.At.Before(t.startEnd) {
			return from, false // failures while starting do not count
		}
		t.failRun++
		if t.status != Critical && t.failRun >= t.failures {
			t.status = Critical
		}
	}
	if t.status != from {
		t.lastChange = r.At
		return from, true
	}
	return from, false
}
