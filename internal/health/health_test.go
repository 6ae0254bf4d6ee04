package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/metricstest"
)

// serve starts an HTTP server on 127.0.0.1 and returns its address.
func serve(t *testing.T, h http.HandlerFunc) netip.AddrPort {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(ts.URL, "http://"))
}

// closedPort is a loopback port nobody listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return ap
}

func TestProbe(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1") // a check must never use a proxy
	var gotPath atomic.Value
	ok := serve(t, func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	})
	failing := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database down\x00\n"+strings.Repeat("x", 2000), http.StatusInternalServerError)
	})
	slow := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	redirect := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	closed := closedPort(t)
	spec := func(k Kind, path string) Spec {
		return Spec{Kind: k, Path: path, Interval: time.Second, Timeout: 300 * time.Millisecond}
	}
	cases := []struct {
		name string
		spec Spec
		addr netip.AddrPort
		ok   bool
		out  string
	}{
		{"http 204", spec(HTTP, ""), ok, true, "HTTP 204"},
		{"http custom path", spec(HTTP, "/ready"), ok, true, "HTTP 204"},
		{"http 500", spec(HTTP, "/health"), failing, false, "HTTP 500 Internal Server Error: database down"},
		{"http slow", spec(HTTP, "/health"), slow, false, "timeout"},
		{"http closed port", spec(HTTP, "/health"), closed, false, "connection refused"},
		{"http redirect not followed", spec(HTTP, "/health"), redirect, false, "HTTP 302 Found (redirect to /elsewhere, not followed)"},
		{"tcp open", spec(TCP, ""), ok, true, "ok"},
		{"tcp closed", spec(TCP, ""), closed, false, "connection refused"},
		{"tcp accept then close (a proxy with nothing behind)", spec(TCP, ""), closer(t), false, "closed by the peer at once"},
		{"tcp greeting", spec(TCP, ""), greeter(t), true, "ok"},
		{"none", spec(None, ""), closed, true, "no check"},
	}
	var p Prober
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			r := p.Probe(context.Background(), c.spec, c.addr)
			if r.OK != c.ok || !strings.Contains(r.Output, c.out) {
				t.Errorf("Probe = ok %v, output %q; want ok %v, output containing %q", r.OK, r.Output, c.ok, c.out)
			}
			if len(r.Output) > MaxOutput {
				t.Errorf("output of %d bytes, want at most %d", len(r.Output), MaxOutput)
			}
			if strings.ContainsAny(r.Output, "\x00\n") {
				t.Errorf("output %q has control characters", r.Output)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("probe took %s, want it bounded by the timeout %s", d, c.spec.Timeout)
			}
		})
	}
	if p, _ := gotPath.Load().(string); p != "/ready" && p != "/health" {
		t.Errorf("path seen by the server: %q", p)
	}
}

func TestProbeDefaultPath(t *testing.T) {
	var got string
	var mu sync.Mutex
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL.Path
		mu.Unlock()
	})
	var p Prober
	if r := p.Probe(context.Background(), Spec{Kind: HTTP, Timeout: time.Second}, addr); !r.OK {
		t.Fatalf("probe failed: %s", r.Output)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != "/health" {
		t.Errorf("default path %q, want /health", got)
	}
}

func cfg(t testing.TB, failures, passes int) Config {
	t.Helper()
	c, err := Config{Failures: failures, Passes: passes, StartPeriod: time.Nanosecond}.WithDefaults()
	if err != nil {
		t.Fatalf("config with %d failures, %d passes: %v", failures, passes, err)
	}
	return c
}

// run feeds a tracker a sequence of results ('p' pass, 'f' fail) after its
// start period and returns the status after each.
func run(tr *Tracker, seq string) []string {
	at := time.Now().Add(time.Hour)
	var out []string
	for i, c := range seq {
		tr.Observe(Result{OK: c == 'p', At: at.Add(time.Duration(i) * time.Second)})
		out = append(out, tr.Status())
	}
	return out
}

func TestTrackerThresholds(t *testing.T) {
	cases := []struct {
		name             string
		failures, passes int
		seq              string
		want             string // status letters: P pending, + passing, - critical
	}{
		{"first pass serves", 3, 2, "p", "+"},
		{"pending stays pending until failures", 3, 2, "ffp", "PP+"},
		{"never passing goes critical after the start period", 3, 2, "fff", "PP-"},
		{"three failures in a row", 3, 2, "pffff", "+++--"},
		{"two passes bring it back", 3, 2, "pfffpp", "+++--+"},
		{"one pass is not enough", 3, 2, "pfffpfpp", "+++----+"},
		{"a pass resets the failure run", 3, 2, "pffpffpff", "+++++++++"},
		{"flapping never goes critical", 3, 2, "pfpfpfpfpfpfpfpf", "++++++++++++++++"},
		{"failures=1", 1, 1, "pfp", "+-+"},
	}
	letter := map[string]string{Pending: "P", Passing: "+", Critical: "-"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTracker(cfg(t, c.failures, c.passes), time.Now())
			var got strings.Builder
			for _, s := range run(tr, c.seq) {
				got.WriteString(letter[s])
			}
			if got.String() != c.want {
				t.Errorf("%s with failures=%d passes=%d: %s, want %s", c.seq, c.failures, c.passes, got.String(), c.want)
			}
		})
	}
}

