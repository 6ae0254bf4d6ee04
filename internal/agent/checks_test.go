package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/conventions"
	"github.com/signpost-dns/signpost/internal/health"
	"github.com/signpost-dns/signpost/internal/registry"
)

// TestEffectiveHealth checks how an instance's own check and its
// container's Docker HEALTHCHECK combine.
func TestEffectiveHealth(t *testing.T) {
	hc, _ := health.Config{Interval: time.Second, Timeout: 500 * time.Millisecond, StartPeriod: time.Nanosecond}.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{dockerHealth: map[string]dockerHealthState{}, checks: newChecks(hc, nil, slog.New(slog.DiscardHandler))}
	a.checks.start(ctx)
	defer func() { cancel(); a.checks.stop() }()

	// A passing own check: TCP against a listener that holds each
	// connection past the check's settle time.
	hp := holdingListener(t)
	passing := registry.Instance{ID: "passing", Address: hp.Addr(), Port: hp.Port()}
	a.checks.ensure(passing, health.Spec{Kind: health.TCP, Interval: time.Second, Timeout: 500 * time.Millisecond}, "c-own", "own", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if h, _ := a.checks.state("passing"); h.Status == registry.HealthPassing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the TCP check never passed")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition wait
	}
	// A pending own check: one that is never run (no context).
	pending := registry.Instance{ID: "pending", Address: hp.Addr(), Port: 1}
	a.checks.byID["pending"] = &runningCheck{chk: health.NewCheck(hc, health.Spec{Kind: health.TCP}, netip.AddrPortFrom(hp.Addr(), 1), nil, nil), cancel: func() {}}
	nocheck := registry.Instance{ID: "none"}

	cases := []struct {
		name   string
		in     registry.Instance
		docker string
		want   string
		out    string
	}{
		{"no check, no HEALTHCHECK", nocheck, "", registry.HealthPassing, ""},
		{"no check, HEALTHCHECK starting", nocheck, dockerStarting, registry.HealthPending, "starting"},
		{"no check, HEALTHCHECK healthy", nocheck, dockerHealthy, registry.HealthPassing, ""},
		{"no check, HEALTHCHECK unhealthy", nocheck, dockerUnhealthy, registry.HealthCritical, "docker HEALTHCHECK unhealthy: boom"},
		{"own pending, HEALTHCHECK healthy", pending, dockerHealthy, registry.HealthPending, ""},
		{"own passing, HEALTHCHECK starting", passing, dockerStarting, registry.HealthPassing, "ok"},
		{"own passing, HEALTHCHECK unhealthy", passing, dockerUnhealthy, registry.HealthCritical, "boom"},
		{"own pending, HEALTHCHECK unhealthy", pending, dockerUnhealthy, registry.HealthCritical, "boom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a.dockerHealth["cid"] = dockerHealthState{status: c.docker, output: "boom\n"}
			h := a.effectiveHealth(c.in, "cid")
			if h.Status != c.want || !strings.Contains(h.Output, c.out) {
				t.Errorf("health %+v, want %s with output containing %q", h, c.want, c.out)
			}
		})
	}
}

// TestCheckSpecNotes: bad check settings become notes naming the
// container and variable; udp ports get no check.
func TestCheckSpecNotes(t *testing.T) {
	hc, _ := health.Config{}.WithDefaults()
	a := &Agent{cfg: Config{Health: hc}}
	c := container{Name: "web-1"}
	p := conventions.Port{ContainerPort: conventions.ContainerPort{Port: 8081, Proto: "tcp"},
		Check: map[string]conventions.Setting{"interval": {Var: "SERVICE_8081_CHECK_INTERVAL", Value: "0"}, "http": {Var: "SERVICE_8081_CHECK_HTTP", Value: "/ready"}}}
	spec, notes := a.checkSpec(c, p)
	if spec.Kind != health.HTTP || spec.Path != "/ready" || spec.Interval != health.DefaultInterval {
		t.Errorf("spec %+v", spec)
	}
	if len(notes) != 1 || !strings.Contains(strings.Join(strings.Fields(strings.TrimSpace(fmtAttrs(notes[0].attrs))), " "), "web-1 variable SERVICE_8081_CHECK_INTERVAL") {
		t.Errorf("notes %+v, want one naming web-1 and SERVICE_8081_CHECK_INTERVAL", notes)
	}
	p.ContainerPort.Proto = "udp"
	p.Check = nil
	if spec, _ := a.checkSpec(c, p); spec.Kind != health.None {
		t.Errorf("udp port check %s, want none", spec.Kind)
	}
}

func fmtAttrs(attrs []any) string {
	var b strings.Builder
	for _, a := range attrs {
		if s, ok := a.(string); ok {
			b.WriteString(s + " ")
		}
	}
	return b.String()
}

