package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/staleness"
	"github.com/signpost-dns/signpost/internal/store/etcd/etcdtest"
)

// Bounds of the cut-off test (docs/etcd.md, "A server cut off from etcd").
const (
	cutStaleAfter = staleness.DefaultStaleAfter
	cutMaxStale   = 3 * time.Second
	// storeBudget is the etcd store's default call budget
	// (etcdstore.Options.Timeout): a cut is said within it.
	storeBudget = 5 * time.Second
	// healBound is issue 18's: caught up and healthy within 1 s of etcd
	// answering again.
	healBound = time.Second
	// slack covers scheduling on a loaded test machine.
	slack = 300 * time.Millisecond
)

// cutServer is a server reaching every etcd member through a proxy of its
// own, which the test cuts.
type cutServer struct {
	*testServer
	proxies []*etcdtest.Proxy
}

func startCutServer(t *testing.T, members []*etcdtest.Member) *cutServer {
	t.Helper()
	cs := &cutServer{}
	var eps []string
	for _, m := range members {
		p := etcdtest.StartProxy(t, m.ClientURL())
		cs.proxies = append(cs.proxies, p)
		eps = append(eps, p.URL())
	}
	cs.testServer = startServer(t, func(c *server.Config) {
		c.StoreKind = "etcd"
		c.Etcd.Endpoints = eps
		c.MaxStale = cutMaxStale
	})
	return cs
}

func (cs *cutServer) cut(blackhole bool) {
	for _, p := range cs.proxies {
		if blackhole {
			p.Blackhole()
		} else {
			p.Refuse()
		}
	}
}

func (cs *cutServer) heal(t *testing.T) {
	for _, p := range cs.proxies {
		p.Heal(t)
	}
}

// contact is what a user sees of a server's store contact: /healthz, the
// metric and the header of an API read.
type contact struct {
	healthz    int
	info       staleness.Info
	metric     float64
	lastHeader int64
	staleHdr   string
}

func readContact(t *testing.T, ts *testServer) contact {
	t.Helper()
	var c contact
	get := func(path string) (*http.Response, []byte) {
		resp, err := http.Get(ts.URL() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := get("/healthz")
	c.healthz = resp.StatusCode
	var body struct {
		Contact *staleness.Info `json:"store_contact"`
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Contact == nil {
		t.Fatalf("/healthz says nothing of the store contact: %s (%v)", b, err)
	}
	c.info = *body.Contact
	_, b = get("/metrics")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "signpost_store_last_contact_seconds "); ok {
			c.metric, _ = strconv.ParseFloat(v, 64)
		}
	}
	resp, _ = get("/v1/services")
	if c.lastHeader, _ = strconv.ParseInt(resp.Header.Get(staleness.HeaderLastContact), 10, 64); resp.Header.Get(staleness.HeaderLastContact) == "" {
		t.Fatalf("GET /v1/services: no %s header", staleness.HeaderLastContact)
	}
	c.staleHdr = resp.Header.Get(staleness.HeaderStale)
	return c
}

// saysStale: every one of /healthz, the metric and the header says the
// server has been out of contact for longer than the threshold.
func (c contact) saysStale() bool {
	lim := cutStaleAfter.Seconds()
	return c.healthz == http.StatusServiceUnavailable && c.info.State != "current" &&
		c.metric > lim && float64(c.lastHeader)/1000 > lim && c.staleHdr == "true"
}

func (c contact) saysCurrent() bool {
	return c.healthz == http.StatusOK && c.info.State == "current" && c.metric < cutStaleAfter.Seconds() && c.staleHdr == ""
}

// rcodeWatch asks a server for a name again and again and records every
// rcode, until stopped.
type rcodeWatch struct {
	mu     sync.Mutex
	rcodes map[int]int
	empty  int // NOERROR without an answer
	// healed: answers from then on are counted in oldFull when they hold
	// old records (more than want) with a TTL over the stale one.
	healed  bool
	want    int
	oldFull int
	stop    chan struct{}
	done    chan struct{}
}

func watchRcodes(ts *testServer, name string) *rcodeWatch {
	w := &rcodeWatch{rcodes: map[int]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		c := &dns.Client{Net: "udp", Timeout: time.Second}
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeSRV)
			r, _, err := c.Exchange(m, ts.DNSAddr())
			if err != nil {
				continue
			}
			w.mu.Lock()
			w.rcodes[r.Rcode]++
			if r.Rcode == dns.RcodeSuccess && len(r.Answer) == 0 {
				w.empty++
			}
			if w.healed && r.Rcode == dns.RcodeSuccess && len(r.Answer) > w.want && r.Answer[0].Header().Ttl > staleness.StaleTTL {
				w.oldFull++
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// heal notes that the store is reachable again and the server's answers
// should hold want records: an old state after this must carry the stale
// TTL until the server has caught up.
func (w *rcodeWatch) heal(want int) {
	w.mu.Lock()
	w.healed, w.want = true, want
	w.mu.Unlock()
}

func (w *rcodeWatch) end() (map[int]int, int) {
	close(w.stop)
	<-w.done
	return w.rcodes, w.empty
}

// storeRev is the store's current revision, read past the proxies.
func storeRev(t *testing.T, members []*etcdtest.Member) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdtest.Endpoints(members), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "rev-probe")
	if err != nil {
		t.Fatalf("read the store's revision: %v", err)
	}
	return resp.Header.Revision
}

// waitUntil waits for cond and returns how long it took from start.
func waitUntil(t *testing.T, what string, start time.Time, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func srvAnswer(t *testing.T, ts *testServer, name string) (int, int, uint32) {
	t.Helper()
	r := ts.ask(t, "udp", name, dns.TypeSRV, 0)
	var ttl uint32
	for _, rr := range r.Answer {
		ttl = max(ttl, rr.Header().Ttl)
	}
	return r.Rcode, len(r.Answer), ttl
}

// TestServerCutOffFromEtcd is issue 18's: a server cut off from etcd says
// so within the store budget, steps aside (SERVFAIL, never NXDOMAIN)
// within --max-stale plus the probe interval while the other server is
// current, answers its last state with a TTL of at most 1 s when no
// server is current, and is healthy and caught up within 1 s of the heal.
func TestServerCutOffFromEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartCluster(t, 3, 100*time.Millisecond, time.Second)
	testCutOff(t, members)
}

// TestServerCutOffFromDebianEtcd is the same on Debian's etcd 3.4 binary.
func TestServerCutOffFromDebianEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members := etcdtest.StartBinaryCluster(t, etcdtest.DebianEtcd, 3, 100*time.Millisecond, time.Second)
	testCutOff(t, members)
}

