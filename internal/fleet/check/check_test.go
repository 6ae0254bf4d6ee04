package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

const ms = int64(time.Millisecond)

// clean is a small run that keeps every promise: a and b registered, a
// deregistered, a read, DNS answers and a watch that follow, and a node
// whose lease runs out 3.1 s after its last heartbeat.
func clean() *history.History {
	return &history.History{
		Bounds: history.Bounds{TTL: 3 * time.Second, ExpiryLate: 5 * time.Second, Converge: time.Second, Stale: time.Second, StaleTTL: 4 * time.Second, ConvergeSaid: 3 * time.Second},
		End:    6000 * ms,
		Truth: []history.Change{
			{Rev: 1, ID: "a", Service: "calc", Addr: "10.0.0.1:1", Serving: true, At: 100 * ms},
			{Rev: 2, ID: "b", Service: "calc", Addr: "10.0.0.2:1", Serving: true, At: 200 * ms},
			{Rev: 3, ID: "a", Service: "calc", Addr: "10.0.0.1:1", Deleted: true, At: 300 * ms},
			{Rev: 4, ID: "n1-x", Service: "time", Node: "n1", Addr: "10.0.1.1:1", Serving: true, At: 400 * ms},
			{Rev: 5, ID: "n1-x", Service: "time", Node: "n1", Addr: "10.0.1.1:1", Deleted: true, Expired: true, At: 5100 * ms},
		},
		Ops: []history.Op{
			{Client: "w1", Server: "s1", Kind: history.Register, Service: "calc", ID: "a", Addr: "10.0.0.1:1", Invoke: 50 * ms, Return: 110 * ms, Outcome: history.OK, Rev: 1},
			{Client: "w2", Server: "s2", Kind: history.Register, Service: "calc", ID: "b", Addr: "10.0.0.2:1", Invoke: 90 * ms, Return: 210 * ms, Outcome: history.OK, Rev: 2},
			{Client: "w1", Server: "s1", Kind: history.Deregister, Service: "calc", ID: "a", Invoke: 250 * ms, Return: 310 * ms, Outcome: history.OK, Rev: 3},
			{Client: "w1", Server: "s1", Kind: history.Register, Service: "calc", ID: "z", Invoke: 260 * ms, Return: 270 * ms, Outcome: history.Failed, Err: "413"},
			{Client: "reader-s1", Server: "s1", Kind: history.Read, Service: "calc", IDs: []string{"b"}, Invoke: 400 * ms, Return: 410 * ms, Outcome: history.OK, Rev: 3},
			{Client: "n1", Node: "n1", Kind: history.NodeSet, IDs: []string{"n1-x"}, Invoke: 350 * ms, Return: 420 * ms, Outcome: history.OK, Server: "s1"},
			{Client: "n1", Node: "n1", Kind: history.Heartbeat, Invoke: 1000 * ms, Return: 1050 * ms, Outcome: history.OK, Server: "s1"},
			{Client: "n1", Node: "n1", Kind: history.Heartbeat, Invoke: 2000 * ms, Return: 2050 * ms, Outcome: history.OK, Server: "s1"},
		},
		DNS: []history.DNSAnswer{
			{Server: "s1", Service: "calc", Sent: 500 * ms, Got: 501 * ms, Targets: []string{"10.0.0.2:1"}, MinTTL: 5},
			{Server: "s1", Service: "calc", Sent: 2000 * ms, Got: 2001 * ms, Targets: []string{"10.0.0.2:1"}, MinTTL: 5},
		},
		Watches: []history.WatchEvent{
			{Stream: "w", Server: "s1", Service: "calc", Index: 1, IDs: []string{"a"}, Got: 120 * ms},
			{Stream: "w", Server: "s1", Service: "calc", Index: 2, IDs: []string{"a", "b"}, Got: 220 * ms},
			{Stream: "w", Server: "s1", Service: "calc", Index: 3, IDs: []string{"b"}, Got: 320 * ms},
			{Stream: "w", Server: "s1", Service: "time", Index: 4, IDs: []string{"n1-x"}, Got: 420 * ms},
			{Stream: "w", Server: "s1", Service: "time", Index: 5, Got: 5120 * ms},
		},
		Streams: []history.WatchStream{{Stream: "w", Server: "s1"}},
		Servers: []string{"s1", "s2"},
	}
}

