package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// TestParseServers: a list comes comma-separated or as several values;
// a bad URL, one given twice or none at all is an error naming it.
func TestParseServers(t *testing.T) {
	got, err := apiclient.ParseServers("http://a:8080, http://b:8080", "https://c")
	if err != nil || strings.Join(got, " ") != "http://a:8080 http://b:8080 https://c" {
		t.Errorf("ParseServers: %q %v", got, err)
	}
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"http://a:8080,ftp://b"}, `"ftp://b"`},
		{[]string{"http://a:8080", "b:8080"}, `"b:8080"`},
		{[]string{"http://a:8080,http://c:0"}, `"http://c:0"`},
		{[]string{"http://a:8080,http://A:8080/"}, `"http://A:8080/": the same server as "http://a:8080"`},
		{[]string{"http://a:8080", "http://a:8080"}, "given twice"},
		{[]string{"", " , "}, "none given"},
		{[]string{"http://u:p@a:8080"}, `"http://u:p@a:8080"`},
	} {
		if _, err := apiclient.ParseServers(tc.in...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseServers(%q): %v, want an error with %s", tc.in, err, tc.want)
		}
	}
	if _, err := apiclient.NewServers([]string{"http://a:1", "http://a:1"}, ""); err == nil {
		t.Error("NewServers took the same server twice")
	}
	many := make([]string, apiclient.MaxServers+1)
	for i := range many {
		many[i] = fmt.Sprintf("http://h%d:1", i)
	}
	if _, err := apiclient.ParseServers(strings.Join(many, ",")); err == nil {
		t.Errorf("ParseServers took %d servers", len(many))
	}
}

// fake is a stand-in signpost server that counts the API requests it
// gets (/healthz probes apart) and answers them as mode says.
type fake struct {
	*httptest.Server
	mode    atomic.Value // "ok", "503", "hang", "409"
	api     atomic.Int32
	probes  atomic.Int32
	release chan struct{}
}

