package httpguard

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHosts(t *testing.T) {
	h := newHosts("signpost.internal:8080", []string{"api.example.com", "*.corp.example", " Other.Example. "})
	cases := map[string]bool{
		"127.0.0.1:8080":           true,
		"10.1.2.3":                 true,
		"[::1]:8080":               true,
		"localhost:8080":           true,
		"LOCALHOST":                true,
		"app.localhost":            true,
		"signpost.internal":        true,
		"api.example.com:443":      true,
		"x.corp.example":           true,
		"corp.example":             false,
		"other.example":            true,
		"attacker.example":         false,
		"localhost.attacker.com":   false,
		"api.example.com.evil.com": false,
		"":                         false,
		"127.0.0.1.nip.io":         false,
	}
	for host, want := range cases {
		if got := h.allows(host); got != want {
			t.Errorf("Host %q: allowed=%v, want %v", host, got, want)
		}
	}
	if !newHosts("", []string{"*"}).allows("anything.example") {
		t.Error(`"*" does not allow every Host`)
	}
}

func TestCheckContentType(t *testing.T) {
	cases := []struct {
		method, ct, body string
		ok               bool
	}{
		{"PUT", "application/json", "{}", true},
		{"PUT", "Application/JSON; charset=utf-8", "{}", true},
		{"PUT", "", "{}", false},
		{"PUT", "text/plain", "{}", false},
		{"PUT", "application/jsonp", "{}", false},
		{"POST", "", "", false},
		{"POST", "multipart/form-data; boundary=x", "", false},
		{"DELETE", "", "", true},
		{"DELETE", "", "{}", false},
		{"DELETE", "text/plain", "", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "/v1/x", strings.NewReader(c.body))
		if c.ct != "" {
			r.Header.Set("Content-Type", c.ct)
		}
		if err := checkContentType(r); (err == nil) != c.ok {
			t.Errorf("%s with %q and body %q: err=%v, want ok=%v", c.method, c.ct, c.body, err, c.ok)
		}
	}
}

func TestBearer(t *testing.T) {
	cases := map[string]string{
		"Bearer abc":       "abc",
		"bearer abc":       "abc",
		"BEARER  abc ":     "abc",
		" Bearer abc":      "abc",
		"Basic abc":        "",
		"Bearerabc":        "",
		"":                 "",
		"Bearer":           "",
		"Token Bearer abc": "",
	}
	for h, want := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h)
		if got, _ := bearer(r); got != want {
			t.Errorf("Authorization %q: token %q, want %q", h, got, want)
		}
	}
}

// TestConnLimiterEvictsOldestIdle: at the total, the oldest idle
// connection gives way; a busy one never does; a client over its share
// is closed at once.
func TestConnLimiterEvictsOldestIdle(t *testing.T) {
	g, err := New(Config{Limits: Limits{MaxConns: 2, MaxConnsPerClient: 2}, Classify: func(*http.Request) Kind { return Read }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConnLimiter(ln, g)
	dialFrom := func(last byte) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	accept := func() *trackedConn {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c.(*trackedConn)
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		ne, ok := err.(net.Error)
		return err != nil && !(ok && ne.Timeout())
	}
	c1 := dialFrom(2)
	a1 := accept()
	l.connState(a1, http.StateActive) // busy
	c2 := dialFrom(3)
	a2 := accept() // new: counts as idle since it was accepted
	_ = a2
	c3 := dialFrom(4)
	a3 := accept() // at the total: the idle c2 gives way, not the busy c1
	if !closed(c2) {
		t.Fatal("the oldest idle connection was not closed for a new one")
	}
	l.connState(a3, http.StateActive)
	// Every connection is busy: a new one is closed.
	c4 := dialFrom(5)
	c5 := dialFrom(4)
	go func() { _, _ = l.Accept() }()
	if !closed(c4) || !closed(c5) {
		t.Fatal("a connection beyond the total, with none idle, was not closed")
	}
	_ = c1.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c1.Read(make([]byte, 1)); err == nil || !err.(net.Error).Timeout() {
		t.Fatalf("the busy connection was closed: %v", err)
	}
	_ = c3
	l.mu.Lock()
	n := len(l.conns)
	l.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d connections counted, want 2", n)
	}
}

func TestClientIP(t *testing.T) {
	cases := map[string]string{
		"10.0.0.1:5353":              "10.0.0.1",
		"[::ffff:10.0.0.1]:80":       "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2::ff]:443":     "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":          "fe80::/64",
		"not an address":             "not an address",
	}
	for in, want := range cases {
		if got := clientIP(in); got != want {
			t.Errorf("clientIP(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLimitsFloors: the bodies in flight, in all and per client, hold at
// least one largest node set, whatever the flags say: a smaller budget
// would answer every large node set 503 (Retry-After: 1) forever.
func TestLimitsFloors(t *testing.T) {
	for _, l := range []Limits{
		{NodeSetBody: 1 << 20, BodiesInFlight: 1000},
		{NodeSetBody: 1 << 20, BodiesInFlight: 1000, BodiesInFlightPerClient: 10},
		{NodeSetBody: 1 << 20, BodiesInFlightPerClient: 10},
	} {
		got := l.withDefaults()
		if got.BodiesInFlight < got.NodeSetBody || got.BodiesInFlightPerClient < got.NodeSetBody {
			t.Errorf("%+v: bodies in flight %d, per client %d, below the node set limit %d", l, got.BodiesInFlight, got.BodiesInFlightPerClient, got.NodeSetBody)
		}
	}
}
