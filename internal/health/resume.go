package health

// Resume makes the tracker start in a status an earlier run established
// (an agent that restarted carries the health the registry last held):
// Passing or Critical, with the start period over, and last as the last
// result. It returns false, changing nothing, for any other status.
func (t *Tracker) Resume(status string, last Result) bool {
	switch status {
	case Passing:
		t.everPassed = true
	case Critical:
	default:
		return false
	}
	t.status, t.last = status, last
	t.passRun, t.failRun = 0, 0
	t.lastChange = last.At
	return true
}

// Resume starts the check in a status carried from an earlier run (see
// Tracker.Resume): a passing instance stays passing while the first new
// probes run, and leaves only after Failures failures in a row. Call it
// before Run.
func (c *Check) Resume(status string, last Result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.Resume(status, last)
}