// TestCarriedHealth checks which health a restarted agent carries into a
// new check, and that a carried passing check of an address that refuses
// connections stays passing through its first failures and goes critical
// only after Failures of them in a row.
func TestCarriedHealth(t *testing.T) {
	a := &Agent{}
	checked := time.Now().Add(-time.Minute)
	carry := map[string]registry.Health{
		"ok":      {Status: registry.HealthPassing, CheckedAt: checked},
		"bad":     {Status: registry.HealthCritical, CheckedAt: checked},
		"waiting": {Status: registry.HealthPending, CheckedAt: checked},
		"zone":    {Status: registry.HealthPassing}, // Route 53: no time
	}
	before := container{StartedAt: checked.Add(-time.Hour)}
	after := container{StartedAt: checked.Add(time.Second)}
	for _, c := range []struct {
		id   string
		c    container
		want string
	}{
		{"ok", before, registry.HealthPassing},
		{"bad", before, registry.HealthCritical},
		{"waiting", before, ""},
		{"unknown", before, ""},
		{"ok", after, ""}, // restarted while the agent was down
		{"zone", after, registry.HealthPassing},
	} {
		h := a.carried(c.c, registry.Instance{ID: c.id}, carry)
		got := ""
		if h != nil {
			got = h.Status
		}
		if got != c.want {
			t.Errorf("carried(%s, started %s after the check): %q, want %q", c.id, c.c.StartedAt.Sub(checked), got, c.want)
		}
	}

	hc, _ := health.Config{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Failures: 3, StartPeriod: time.Hour}.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	var logs strings.Builder
	cs := newChecks(hc, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	cs.start(ctx)
	defer func() { cancel(); cs.stop() }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	in := registry.Instance{ID: "ok", Address: closed.Addr(), Port: closed.Port()}
	h := carry["ok"]
	cs.ensure(in, hc.Default(), "cid", "web", &h)
	if st, _ := cs.state("ok"); st.Status != registry.HealthPassing || !st.CheckedAt.Equal(checked) {
		t.Fatalf("carried check starts %+v, want passing checked at %s", st, checked)
	}
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := cs.state("ok")
		if len(seen) == 0 || seen[len(seen)-1] != st.Status {
			seen = append(seen, st.Status)
		}
		if st.Status == registry.HealthCritical {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the carried check of a closed port never went critical: %v", seen)
		}
		time.Sleep(5 * time.Millisecond) // polling interval of a condition wait
	}
	if strings.Join(seen, ",") != "passing,critical" {
		t.Errorf("statuses seen: %v, want passing then critical (never pending)", seen)
	}
	cancel()
	cs.stop() // the log is complete
	if !strings.Contains(logs.String(), "to=critical") || !strings.Contains(logs.String(), "failures_in_a_row=3") ||
		!strings.Contains(logs.String(), "carried health kept until the thresholds say otherwise") {
		t.Errorf("want the first failure logged as carried, and critical after 3 failures in a row:\n%s", logs.String())
	}
}

// TestCarriedCriticalIsStoppedOnlyOnAFailure: an instance carried over a
// restart as critical whose first new probe passes is recovering, not
// failing: --stop-unhealthy must not stop its container (an agent
// restarted to turn --stop-unhealthy on would otherwise stop every
// container that was critical and has recovered). One whose first probe
// fails again is still reported critical.
func TestCarriedCriticalIsStoppedOnlyOnAFailure(t *testing.T) {
	hc, _ := health.Config{Interval: time.Second, Timeout: 500 * time.Millisecond, StartPeriod: time.Nanosecond}.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	cs := newChecks(hc, nil, slog.New(slog.DiscardHandler))
	cs.start(ctx)
	defer func() { cancel(); cs.stop() }()
	stops := make(chan string, 4)
	cs.critical = func(cid, _ string, _ registry.Instance, tr health.Transition) {
		stops <- cid + " ok=" + map[bool]string{true: "true", false: "false"}[tr.Result.OK]
	}

	hp := holdingListener(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	spec := health.Spec{Kind: health.TCP, Interval: time.Second, Timeout: 500 * time.Millisecond}
	crit := &registry.Health{Status: registry.HealthCritical, CheckedAt: time.Now().Add(-time.Minute), Output: "connection refused"}

	cs.ensure(registry.Instance{ID: "recovered", Address: hp.Addr(), Port: hp.Port()}, spec, "c-recovered", "recovered", crit)
	cs.ensure(registry.Instance{ID: "still-dead", Address: dead.Addr(), Port: dead.Port()}, spec, "c-dead", "dead", crit)
	// Wait for both first probes to have run.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h1, _ := cs.state("recovered")
		h2, _ := cs.state("still-dead")
		if !h1.CheckedAt.IsZero() && !h1.CheckedAt.Before(crit.CheckedAt.Add(time.Second)) &&
			!h2.CheckedAt.IsZero() && !h2.CheckedAt.Before(crit.CheckedAt.Add(time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first probes never ran")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition wait
	}
	if h, _ := cs.state("recovered"); h.Status != registry.HealthCritical {
		t.Fatalf("recovered: %s after one pass, want critical until %d passes", h.Status, hc.Passes)
	}
	// A check calls back before it schedules its next probe: once the
	// recovered one probed again, every callback of its first probe ran.
	first, _ := cs.state("recovered")
	deadline = time.Now().Add(10 * time.Second)
	for {
		if h, _ := cs.state("recovered"); h.CheckedAt.After(first.CheckedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recovered check never probed again")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition wait
	}
	var got []string
	for len(stops) > 0 {
		got = append(got, <-stops)
	}
	for _, g := range got {
		if strings.HasPrefix(g, "c-recovered") {
			t.Fatalf("reported critical: %v: a carried critical instance whose first probe passed must not be stopped", got)
		}
	}
	if len(got) != 1 || got[0] != "c-dead ok=false" {
		t.Fatalf("reported critical: %v, want the carried critical instance whose first probe failed again", got)
	}
}

// holdingListener listens on loopback until the test ends and holds each
// connection past a TCP check's settle time, so that the check passes.
func holdingListener(t *testing.T) netip.AddrPort {
	t.Helper()
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Close() })
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			go func() { time.Sleep(200 * time.Millisecond); c.Close() }() // hold the connection, not a wait
		}
	}()
	return netip.MustParseAddrPort(hold.Addr().String())
}