func testCutOff(t *testing.T, members []*etcdtest.Member) {
	s1 := startCutServer(t, members)
	s2 := startCutServer(t, members)
	calc := "_calc._tcp." + zone
	s2.register(t, inst("calc-1", "calc", "10.10.0.1", 8081))
	waitFor(t, "both servers to answer calc", func() bool { return srvCount(t, s1.testServer, calc) == 1 && srvCount(t, s2.testServer, calc) == 1 })
	waitFor(t, "both servers to know their peer", func() bool {
		return readContact(t, s1.testServer).info.Peers == 1 && readContact(t, s2.testServer).info.Peers == 1
	})
	if c := readContact(t, s1.testServer); !c.saysCurrent() {
		t.Fatalf("a connected server does not say it is current: %+v", c)
	}
	n := 0
	for _, blackhole := range []bool{false, true} {
		how := map[bool]string{false: "refused", true: "blackholed"}[blackhole]
		n++
		id := "calc-" + strconv.Itoa(n+1)
		s2.register(t, inst(id, "calc", "10.10.0.2", 8081))
		waitFor(t, "s1 to answer "+id, func() bool { return srvCount(t, s1.testServer, calc) == 2 })

		w := watchRcodes(s1.testServer, calc)
		cut := time.Now()
		s1.cut(blackhole)
		saidIn := waitUntil(t, how+": s1 says it is stale", cut, storeBudget+slack, func() bool { return readContact(t, s1.testServer).saysStale() })
		// Stale, not yet stepped aside: the last state, TTL at most 1 s.
		if rc, n, ttl := srvAnswer(t, s1.testServer, calc); time.Since(cut) < cutMaxStale && (rc != dns.RcodeSuccess || n != 2 || ttl > staleness.StaleTTL) {
			t.Errorf("%s: stale s1 answers rcode %s, %d records, TTL %d; want its last state (2) with TTL <= %d", how, dns.RcodeToString[rc], n, ttl, staleness.StaleTTL)
		}
		// Meanwhile the instance goes, through the current server.
		if _, err := s2.client.Deregister(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		aside := waitUntil(t, how+": s1 steps aside (SERVFAIL)", cut, 30*time.Second, func() bool {
			rc, _, _ := srvAnswer(t, s1.testServer, calc)
			return rc == dns.RcodeServerFailure
		})
		if bound := cutMaxStale + staleness.DefaultInterval + slack; aside > bound {
			t.Errorf("%s: s1 stepped aside %s after the cut; want within --max-stale + probe interval (%s)", how, aside, bound)
		}
		if c := readContact(t, s1.testServer); c.info.State != "stepped_aside" {
			t.Errorf("%s: /healthz says %q while s1 answers SERVFAIL", how, c.info.State)
		}
		if rc, _, _ := srvAnswer(t, s2.testServer, calc); rc != dns.RcodeSuccess {
			t.Errorf("%s: the current server answers %s", how, dns.RcodeToString[rc])
		}

		heal := time.Now()
		w.heal(1)
		s1.cut(false)
		s1.heal(t)
		want := storeRev(t, members)
		back := waitUntil(t, how+": s1 healthy, caught up and answering as the store", heal, 10*time.Second, func() bool {
			rc, n, _ := srvAnswer(t, s1.testServer, calc)
			return healthz(t, s1.testServer) == http.StatusOK && s1.Index().Rev() >= want && rc == dns.RcodeSuccess && n == 1
		})
		rcodes, empty := w.end()
		t.Logf("%s: stale said in %s, stepped aside in %s (bound %s), back %s after the heal; rcodes seen %v", how, saidIn.Round(time.Millisecond), aside.Round(time.Millisecond), cutMaxStale+staleness.DefaultInterval, back.Round(time.Millisecond), rcodes)
		if back > healBound {
			t.Errorf("%s: s1 back %s after the heal; want within %s", how, back, healBound)
		}
		if rcodes[dns.RcodeNameError] > 0 || empty > 0 {
			t.Errorf("%s: s1 answered NXDOMAIN %d times and an empty NOERROR %d times for a service that exists", how, rcodes[dns.RcodeNameError], empty)
		}
		if w.oldFull > 0 {
			t.Errorf("%s: after the heal, s1 answered its old state (2 records) with the full TTL %d times: it said it was current before it had caught up", how, w.oldFull)
		}
		if _, _, ttl := srvAnswer(t, s1.testServer, calc); ttl != 5 {
			t.Errorf("%s: healed s1 answers TTL %d; want the configured 5", how, ttl)
		}
	}

	// No server current: both cut. Both keep answering the last state.
	cut := time.Now()
	s1.cut(true)
	s2.cut(false)
	waitUntil(t, "both servers say they are stale", cut, storeBudget+slack, func() bool {
		return readContact(t, s1.testServer).saysStale() && readContact(t, s2.testServer).saysStale()
	})
	w1, w2 := watchRcodes(s1.testServer, calc), watchRcodes(s2.testServer, calc)
	time.Sleep(cutMaxStale + 2*time.Second - time.Since(cut)) // past --max-stale, by a margin: what is observed is nothing changing
	for i, s := range []*cutServer{s1, s2} {
		rc, n, ttl := srvAnswer(t, s.testServer, calc)
		if rc != dns.RcodeSuccess || n != 1 || ttl > staleness.StaleTTL {
			t.Errorf("all cut: server %d answers %s, %d records, TTL %d; want the last state (1) with TTL <= %d", i+1, dns.RcodeToString[rc], n, ttl, staleness.StaleTTL)
		}
		if c := readContact(t, s.testServer); c.info.State != "stale" {
			t.Errorf("all cut: server %d says %q; want stale (no peer is current)", i+1, c.info.State)
		}
	}
	// The watchers end before the heal: healed one after the other, the
	// server healed first is current while the other is still stale past
	// --max-stale, and that one rightly steps aside for it until its own
	// heal.
	for i, w := range []*rcodeWatch{w1, w2} {
		rcodes, empty := w.end()
		if len(rcodes) != 1 || rcodes[dns.RcodeSuccess] == 0 || empty > 0 {
			t.Errorf("all cut: server %d answered rcodes %v (%d empty); want the last state throughout", i+1, rcodes, empty)
		}
	}
	heal := time.Now()
	s1.cut(false)
	s1.heal(t)
	s2.heal(t)
	want := storeRev(t, members)
	back := waitUntil(t, "all cut: both healthy and caught up", heal, 10*time.Second, func() bool {
		return healthz(t, s1.testServer) == http.StatusOK && healthz(t, s2.testServer) == http.StatusOK &&
			s1.Index().Rev() >= want && s2.Index().Rev() >= want
	})
	t.Logf("all cut: both back %s after the heal", back.Round(time.Millisecond))
	if back > healBound {
		t.Errorf("all cut: back %s after the heal; want within %s", back, healBound)
	}
}