func TestTrackerStartPeriod(t *testing.T) {
	start := time.Now()
	c := cfg(t, 3, 2)
	c.StartPeriod = 10 * time.Second
	tr := NewTracker(c, start)
	for i := 0; i < 20; i++ {
		tr.Observe(Result{At: start.Add(time.Duration(i) * 250 * time.Millisecond)})
	}
	if tr.Status() != Pending || tr.FailRun() != 0 {
		t.Fatalf("failures inside the start period: status %s, fail run %d; want pending, 0", tr.Status(), tr.FailRun())
	}
	if !tr.Starting(start.Add(time.Second)) || tr.Starting(start.Add(11*time.Second)) {
		t.Error("Starting should hold inside the start period only")
	}
	for i := 0; i < 3; i++ {
		tr.Observe(Result{At: start.Add(11*time.Second + time.Duration(i)*time.Second)})
	}
	if tr.Status() != Critical {
		t.Errorf("3 failures after the start period: %s, want critical", tr.Status())
	}
}

func TestParseSpec(t *testing.T) {
	def := Spec{Kind: TCP, Path: DefaultPath, Interval: 2 * time.Second, Timeout: time.Second}
	s := func(kv ...string) map[string]Setting {
		m := map[string]Setting{}
		for i := 0; i < len(kv); i += 2 {
			key := kv[i]
			v := "SERVICE_80_CHECK"
			if key != "" {
				v += "_" + strings.ToUpper(key)
			}
			m[key] = Setting{Var: v, Value: kv[i+1]}
		}
		return m
	}
	cases := []struct {
		name  string
		in    map[string]Setting
		want  Spec
		warns []string // variables warned about
	}{
		{"default", nil, def, nil},
		{"http path", s("http", "/ready"), Spec{HTTP, "/ready", 2 * time.Second, time.Second}, nil},
		{"http true", s("http", "true"), Spec{HTTP, "/health", 2 * time.Second, time.Second}, nil},
		{"http without slash", s("http", "health"), Spec{HTTP, "/health", 2 * time.Second, time.Second}, []string{"SERVICE_80_CHECK_HTTP"}},
		{"tcp", s("tcp", "true"), def, nil},
		{"tcp bad", s("tcp", "maybe"), def, []string{"SERVICE_80_CHECK_TCP"}},
		{"none", s("", "none"), Spec{None, "/health", 2 * time.Second, time.Second}, nil},
		{"none wins over http", s("", "none", "http", "/x"), Spec{None, "/x", 2 * time.Second, time.Second}, nil},
		{"check=http", s("", "http"), Spec{HTTP, "/health", 2 * time.Second, time.Second}, nil},
		{"check bad", s("", "script"), def, []string{"SERVICE_80_CHECK"}},
		{"interval", s("interval", "5s", "timeout", "3s"), Spec{TCP, "/health", 5 * time.Second, 3 * time.Second}, nil},
		{"interval seconds", s("interval", "7"), Spec{TCP, "/health", 7 * time.Second, time.Second}, nil},
		{"interval abc", s("interval", "abc"), def, []string{"SERVICE_80_CHECK_INTERVAL"}},
		{"interval 0", s("interval", "0"), def, []string{"SERVICE_80_CHECK_INTERVAL"}},
		{"interval too short", s("interval", "1ms"), def, []string{"SERVICE_80_CHECK_INTERVAL"}},
		{"timeout longer than interval", s("timeout", "5s"), def, []string{"SERVICE_80_CHECK_TIMEOUT"}},
		{"timeout 0", s("timeout", "0"), def, []string{"SERVICE_80_CHECK_TIMEOUT"}},
		{"short interval caps the default timeout", s("interval", "500ms"), Spec{TCP, "/health", 500 * time.Millisecond, 500 * time.Millisecond}, nil},
		{"unknown key", s("script", "curl"), def, []string{"SERVICE_80_CHECK_SCRIPT"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, warns := ParseSpec(def, c.in)
			if got != c.want {
				t.Errorf("spec %+v, want %+v", got, c.want)
			}
			var vars []string
			for _, w := range warns {
				vars = append(vars, w.Var)
				if w.Reason == "" {
					t.Errorf("warning about %s has no reason", w.Var)
				}
			}
			if strings.Join(vars, ",") != strings.Join(c.warns, ",") {
				t.Errorf("warnings about %v, want %v (%v)", vars, c.warns, warns)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != TCP || c.Interval != 2*time.Second || c.Timeout != time.Second || c.Failures != 3 || c.Passes != 2 {
		t.Errorf("defaults: %+v", c)
	}
	for _, bad := range []Config{{Kind: "ping"}, {Interval: time.Millisecond}, {Interval: time.Second, Timeout: 2 * time.Second}, {Failures: -1}, {Passes: -1}} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestCheckRun runs a real check against a server whose health the test
// flips: pending, then passing at the first probe, critical after three
// failures, passing after two passes, and counted in the metrics.
func TestCheckRun(t *testing.T) {
	var failing atomic.Bool
	addr := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		}
	})
	c, err := Config{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Failures: 3, Passes: 2, StartPeriod: time.Second}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	trs := make(chan Transition, 10)
	chk := NewCheck(c, Spec{Kind: HTTP, Path: "/health", Interval: c.Interval, Timeout: c.Timeout}, addr, m, func(tr Transition) { trs <- tr })
	if st, _ := chk.State(); st != Pending {
		t.Fatalf("new check is %s, want pending", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); chk.Run(ctx) }()
	defer func() { cancel(); <-done }()
	next := func(want string) Transition {
		t.Helper()
		select {
		case tr := <-trs:
			if tr.To != want {
				t.Fatalf("transition %s -> %s (%s), want to %s", tr.From, tr.To, tr.Result.Output, want)
			}
			return tr
		case <-time.After(10 * time.Second):
			t.Fatalf("no transition to %s", want)
		}
		return Transition{}
	}
	next(Passing)
	failing.Store(true)
	tr := next(Critical)
	if tr.Failures != 3 || !strings.Contains(tr.Result.Output, "503") {
		t.Errorf("critical after %d failures with output %q; want 3 and the 503", tr.Failures, tr.Result.Output)
	}
	failing.Store(false)
	next(Passing)
	if got := metricstest.Counter(t, reg, "signpost_health_transitions_total", "from", Passing, "to", Critical); got != 1 {
		t.Errorf("passing->critical counted %v times, want 1", got)
	}
	if got := metricstest.Counter(t, reg, "signpost_health_checks_total", "kind", "http", "result", "fail"); got < 3 {
		t.Errorf("failed checks counted %v, want at least 3", got)
	}
}

// TestCheckQuickStart: a check whose server starts listening late passes
// within a few quick retries, long before the interval.
func TestCheckQuickStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	c, _ := Config{Interval: 30 * time.Second, Timeout: time.Second}.WithDefaults()
	passed := make(chan time.Time, 1)
	chk := NewCheck(c, Spec{Kind: TCP, Interval: c.Interval, Timeout: c.Timeout}, addr, nil, func(tr Transition) {
		if tr.To == Passing {
			passed <- time.Now()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); chk.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(600 * time.Millisecond) // the container "starts" a while after its check
	l2, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer l2.Close()
	listening := time.Now()
	select {
	case at := <-passed:
		if d := at.Sub(listening); d > 5*time.Second {
			t.Errorf("passed %s after the port opened; the quick retries should find it within a few hundred ms", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never passed; the 30s interval was used instead of quick retries")
	}
}

// closer accepts connections and closes them at once, as Docker's userland
// proxy does when nothing listens in the container.
func closer(t *testing.T) netip.AddrPort {
	return listen(t, func(c net.Conn) { c.Close() })
}

// greeter speaks first, as SMTP or MySQL servers do.
func greeter(t *testing.T) netip.AddrPort {
	return listen(t, func(c net.Conn) {
		c.Write([]byte("220 hello\r\n"))
		time.Sleep(200 * time.Millisecond) // hold the connection past the settle time
		c.Close()
	})
}

func listen(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// TestBoundBlanksWhatTheRegistryRefuses: controls, bidirectional
// controls (which reorder what a terminal shows) and line separators are
// blanked, so that an output the agent reports is never refused.
func TestBoundBlanksWhatTheRegistryRefuses(t *testing.T) {
	got := Bound("ok\x1b[2J \u009b \u202eevil\u202c \u2066x\u2069 \u2028 שלום")
	if want := "ok [2J    evil   x    שלום"; got != want {
		t.Errorf("Bound = %q, want %q", got, want)
	}
}