func newFake(t *testing.T, mode string) *fake {
	f := &fake{release: make(chan struct{})}
	f.mode.Store(mode)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			f.probes.Add(1)
		} else {
			f.api.Add(1)
		}
		switch f.mode.Load().(string) {
		case "hang":
			select {
			case <-f.release:
			case <-r.Context().Done():
			}
			return
		case "503":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"store unavailable"}`)
			return
		case "409":
			if r.URL.Path != "/healthz" {
				w.WriteHeader(http.StatusConflict)
				fmt.Fprint(w, `{"error":"belongs to another node"}`)
				return
			}
		}
		fmt.Fprint(w, `{"index":1}`)
	}))
	t.Cleanup(func() { close(f.release); f.Close() })
	return f
}

// refusedURL is the URL of a loopback port nothing listens on.
func refusedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// TestHeartbeatsFailOver: with the servers before the good one refusing,
// hanging and answering 503, a heartbeat reaches the good one within
// its deadline (the hung one holds it at most half of it), and the ones
// after go straight to it, sticky, without waiting on the hung one again.
func TestHeartbeatsFailOver(t *testing.T) {
	hung, unavailable, good := newFake(t, "hang"), newFake(t, "503"), newFake(t, "ok")
	refused := refusedURL(t)
	c, err := apiclient.NewServers([]string{refused, hung.URL, unavailable.URL, good.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	const deadline = time.Second // the agent's heartbeat deadline with a 3s lease (TTL/3)
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		err := c.Heartbeat(ctx, "host1")
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		// The first waits out the hung server's attempt: half the deadline.
		limit := deadline * 3 / 4
		if i > 0 {
			limit = 200 * time.Millisecond // straight to the good one
		}
		if took > limit {
			t.Errorf("heartbeat %d took %s, want under %s", i, took, limit)
		}
		if i == 0 {
			t.Logf("first heartbeat, through a refused, a hung and a 503 server: %s", took.Round(time.Millisecond))
		}
	}
	if got := good.api.Load(); got != 10 {
		t.Errorf("the good server got %d heartbeats, want 10", got)
	}
	if got := hung.api.Load(); got != 1 {
		t.Errorf("the hung server got %d API requests, want 1 (the first heartbeat's attempt)", got)
	}
	if c.Current() != good.URL || c.Failovers() != 1 {
		t.Errorf("current %s after %d failovers, want %s after 1", c.Current(), c.Failovers(), good.URL)
	}
	st := c.Servers()
	for i, want := range []string{apiclient.StateDown, apiclient.StateDown, apiclient.StateDown, apiclient.StateUp} {
		if st[i].State != want || (want == apiclient.StateDown && st[i].LastError == "") {
			t.Errorf("server %d (%s): %+v, want %s", i, st[i].URL, st[i], want)
		}
	}
	if !st[0].Preferred || !st[3].Current || !strings.Contains(st[2].LastError, "503") {
		t.Errorf("status %+v", st)
	}
}

// TestAllServersFail: when every server fails, the error names each,
// and a deadline is still a deadline (errors.Is).
func TestAllServersFail(t *testing.T) {
	hung, unavailable := newFake(t, "hang"), newFake(t, "503")
	c, err := apiclient.NewServers([]string{unavailable.URL, hung.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = c.Heartbeat(ctx, "host1")
	if err == nil || !strings.Contains(err.Error(), unavailable.URL) || !strings.Contains(err.Error(), hung.URL) ||
		!errors.Is(err, context.DeadlineExceeded) || !apiclient.IsStatus(err, 503) {
		t.Errorf("Heartbeat: %v, want an error naming both servers, a 503 and a deadline", err)
	}
}

// TestClientErrorsAreNotRetried: a 4xx is the caller's error: returned
// as it is, and not sent to another server.
func TestClientErrorsAreNotRetried(t *testing.T) {
	conflict, good := newFake(t, "409"), newFake(t, "ok")
	c, err := apiclient.NewServers([]string{conflict.URL, good.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeregisterNode(context.Background(), "host1", "a-1")
	if !apiclient.IsStatus(err, 409) || good.api.Load() != 0 || c.Current() != conflict.URL {
		t.Errorf("DeregisterNode: %v, good server got %d; want the 409, nothing sent elsewhere", err, good.api.Load())
	}
}

// TestDeleteRetriedAfterNoAnswer: a DELETE that got no answer from one
// server (it may have been applied) and then a 404 from the next has
// succeeded; after a refused connection (never sent) the 404 stands.
func TestDeleteRetriedAfterNoAnswer(t *testing.T) {
	var mu sync.Mutex
	deleted := map[string]bool{}
	// A server that applies the delete and then hangs, and one that
	// answers 404 for what is deleted.
	applyThenHang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		deleted[r.URL.Path] = true
		mu.Unlock()
		<-r.Context().Done()
	}))
	t.Cleanup(applyThenHang.Close)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gone := deleted[r.URL.Path]
		mu.Unlock()
		if gone || strings.Contains(r.URL.Path, "missing") {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"not found","field":"id"}`)
			return
		}
		fmt.Fprint(w, `{"index":3}`)
	}))
	t.Cleanup(store.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := apiclient.NewServers([]string{applyThenHang.URL, store.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	c.AttemptTimeout = 200 * time.Millisecond
	if _, err := c.DeregisterNode(ctx, "host1", "a-1"); err != nil {
		t.Errorf("DeregisterNode retried after no answer: %v, want success (the first attempt removed it)", err)
	}
	if _, err := c.ReleaseNode(ctx, "host2"); err != nil {
		t.Errorf("ReleaseNode retried after no answer: %v, want success", err)
	}

	c2, err := apiclient.NewServers([]string{refusedURL(t), store.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Deregister(ctx, "missing-1"); !apiclient.IsStatus(err, 404) {
		t.Errorf("Deregister of a missing instance after a refused connection: %v, want the 404", err)
	}
}

// TestReturnsToThePreferredServer: once the preferred (first) server
// answers again, the client goes back to it by itself (a probe finds it
// healthy) while the current one keeps answering.
func TestReturnsToThePreferredServer(t *testing.T) {
	preferred, other := newFake(t, "503"), newFake(t, "ok")
	c, err := apiclient.NewServers([]string{preferred.URL, other.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	beat := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.Heartbeat(ctx, "host1"); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	beat()
	if c.Current() != other.URL {
		t.Fatalf("current %s with the preferred answering 503, want %s", c.Current(), other.URL)
	}
	// Down for a while: probes find it failing, and nothing else goes to it.
	for i := 0; i < 10; i++ {
		beat()
		time.Sleep(50 * time.Millisecond) // the agent's heartbeats, faster
	}
	if c.Current() != other.URL || preferred.api.Load() != 1 {
		t.Fatalf("current %s, the failing preferred got %d API requests; want %s and 1", c.Current(), preferred.api.Load(), other.URL)
	}
	preferred.mode.Store("ok")
	back := time.Now()
	for c.Current() != preferred.URL {
		if time.Since(back) > 15*time.Second { // backoff is at most 5s
			t.Fatalf("still on %s %s after the preferred answered again: %+v", c.Current(), time.Since(back), c.Servers())
		}
		beat()
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("back on the preferred server %s after it answered again", time.Since(back).Round(time.Millisecond))
	if preferred.probes.Load() < 2 {
		t.Errorf("the preferred server got %d probes, want it probed while down and when back", preferred.probes.Load())
	}
	n := preferred.api.Load()
	beat()
	if preferred.api.Load() != n+1 {
		t.Error("a heartbeat after the return did not go to the preferred server")
	}
	if c.Failovers() != 1 {
		t.Errorf("Failovers %d, want 1 (the return is not one)", c.Failovers())
	}
}

// TestWatchResumesOnAnotherServer: a watch whose server dies resumes on
// the next one from the last index it delivered; it returns only when
// every server has failed in a row.
func TestWatchResumesOnAnotherServer(t *testing.T) {
	event := func(w http.ResponseWriter, svc string, index int) {
		fmt.Fprintf(w, "event: service\ndata: {\"service\":%q,\"index\":%d,\"instances\":[]}\n\n", svc, index)
		w.(http.Flusher).Flush()
	}
	// Each server records the index it is asked from; the first sends two
	// events and dies (the connection is cut), the second sends one and
	// ends the stream; asked again, each answers 503.
	asked := make(chan string, 8)
	serve := func(name string, first func(w http.ResponseWriter)) *httptest.Server {
		var calls atomic.Int32
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				return // the client's probes
			}
			asked <- name + "@" + r.URL.Query().Get("index")
			if calls.Add(1) > 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			first(w)
		}))
		t.Cleanup(s.Close)
		return s
	}
	dying := serve("A", func(w http.ResponseWriter) {
		event(w, "a", 5)
		event(w, "b", 7)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	})
	next := serve("B", func(w http.ResponseWriter) { event(w, "c", 9) })
	c, err := apiclient.NewServers([]string{dying.URL, next.URL}, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	err = c.Watch(ctx, "", 3, func(ev apiclient.WatchEvent) error {
		got = append(got, fmt.Sprintf("%s@%d", ev.Service, ev.Index))
		return nil
	})
	close(asked)
	var asks []string
	for a := range asked {
		asks = append(asks, a)
	}
	// A from 3, B from 7 (the last delivered), then one of them from 9.
	if len(asks) != 3 || asks[0] != "A@3" || asks[1] != "B@7" || !strings.HasSuffix(asks[2], "@9") {
		t.Errorf("the servers were asked %v, want A@3 B@7 and then one from 9", asks)
	}
	if strings.Join(got, " ") != "a@5 b@7 c@9" {
		t.Errorf("events %v, want a@5 b@7 c@9", got)
	}
	// After the second stream ended: the first (dead: it answers the
	// same again, cut) and the second (503) failed in a row.
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "all 2 servers failed") {
		t.Errorf("Watch returned %v, want it to give up once both failed in a row", err)
	}
}