func run(t *testing.T, h *history.History) *Report {
	t.Helper()
	r, err := Check(h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCleanRunPasses(t *testing.T) {
	r := run(t, clean())
	if !r.OK() {
		t.Fatalf("a run that keeps every promise was found to break some:\n%s", r)
	}
	for _, k := range []string{"writes", "reads", "DNS answers", "watch events", "lease expiries", "deleted instances"} {
		if r.Checked[k] == 0 {
			t.Errorf("checked no %s: %v", k, r.Checked)
		}
	}
}

// Each broken promise is found by its check, and named in the report.
func TestViolationsFound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		check  int
		word   string
		break_ func(h *history.History)
	}{
		{"lost register", 2, "not in the store's history", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "w1", Server: "s2", Kind: history.Register, Service: "calc", ID: "c", Invoke: 600 * ms, Return: 650 * ms, Outcome: history.OK, Rev: 6})
		}},
		{"lost deregister", 2, "still there", func(h *history.History) {
			h.Truth = append(h.Truth[:2], h.Truth[3:]...)
			h.Watches = h.Watches[:2]
			h.Ops[4].IDs = []string{"a", "b"}
		}},
		{"deregister acknowledged after an earlier delete", 2, "before the request", func(h *history.History) {
			h.Ops[2].Invoke, h.Ops[2].Return, h.Ops[2].Rev = 1000*ms, 1010*ms, 4
		}},
		{"refused register applied", 2, "refused", func(h *history.History) {
			h.Truth = append(h.Truth, history.Change{Rev: 6, ID: "z", Service: "calc", Addr: "10.0.0.9:1", Serving: true, At: 700 * ms})
		}},
		{"lost node set", 2, "never held that set", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "n1", Node: "n1", Kind: history.NodeSet, IDs: []string{"n1-x", "n1-y"}, Invoke: 800 * ms, Return: 900 * ms, Outcome: history.OK})
		}},
		{"writes out of order", 1, "before it was invoked", func(h *history.History) {
			// b is invoked after a's deregister returned revision 3, yet
			// gets revision 2.
			h.Ops[1].Invoke, h.Ops[1].Return = 320*ms, 330*ms
		}},
		{"a deregister finds nothing of what is there", 1, "porcupine", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "w2", Server: "s2", Kind: history.Deregister, Service: "calc", ID: "b", Invoke: 600 * ms, Return: 610 * ms, Outcome: history.Failed, Status: 404})
		}},
		{"read of no revision", 1, "at that revision", func(h *history.History) {
			h.Ops[4].IDs = []string{"a", "b"}
		}},
		{"read goes back", 1, "had returned revision", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "reader-s1", Server: "s1", Kind: history.Read, Service: "calc", IDs: []string{"a", "b"}, Invoke: 450 * ms, Return: 460 * ms, Outcome: history.OK, Rev: 2})
		}},
		{"read misses own write", 1, "had acknowledged", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "reader-s1", Server: "s1", Kind: history.Read, Service: "calc", IDs: []string{"a"}, Invoke: 320 * ms, Return: 330 * ms, Outcome: history.OK, Rev: 1})
		}},
		{"stale read", 1, "replaced", func(h *history.History) {
			h.Ops = append(h.Ops, history.Op{Client: "reader-s2", Server: "s2", Kind: history.Read, Service: "calc", IDs: []string{"a", "b"}, Invoke: 2500 * ms, Return: 2510 * ms, Outcome: history.OK, Rev: 2})
		}},
		{"resurrected in a read", 3, "deleted at revision 3", func(h *history.History) {
			h.Ops[4].IDs = []string{"a", "b"}
		}},
		{"put again after delete", 3, "put again", func(h *history.History) {
			h.Truth = append(h.Truth, history.Change{Rev: 6, ID: "a", Service: "calc", Addr: "10.0.0.1:1", Serving: true, At: 700 * ms})
		}},
		{"resurrected in DNS", 3, "deleted at revision 3", func(h *history.History) {
			h.DNS[1].Targets = []string{"10.0.0.1:1", "10.0.0.2:1"}
		}},
		{"lease early", 4, "after its heartbeat", func(h *history.History) {
			// A write invoked at 2.95 s committed before the expiry, seen
			// by 3 s: 1 s after the last heartbeat was sent.
			h.Truth[4].At, h.Truth[4].Rev = 3000*ms, 6
			h.Watches[4].Got, h.Watches[4].Index = 3010*ms, 6
			h.Truth = append(h.Truth, history.Change{Rev: 5, ID: "c", Service: "calc", Addr: "10.0.0.3:1", Serving: true, At: 2990 * ms})
			h.Ops = append(h.Ops, history.Op{Client: "w1", Server: "s1", Kind: history.Register, Service: "calc", ID: "c", Addr: "10.0.0.3:1", Invoke: 2950 * ms, Return: 2990 * ms, Outcome: history.OK, Rev: 5})
		}},
		{"lease late", 4, "may have landed", func(h *history.History) {
			// Certainly committed after an acknowledged write invoked at
			// 11 s: 9 s after the last heartbeat.
			h.Truth[4].At = 11100 * ms
			h.Watches = h.Watches[:4]
			h.Truth = append(h.Truth, history.Change{Rev: 6, ID: "c", Service: "calc", Addr: "10.0.0.3:1", Serving: true, At: 11050 * ms})
			h.Truth[4].Rev = 7
			h.Ops = append(h.Ops, history.Op{Client: "w1", Server: "s1", Kind: history.Register, Service: "calc", ID: "c", Addr: "10.0.0.3:1", Invoke: 11000 * ms, Return: 11060 * ms, Outcome: history.OK, Rev: 6})
			h.End = 12000 * ms
		}},
		{"lease outlived", 4, "did not expire", func(h *history.History) {
			// A heartbeat 9 s after the one before, the node's instances
			// never expired.
			h.Truth = h.Truth[:4]
			h.Watches = h.Watches[:4]
			h.Ops = append(h.Ops, history.Op{Client: "n1", Node: "n1", Kind: history.Heartbeat, Invoke: 11000 * ms, Return: 11050 * ms, Outcome: history.OK, Server: "s1"})
		}},
		{"DNS of no revision", 5, "at no revision", func(h *history.History) {
			h.DNS[0].Targets = []string{"10.0.0.7:1"}
		}},
		{"DNS goes back", 5, "went back", func(h *history.History) {
			h.DNS = append(h.DNS, history.DNSAnswer{Server: "s1", Service: "calc", Sent: 2100 * ms, Got: 2101 * ms, Targets: []string{"10.0.0.1:1"}, MinTTL: 1})
		}},
		{"stale DNS", 5, "bound is", func(h *history.History) {
			h.DNS = []history.DNSAnswer{{Server: "s2", Service: "calc", Sent: 1500 * ms, Got: 1501 * ms, Targets: []string{"10.0.0.1:1", "10.0.0.2:1"}, MinTTL: 5}}
		}},
		{"stale said with no fault", 5, "no fault touching it", func(h *history.History) {
			h.DNS = []history.DNSAnswer{{Server: "s2", Service: "calc", Sent: 1500 * ms, Got: 1501 * ms, Targets: []string{"10.0.0.1:1", "10.0.0.2:1"}, MinTTL: 1}}
		}},
		{"SERVFAIL with no fault", 5, "SERVFAIL", func(h *history.History) {
			h.DNS = []history.DNSAnswer{{Server: "s2", Service: "calc", Sent: 1500 * ms, Got: 1501 * ms, Rcode: 2}}
		}},
		{"X-Signpost-Stale with no fault", 1, "X-Signpost-Stale", func(h *history.History) {
			h.Ops[4].Stale = true
		}},
		{"read silently stale in a fault", 1, "without X-Signpost-Stale", func(h *history.History) {
			h.Faults = []history.Fault{{Kind: "cut-server-etcd", Target: "s2", Start: 250 * ms, End: 6000 * ms}}
			h.Ops = append(h.Ops, history.Op{Client: "reader-s2", Server: "s2", Kind: history.Read, Service: "calc", IDs: []string{"a", "b"}, Invoke: 5000 * ms, Return: 5010 * ms, Outcome: history.OK, Rev: 2})
		}},
		{"stale DNS with a long TTL", 5, "TTL 5", func(h *history.History) {
			h.Faults = []history.Fault{{Kind: "cut-server-etcd", Target: "s2", Start: 250 * ms, End: 6000 * ms}}
			h.DNS = []history.DNSAnswer{{Server: "s2", Service: "calc", Sent: 5000 * ms, Got: 5001 * ms, Targets: []string{"10.0.0.1:1", "10.0.0.2:1"}, MinTTL: 5}}
		}},
		{"NXDOMAIN for a service that exists", 5, "NXDOMAIN", func(h *history.History) {
			h.DNS[1].Rcode, h.DNS[1].Targets = 3, nil
		}},
		{"watch event twice", 6, "again", func(h *history.History) {
			h.Watches = append(h.Watches, history.WatchEvent{Stream: "w", Server: "s1", Service: "calc", Index: 3, IDs: []string{"b"}, Got: 330 * ms})
		}},
		{"watch out of order", 6, "after revision", func(h *history.History) {
			h.Watches[1].Got, h.Watches[2].Got = 320*ms, 220*ms
		}},
		{"watch event of no revision", 6, "at that revision", func(h *history.History) {
			h.Watches[1].IDs = []string{"b"}
		}},
		{"watch ends short", 6, "last sent", func(h *history.History) {
			h.Watches = h.Watches[:4]
			h.End = 7000 * ms
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := clean()
			tc.break_(h)
			r := run(t, h)
			if !r.Has(tc.check) {
				t.Fatalf("check %d did not find it:\n%s", tc.check, r)
			}
			if !strings.Contains(r.String(), tc.word) {
				t.Errorf("report does not say %q:\n%s", tc.word, r)
			}
		})
	}
}

