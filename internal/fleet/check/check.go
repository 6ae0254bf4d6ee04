// Package check reads a whole fleet run (internal/fleet/history) and says
// where it broke a promise of docs/guarantees.md.
//
// The store's own history (etcd's events, with their revisions) is the
// ground truth: every acknowledged write names its revision, so the
// revisions give every write a place in one total order, and each check
// compares what clients saw with the store's state at a revision. No
// clock of the store is known, so the times of revisions are bounded from
// both sides by what clients observed (see model.knownBy and
// model.after): a check reports a violation only when those bounds prove
// it, never on a guess.
//
// The checks, numbered as in docs/guarantees.md:
//
//  1. writes and reads: the writers' registers and deregisters are
//     linearizable (porcupine, against a model of the registry, unknown
//     outcomes resolved from the store's history), and the real-time
//     order of acknowledged writes agrees with their revisions; a read equals the store's state
//     of its service at the revision it reports; a server's reads never go
//     back; a read reflects every write its server acknowledged before it
//     was sent, and is at most Bounds.Stale old unless a fault touches its
//     server (until Bounds.Converge after the heal).
//  2. no lost write: every acknowledged register, deregister and node set
//     is in the store's history; a refused register is not.
//  3. nothing resurrected: an instance once deleted is never put again,
//     and no read, watch event or (outside faults) DNS answer holds it
//     after its deletion.
//  4. leases: a node's instances never expire before its last
//     acknowledged heartbeat (its invoke) plus the TTL, and expire no
//     later than its last possible renewal (its return) plus the TTL plus
//     Bounds.ExpiryLate; a node silent for longer loses them.
//  5. DNS: every answer equals the serving instances of its service at
//     some revision, a server's answers never go back, are at most
//     Bounds.Stale old outside faults, carry a TTL of at most 1 s when
//     older than Bounds.StaleTTL, and NXDOMAIN is never answered for a
//     service that exists.
//  6. watches: each stream's events come in rising revisions per service
//     (until a reset), each equals the service at its revision, and a
//     stream that ran to the end ends on the store's state.
package check

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// Options tune a check run.
type Options struct {
	// Dir, when set, receives report.txt and report.json, and
	// linearizability.html (porcupine's visualisation) when check 1's
	// porcupine half fails.
	Dir string
	// Slack is added to every time bound, for the scheduling of the
	// harness's own goroutines (default 50 ms).
	Slack int64
	// MaxPerCheck is how many violations of one check String shows
	// (default 10); all are kept in Violations.
	MaxPerCheck int
}

// Violation is one broken promise.
type Violation struct {
	Check int    `json:"check"`
	Name  string `json:"name"`
	// At is the time in the run it concerns (ns since the start).
	At  int64  `json:"at"`
	Msg string `json:"msg"`
}

func (v Violation) String() string {
	return fmt.Sprintf("check %d (%s) at %s: %s", v.Check, v.Name, secs(v.At), v.Msg)
}

// Report is what a check run found.
type Report struct {
	Violations []Violation `json:"violations"`
	// Checked counts what each check looked at, so that a run that
	// checked nothing is seen.
	Checked map[string]int `json:"checked"`
	max     int
}

// OK reports whether no promise was broken.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Has reports whether check n found a violation.
func (r *Report) Has(n int) bool {
	for _, v := range r.Violations {
		if v.Check == n {
			return true
		}
	}
	return false
}

// String is the report for a person: what was checked, then the first
// violations of each check.
func (r *Report) String() string {
	var b strings.Builder
	var keys []string
	for k := range r.Checked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("checked:")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, r.Checked[k])
	}
	b.WriteString("\n")
	if r.OK() {
		b.WriteString("no violations\n")
		return b.String()
	}
	shown := map[int]int{}
	total := map[int]int{}
	for _, v := range r.Violations {
		total[v.Check]++
	}
	fmt.Fprintf(&b, "%d violations\n", len(r.Violations))
	for _, v := range r.Violations {
		if shown[v.Check] < r.max {
			b.WriteString(v.String())
			b.WriteString("\n")
		} else if shown[v.Check] == r.max {
			fmt.Fprintf(&b, "check %d: %d more\n", v.Check, total[v.Check]-r.max)
		}
		shown[v.Check]++
	}
	return b.String()
}

func (r *Report) add(check int, name string, at int64, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Check: check, Name: name, At: at, Msg: fmt.Sprintf(format, args...)})
}

// Check runs every check on h.
func Check(h *history.History, opts Options) (*Report, error) {
	if opts.Slack == 0 {
		opts.Slack = int64(50e6)
	}
	if opts.MaxPerCheck == 0 {
		opts.MaxPerCheck = 10
	}
	m := newModel(h, opts.Slack)
	r := &Report{Checked: map[string]int{}, max: opts.MaxPerCheck}
	checkWrites(m, r)
	checkLinearizable(m, r, opts.Dir)
	checkReads(m, r)
	checkLost(m, r)
	checkResurrected(m, r)
	checkLeases(m, r)
	checkDNS(m, r)
	checkWatches(m, r)
	sort.SliceStable(r.Violations, func(i, j int) bool {
		if r.Violations[i].Check != r.Violations[j].Check {
			return r.Violations[i].Check < r.Violations[j].Check
		}
		return r.Violations[i].At < r.Violations[j].At
	})
	if opts.Dir != "" {
		if err := r.save(opts.Dir); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (r *Report) save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("check report dir %q: %w", dir, err)
	}
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("encode check report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return fmt.Errorf("write check report: %w", err)
	}
	var all strings.Builder
	all.WriteString(r.String())
	if !r.OK() {
		all.WriteString("\nall violations:\n")
		for _, v := range r.Violations {
			all.WriteString(v.String())
			all.WriteString("\n")
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte(all.String()), 0o644); err != nil {
		return fmt.Errorf("write check report: %w", err)
	}
	return nil
}

// secs shows a run time as seconds since the start.
func secs(t int64) string { return fmt.Sprintf("%.3fs", float64(t)/1e9) }
