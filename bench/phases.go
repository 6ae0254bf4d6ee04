package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// serverRuns holds one server's dnsperf runs.
type serverRuns struct {
	name    string
	addr    string
	note    string
	shape   string // answer shapes, from verify
	skipped string // why it was not measured
	runs    []perfResult
}

func (s *serverRuns) qps() float64 {
	var xs []float64
	for _, r := range s.runs {
		xs = append(xs, r.QPS)
	}
	return median(xs)
}

func (s *serverRuns) cpuPerQ() float64 {
	var xs []float64
	for _, r := range s.runs {
		xs = append(xs, r.CPUPerQ)
	}
	return median(xs)
}

func (s *serverRuns) minNoError() float64 {
	m := 100.0
	for _, r := range s.runs {
		m = min(m, r.NoError)
	}
	return m
}

// dnsPhase runs parts 1 and 2: the servers side by side, then churn.
func dnsPhase(ctx context.Context, o options, ps *procs, bin, tmp string, rep *report) error {
	data := dataset(o.services, 3)
	zonePath := filepath.Join(tmp, "zone.db")
	if err := writeZone(zonePath, data); err != nil {
		return err
	}
	queryPath := filepath.Join(tmp, "queries.txt")
	if err := writeQueries(queryPath, o.services, 100000); err != nil {
		return err
	}
	rep.queryMix = "50% svcN.Z SRV, 30% svcN.Z A, 20% _svcN._tcp.Z SRV over " + fmt.Sprint(o.services) + " services x 3 instances"
	if err := ensureDebian(ctx, "dnsperf", "dnsperf", !o.smoke); err != nil {
		return fmt.Errorf("dnsperf is required: %w", err)
	}
	rep.dnsperfCmd = "dnsperf " + joinArgs(dnsperfArgs("127.0.0.1:PORT", "queries.txt", o.seconds))

	sp, err := startSignpost(ctx, ps, bin, filepath.Join(tmp, "dns-data"), 0, 0)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := sp.load(ctx, data, 300); err != nil {
		return fmt.Errorf("loading %d instances into signpost: %w", len(data), err)
	}
	logf("signpost: loaded %d instances in %v", len(data), time.Since(t0).Round(time.Millisecond))
	shape, err := verify(ctx, sp.addr, data)
	if err != nil {
		return fmt.Errorf("signpost does not answer as expected: %w", err)
	}
	all := []*serverRuns{{name: "signpost", addr: sp.addr, note: sp.note, shape: shape}}
	pids := map[string]int{"signpost": sp.proc.pid()}

	type starter struct {
		name, cmd, pkg string
		start          func() (*server, error)
	}
	starters := []starter{
		{"NSD", "nsd", "nsd", func() (*server, error) { return startNSD(ctx, ps, tmp, zonePath) }},
		{"Knot", "knotd", "knot", func() (*server, error) { return startKnot(ctx, ps, tmp, zonePath) }},
		{"CoreDNS", "", "", func() (*server, error) {
			if !o.coredns {
				return nil, fmt.Errorf("--coredns=false")
			}
			cb, err := buildCoreDNS(ctx, !o.smoke, logf)
			if err != nil {
				return nil, err
			}
			rep.corednsBin = cb
			return startCoreDNS(ctx, ps, cb, tmp, zonePath)
		}},
		{"Go UDP echo", "", "", func() (*server, error) { return startEcho(ps) }},
	}
	var started []*server
	for _, st := range starters {
		sr := &serverRuns{name: st.name}
		all = append(all, sr)
		if st.cmd != "" {
			if err := ensureDebian(ctx, st.cmd, st.pkg, !o.smoke); err != nil {
				sr.skipped = err.Error()
				logf("%s: %v", st.name, err)
				continue
			}
		}
		s, err := st.start()
		if err != nil {
			sr.skipped = "failed: " + err.Error()
			logf("%s: %v", st.name, err)
			continue
		}
		started = append(started, s)
		sr.addr, sr.note = s.addr, s.note
		pids[st.name] = s.proc.pid()
		if st.name != "Go UDP echo" {
			if sr.shape, err = verify(ctx, s.addr, data); err != nil {
				sr.skipped = "answers differ: " + err.Error()
				logf("%s: %v", st.name, err)
				continue
			}
		}
		logf("%s on %s: %s", st.name, s.addr, sr.shape)
	}
	rep.servers = all

	for round := 1; round <= o.rounds; round++ {
		for _, sr := range all {
			if sr.skipped != "" {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := runDNSPerf(ctx, sr.addr, queryPath, o.seconds, pids[sr.name])
			if err != nil {
				if sr.name == "signpost" {
					return err
				}
				sr.skipped = "failed: " + err.Error()
				logf("%s: %v", sr.name, err)
				continue
			}
			sr.runs = append(sr.runs, r)
			logf("round %d %-12s %9.0f q/s  %6.2f us CPU/query  lost %d  NOERROR %.2f%%", round, sr.name, r.QPS, r.CPUPerQ, r.Lost, r.NoError)
		}
	}
	if r := all[0]; len(r.runs) == 0 || r.qps() <= 0 || r.minNoError() < 99 {
		return fmt.Errorf("signpost answered badly under dnsperf: %d runs, median %.0f q/s, NOERROR %.2f%%", len(r.runs), r.qps(), r.minNoError())
	}
	for _, s := range started {
		ps.stop(s.proc, 2*time.Second)
	}

	return churnPhase(ctx, o, sp, data, queryPath, rep)
}

// churnPhase measures signpost's query rate idle and while registrations
// stream in, interleaved.
func churnPhase(ctx context.Context, o options, sp *signpostServer, data []instance, queryPath string, rep *report) error {
	// One extra instance per service, whose port flips on every write.
	var extra []instance
	for _, in := range data {
		if in.ID[len(in.ID)-2:] == "-0" {
			c := in
			c.ID = "c" + in.ID
			c.Port = 9000
			extra = append(extra, c)
		}
	}
	if err := parallel(ctx, len(extra), 16, func(ctx context.Context, i int) error {
		return sp.put(ctx, "/v1/instances/"+extra[i].ID, extra[i])
	}); err != nil {
		return fmt.Errorf("churn set-up: %w", err)
	}
	c := &churnResult{rate: o.churnRate}
	for round := 1; round <= o.rounds; round++ {
		idle, err := runDNSPerf(ctx, sp.addr, queryPath, o.seconds, sp.proc.pid())
		if err != nil {
			return fmt.Errorf("churn idle run: %w", err)
		}
		c.idle = append(c.idle, idle)
		stop := make(chan struct{})
		type churned struct {
			done, failed int64
			took         time.Duration
		}
		ch := make(chan churned, 1)
		go func() {
			d, f, t := sp.churn(ctx, extra, o.churnRate, o.churnRate*(o.seconds+5), time.Duration(o.seconds+5)*time.Second, stop)
			ch <- churned{d, f, t}
		}()
		busy, err := runDNSPerf(ctx, sp.addr, queryPath, o.seconds, sp.proc.pid())
		close(stop)
		w := <-ch
		if err != nil {
			return fmt.Errorf("churn run: %w", err)
		}
		c.busy = append(c.busy, busy)
		c.writes = append(c.writes, float64(w.done)/w.took.Seconds())
		c.failed += w.failed
		logf("churn round %d: idle %.0f q/s, under churn %.0f q/s (%.1f%%), %d writes in %v (%.0f/s), %d failed",
			round, idle.QPS, busy.QPS, 100*busy.QPS/idle.QPS, w.done, w.took.Round(time.Millisecond), float64(w.done)/w.took.Seconds(), w.failed)
		if busy.NoError < 99 || busy.Completed == 0 {
			return fmt.Errorf("signpost answered badly under churn: %d answers, NOERROR %.2f%%", busy.Completed, busy.NoError)
		}
	}
	if c.failed > 0 {
		return fmt.Errorf("churn: %d registrations failed", c.failed)
	}
	rep.churn = c
	return nil
}

// churnResult is part 2.
type churnResult struct {
	rate       int
	idle, busy []perfResult
	writes     []float64 // achieved writes a second per round
	failed     int64
}

func qpsOf(rs []perfResult) float64 {
	var xs []float64
	for _, r := range rs {
		xs = append(xs, r.QPS)
	}
	return median(xs)
}

// scaleResult is part 3.
type scaleResult struct {
	instances  int
	loadTime   time.Duration
	rss        int64
	rssRestart int64
	startups   []time.Duration
	// answering: process start to correct answers for the first and the
	// last service; wrongAfterReady counts wrong answers (NXDOMAIN) seen
	// after the running line before that.
	answering       []time.Duration
	wrongAfterReady int
	replaces        []time.Duration
	regs            int
	regTime         time.Duration
	regsPerSec      float64
	dataDirSize     int64
}

// scalePhase runs part 3 on a fresh signpost server.
func scalePhase(ctx context.Context, o options, ps *procs, bin, tmp string, rep *report) error {
	dir := filepath.Join(tmp, "scale-data")
	sp, err := startSignpost(ctx, ps, bin, dir, 0, 0)
	if err != nil {
		return err
	}
	res := &scaleResult{instances: o.scale}
	data := dataset(o.scale/10, 10)
	t0 := time.Now()
	if err := sp.load(ctx, data, 1000); err != nil {
		return fmt.Errorf("loading %d instances: %w", len(data), err)
	}
	res.loadTime = time.Since(t0)
	logf("scale: loaded %d instances in %v", len(data), res.loadTime.Round(time.Millisecond))
	if _, err := verify(ctx, sp.addr, data); err != nil {
		return fmt.Errorf("signpost at %d instances: %w", len(data), err)
	}
	time.Sleep(2 * time.Second) // let the loader's garbage go
	if res.rss, err = rssBytes(sp.proc.pid()); err != nil {
		return err
	}
	logf("scale: VmRSS %.1f MB", float64(res.rss)/1e6)

	// One node replacing 1,000 instances: node-1 alternates between its
	// loaded set and a new set of 1,000 other ids (different services,
	// addresses and ports), so every call removes 1,000 and adds 1,000.
	orig := data[1000:2000]
	alt := make([]instance, len(orig))
	for i, in := range orig {
		alt[i] = in
		alt[i].ID = "r" + in.ID
		alt[i].Port = in.Port + 1000
	}
	reps := 6
	if o.smoke {
		reps = 2
	}
	for k := 0; k < reps; k++ {
		set := alt
		if k%2 == 1 {
			set = orig
		}
		t := time.Now()
		if err := sp.putNode(ctx, "node-1", set); err != nil {
			return fmt.Errorf("node replace %d: %w", k, err)
		}
		res.replaces = append(res.replaces, time.Since(t))
	}
	logf("scale: node replace of 1000 instances: %v", res.replaces)

	// Start-up from the embedded store.
	restarts := 3
	if o.smoke {
		restarts = 1
	}
	for k := 0; k < restarts; k++ {
		ps.stop(sp.proc, 10*time.Second)
		dnsPort, httpPort := 0, 0
		sp, err = startSignpost(ctx, ps, bin, dir, dnsPort, httpPort)
		if err != nil {
			return fmt.Errorf("restart %d with %d instances: %w", k, len(data), err)
		}
		res.startups = append(res.startups, sp.ready)
		answering, wrong, err := waitAnswers(ctx, sp, data)
		if err != nil {
			return fmt.Errorf("signpost after restart: %w; its log:\n%s", err, tail(sp.proc.log.String(), 1500))
		}
		res.answering = append(res.answering, answering)
		res.wrongAfterReady += wrong
		logf("scale: start-up with %d instances on disk: %v to the running line, %v to correct answers (%d wrong answers after the running line)",
			len(data), sp.ready.Round(time.Millisecond), answering.Round(time.Millisecond), wrong)
	}
	time.Sleep(time.Second)
	if res.rssRestart, err = rssBytes(sp.proc.pid()); err != nil {
		return err
	}
	res.dataDirSize = dirSize(dir)

	// Registrations a second through the API.
	res.regs = o.regCount
	rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	t0 = time.Now()
	err = parallel(rctx, o.regCount, 32, func(ctx context.Context, i int) error {
		in := instance{ID: fmt.Sprintf("reg-%d", i), Service: fmt.Sprintf("reg%d", i%100),
			Address: fmt.Sprintf("10.200.%d.%d", (i>>8)&255, i&255), Port: 7000}
		return sp.put(ctx, "/v1/instances/"+in.ID, in)
	})
	res.regTime = time.Since(t0)
	if err != nil {
		return fmt.Errorf("registrations test: %w", err)
	}
	res.regsPerSec = float64(o.regCount) / res.regTime.Seconds()
	logf("scale: %d registrations in %v: %.0f/s", o.regCount, res.regTime.Round(time.Millisecond), res.regsPerSec)
	ps.stop(sp.proc, 5*time.Second)
	rep.scale = res
	return nil
}

// waitAnswers polls the first and last service of data until both are
// answered correctly, and returns the time from process start and the
// number of wrong answers seen meanwhile.
func waitAnswers(ctx context.Context, sp *signpostServer, data []instance) (time.Duration, int, error) {
	first, last := data[0].Service, data[len(data)-1].Service
	wrong := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := verifyService(ctx, sp.addr, data, first)
		if err == nil {
			_, err = verifyService(ctx, sp.addr, data, last)
		}
		if err == nil {
			return time.Since(sp.proc.start), wrong, nil
		}
		wrong++
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, wrong, fmt.Errorf("no correct answer within 30 s of start: %w", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func durMedian(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func durMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