// A fault on a server excuses its staleness (until Converge after the
// heal), not another server's.
func TestFaultExcusesOnlyItsServer(t *testing.T) {
	h := clean()
	h.Faults = []history.Fault{{Kind: "cut-server-etcd", Target: "s2", Start: 250 * ms, End: 1000 * ms}}
	h.DNS = []history.DNSAnswer{{Server: "s2", Service: "calc", Sent: 1800 * ms, Got: 1801 * ms, Targets: []string{"10.0.0.1:1", "10.0.0.2:1"}, MinTTL: 5}}
	if r := run(t, h); !r.OK() {
		t.Fatalf("an answer within Converge of the heal was found stale:\n%s", r)
	}
	h.DNS[0].Sent, h.DNS[0].Got = 2100*ms, 2101*ms
	if r := run(t, h); !r.Has(5) {
		t.Fatalf("an answer 1.1 s after Converge ended was not found stale:\n%s", r)
	}
	h.DNS[0].Server = "s1"
	h.DNS[0].Sent, h.DNS[0].Got = 1800*ms, 1801*ms
	if r := run(t, h); !r.Has(5) {
		t.Fatalf("s2's fault excused s1:\n%s", r)
	}
	// A server that says it is stale (TTL 1) within ConvergeSaid of the
	// heal, and a read that says so, keep the promise.
	h.Bounds.ConvergeSaid = 3 * time.Second
	h.DNS[0].Server, h.DNS[0].MinTTL = "s2", 1
	h.DNS[0].Sent, h.DNS[0].Got = 3500*ms, 3501*ms
	h.Ops = append(h.Ops, history.Op{Client: "reader-s2", Server: "s2", Kind: history.Read, Service: "calc", IDs: []string{"a", "b"}, Invoke: 3500 * ms, Return: 3510 * ms, Outcome: history.OK, Rev: 2, Stale: true})
	if r := run(t, h); !r.OK() {
		t.Fatalf("answers that say they may be stale, within ConvergeSaid of the heal, were found wanting:\n%s", r)
	}
}

// A deregister retried after an attempt that etcd applied is acknowledged
// at a later revision: not a lost write.
func TestRetriedDeregister(t *testing.T) {
	h := clean()
	h.Ops[2].Rev, h.Ops[2].Return = 4, 420*ms
	// Its server's read of calc after it reports calc's revision, the
	// delete's (3), not the answer's (4).
	h.Ops = append(h.Ops, history.Op{Client: "reader-s1", Server: "s1", Kind: history.Read, Service: "calc", IDs: []string{"b"}, Invoke: 430 * ms, Return: 440 * ms, Outcome: history.OK, Rev: 3})
	if r := run(t, h); !r.OK() {
		t.Fatalf("a retried deregister was taken for a lost write:\n%s", r)
	}
}

// An instance whose lease ran out is put again by its node when it syncs:
// that is no resurrection.
func TestExpiredPutAgainByItsNode(t *testing.T) {
	h := clean()
	h.Truth = append(h.Truth, history.Change{Rev: 6, ID: "n1-x", Service: "time", Node: "n1", Addr: "10.0.1.1:1", Serving: true, At: 5500 * ms})
	h.Watches = append(h.Watches, history.WatchEvent{Stream: "w", Server: "s1", Service: "time", Index: 6, IDs: []string{"n1-x"}, Got: 5520 * ms})
	h.Ops = append(h.Ops, history.Op{Client: "n1", Node: "n1", Kind: history.NodeSet, IDs: []string{"n1-x"}, Invoke: 5400 * ms, Return: 5510 * ms, Outcome: history.OK, Server: "s1"})
	if r := run(t, h); !r.OK() {
		t.Fatalf("a node's instance put again after its lease ran out was taken for a resurrection:\n%s", r)
	}
	// Deregistered, then put again: that is one.
	h.Truth[4].Expired = false
	if r := run(t, h); !r.Has(3) {
		t.Fatalf("an instance deleted and put again was not found:\n%s", r)
	}
}

// A history porcupine cannot linearize leaves its visualisation and the
// report beside it.
func TestNotLinearizableLeavesItsVisualisation(t *testing.T) {
	h := clean()
	h.Ops = append(h.Ops, history.Op{Client: "w2", Server: "s2", Kind: history.Deregister, Service: "calc", ID: "b", Invoke: 600 * ms, Return: 610 * ms, Outcome: history.Failed, Status: 404})
	dir := t.TempDir()
	r, err := Check(h, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Has(1) || !strings.Contains(r.String(), "linearizability.html") {
		t.Fatalf("report does not point at the visualisation:\n%s", r)
	}
	for _, f := range []string{"linearizability.html", "report.txt", "report.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
