package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Markers around this harness's own part of BENCHMARKS.md. Everything
// outside them belongs to others and is kept as it is.
const (
	beginMarker = "<!-- bench:harness begin -->"
	endMarker   = "<!-- bench:harness end -->"
)

// machine describes where the run happened.
type machine struct {
	nproc      int
	cpu        string
	kernel     string
	goVersion  string
	loadBefore string
	loadAfter  string
}

func (m machine) oneLine() string {
	return fmt.Sprintf("%d CPUs, %s, Linux %s, %s, load average %s", m.nproc, m.cpu, m.kernel, m.goVersion, m.loadBefore)
}

func machineInfo(ctx context.Context) machine {
	m := machine{nproc: runtime.NumCPU(), cpu: "unknown CPU", kernel: "unknown", goVersion: runtime.Version(), loadBefore: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(out))
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// report collects every figure of one run.
type report struct {
	opts       options
	started    time.Time
	elapsed    time.Duration
	machine    machine
	queryMix   string
	dnsperfCmd string
	corednsBin string
	servers    []*serverRuns
	churn      *churnResult
	scale      *scaleResult
	microCmd   string
	microOut   string
	micro      []microResult
	others     []otherRun
}

func (r *report) server(name string) *serverRuns {
	for _, s := range r.servers {
		if s.name == name && s.skipped == "" && len(s.runs) > 0 {
			return s
		}
	}
	return nil
}

// bar is one of issue 8's targets and whether this run met it.
type bar struct {
	what, target, got string
	met               string // "yes", "NO", or "n/a"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func (r *report) bars() []bar {
	var bs []bar
	sp, nsd, knot := r.server("signpost"), r.server("NSD"), r.server("Knot")
	if sp != nil && nsd != nil {
		bs = append(bs, bar{"DNS queries a second", ">= NSD's (" + fmtQPS(nsd.qps()) + ")", fmtQPS(sp.qps()) + fmt.Sprintf(" (%.2fx NSD)", sp.qps()/nsd.qps()), yesNo(sp.qps() >= nsd.qps())})
	} else {
		bs = append(bs, bar{"DNS queries a second", ">= NSD's", "NSD not measured", "n/a"})
	}
	if sp != nil && knot != nil {
		bs = append(bs, bar{"server CPU per query", fmt.Sprintf("<= Knot's (%.2f µs)", knot.cpuPerQ()), fmt.Sprintf("%.2f µs (%.2fx Knot)", sp.cpuPerQ(), sp.cpuPerQ()/knot.cpuPerQ()), yesNo(sp.cpuPerQ() <= knot.cpuPerQ())})
	} else {
		bs = append(bs, bar{"server CPU per query", "<= Knot's", "Knot not measured", "n/a"})
	}
	if c := r.churn; c != nil {
		idle, busy := qpsOf(c.idle), qpsOf(c.busy)
		bs = append(bs, bar{fmt.Sprintf("queries a second under %d registrations/s", c.rate), ">= 90% of idle", fmt.Sprintf("%.1f%% (%s of %s)", 100*busy/idle, fmtQPS(busy), fmtQPS(idle)), yesNo(busy >= 0.9*idle)})
	}
	if s := r.scale; s != nil {
		bs = append(bs,
			bar{fmt.Sprintf("resident memory, %d instances", s.instances), "< 200 MB", fmt.Sprintf("%.1f MB", float64(s.rss)/1e6), yesNo(s.rss < 200e6)},
			bar{fmt.Sprintf("start-up from the embedded store, %d instances", s.instances), "< 2 s", durMedian(s.startups).Round(time.Millisecond).String() + " to the running line, " + durMedian(s.answering).Round(time.Millisecond).String() + " to correct answers", yesNo(durMedian(s.answering) < 2*time.Second)},
			bar{"one node replacing 1,000 instances", "< 200 ms", durMedian(s.replaces).Round(time.Millisecond).String() + " median, " + durMax(s.replaces).Round(time.Millisecond).String() + " max", yesNo(durMedian(s.replaces) < 200*time.Millisecond)},
		)
	}
	if len(r.micro) > 0 {
		ok := true
		var worst string
		for _, m := range r.micro {
			if m.allocs != "0" {
				ok = false
				worst += " " + m.name + "=" + m.allocs
			}
		}
		got := "0 allocs/op in every case"
		if !ok {
			got = "allocations:" + worst
		}
		bs = append(bs, bar{"allocations per prepared answer (go test -bench Respond)", "0", got, yesNo(ok)})
	}
	if r.opts.smoke {
		for i := range bs {
			if bs[i].met != "n/a" {
				bs[i].met += " (smoke: not judged)"
			}
		}
	}
	return bs
}

func fmtQPS(q float64) string {
	s := strconv.FormatInt(int64(q+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// dnsRows returns the side-by-side table rows.
func (r *report) dnsRows() [][]string {
	nsd, knot := r.server("NSD"), r.server("Knot")
	var rows [][]string
	for _, s := range r.servers {
		if s.skipped != "" || len(s.runs) == 0 {
			why := s.skipped
			if why == "" {
				why = "not run"
			}
			rows = append(rows, []string{s.name, "-", "-", "-", "-", "-", "-", "skipped: " + firstLine(why)})
			continue
		}
		var qs, cs []string
		var lost int64
		for _, x := range s.runs {
			qs = append(qs, fmtQPS(x.QPS))
			cs = append(cs, fmt.Sprintf("%.2f", x.CPUPerQ))
			lost += x.Lost
		}
		rn, rk, cn, ck := "-", "-", "-", "-"
		if nsd != nil {
			rn, cn = ratio(s.qps(), nsd.qps()), ratio(s.cpuPerQ(), nsd.cpuPerQ())
		}
		if knot != nil {
			rk, ck = ratio(s.qps(), knot.qps()), ratio(s.cpuPerQ(), knot.cpuPerQ())
		}
		rows = append(rows, []string{s.name, fmtQPS(s.qps()), fmt.Sprintf("%.2f", s.cpuPerQ()), rn + " / " + rk, cn + " / " + ck,
			fmt.Sprintf("%.2f%%", s.minNoError()), strconv.FormatInt(lost, 10), strings.Join(qs, ", ") + " q/s; " + strings.Join(cs, ", ") + " µs"})
	}
	return rows
}

var dnsHeader = []string{"server", "queries/s (median)", "CPU µs/query (median)", "q/s vs NSD / Knot", "CPU vs NSD / Knot", "NOERROR (min)", "lost", "each round"}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// text renders the report for the terminal.
func (r *report) text() string {
	var b strings.Builder
	mode := "full"
	if r.opts.smoke {
		mode = "SMOKE (figures are not meaningful)"
	}
	fmt.Fprintf(&b, "\nsignpost benchmark harness, %s run, %s, %v\n%s\n\n", mode, r.started.UTC().Format(time.RFC3339), r.elapsed.Round(time.Second), r.machine.oneLine())
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DNS (%s; %d rounds interleaved)\n", r.dnsperfCmd, r.opts.rounds)
	fmt.Fprintln(tw, strings.Join(dnsHeader, "\t"))
	for _, row := range r.dnsRows() {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	b.WriteString("\nanswer shapes (svc1):\n")
	for _, s := range r.servers {
		if s.shape != "" {
			fmt.Fprintf(&b, "  %-10s %s\n", s.name, s.shape)
		}
	}
	if c := r.churn; c != nil {
		fmt.Fprintf(&b, "\nchurn: idle %s q/s, under %d registrations/s offered (%.0f/s achieved, median) %s q/s\n", fmtQPS(qpsOf(c.idle)), c.rate, median(c.writes), fmtQPS(qpsOf(c.busy)))
	}
	if s := r.scale; s != nil {
		fmt.Fprintf(&b, "scale: %d instances loaded in %v; VmRSS %.1f MB (after restart %.1f MB); start-up %v to the running line (each: %v), %v to correct answers, %d wrong answers after the running line; node replace of 1,000: median %v, max %v (each: %v); %d registrations at %.0f/s; data dir %.1f MB\n",
			s.instances, s.loadTime.Round(time.Millisecond), float64(s.rss)/1e6, float64(s.rssRestart)/1e6, durMedian(s.startups).Round(time.Millisecond), roundAll(s.startups), durMedian(s.answering).Round(time.Millisecond), s.wrongAfterReady,
			durMedian(s.replaces).Round(time.Millisecond), durMax(s.replaces).Round(time.Millisecond), roundAll(s.replaces), s.regs, s.regsPerSec, float64(s.dataDirSize)/1e6)
	}
	if len(r.micro) > 0 {
		b.WriteString("\nmicrobenchmarks (" + r.microCmd + "):\n")
		for _, m := range r.micro {
			fmt.Fprintf(&b, "  %-40s %10s ns/op %6s B/op %4s allocs/op\n", m.name, m.nsPerOp, m.bPerOp, m.allocs)
		}
	}
	for _, o := range r.others {
		status := "ok"
		if o.err != "" {
			status = "FAILED: " + o.err
		}
		fmt.Fprintf(&b, "\nother: %s (%s) %s in %v\n%s", o.cmd, o.source, status, o.took.Round(time.Second), indent(tail(o.out, 3000)))
	}
	b.WriteString("\nbars:\n")
	tw = tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	for _, x := range r.bars() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\tmet: %s\n", x.what, x.target, x.got, x.met)
	}
	tw.Flush()
	return b.String()
}

func roundAll(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Round(time.Millisecond).String())
	}
	return strings.Join(s, " ")
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func joinArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " ^$*") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func mdRow(cells []string) string {
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "|", "\\|")
	}
	return "| " + strings.Join(cells, " | ") + " |\n"
}

// markdown renders this harness's section of BENCHMARKS.md, markers
// included.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString(beginMarker + "\n")
	b.WriteString("## Harness: signpost beside NSD, Knot and CoreDNS (issue 8)\n\n")
	b.WriteString("_This section is rewritten by `go run ./bench`; edit the harness, not the text._\n\n")
	fmt.Fprintf(&b, "- Date: %s; the run took %v.\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d CPUs (`nproc`), %s, Linux %s, %s.\n", r.machine.nproc, r.machine.cpu, r.machine.kernel, r.machine.goVersion)
	fmt.Fprintf(&b, "- Load average (1/5/15 min) before the run: %s; after: %s.", r.machine.loadBefore, r.machine.loadAfter)
	if busyLoad(r.machine.loadBefore) || busyLoad(r.machine.loadAfter) {
		b.WriteString(" **Other engineers' jobs were using this machine's cores during the run, so absolute figures are low and noisy; the interleaved ratios are the fairer comparison.**")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- Command: `go run ./bench` (%d interleaved rounds of %d s per server; `go run ./bench --smoke` is the CI smoke run, `bench/bench_test.go`).\n", r.opts.rounds, r.opts.seconds)
	fmt.Fprintf(&b, "- Load: `%s`, from a query file of %s, each server in turn (signpost, NSD, Knot, CoreDNS, echo; then again), all on 127.0.0.1.\n", r.dnsperfCmd, r.queryMix)
	b.WriteString("- Server CPU: utime+stime from `/proc/<pid>/stat` of the server process and its children, before and after each run, divided by the queries completed. dnsperf runs on the same 2 cores, so queries a second is bounded by the load generator too; CPU per query is the fairer figure.\n")
	b.WriteString("- Data: every server serves the same records: signpost loaded through `PUT /v1/nodes`, the others from one generated zone file (`svcN` SRV and A, `_svcN._tcp` SRV, each target's A, SOA, NS; TTL 5).\n\n")

	b.WriteString("### DNS, side by side\n\n")
	b.WriteString(mdRow(append([]string(nil), dnsHeader...)))
	b.WriteString(mdRow([]string{"---", "---:", "---:", "---:", "---:", "---:", "---:", "---"}))
	for _, row := range r.dnsRows() {
		b.WriteString(mdRow(row))
	}
	b.WriteString("\nHow each was run, and the shape of its answers to svc1 (an=answers, ns=authority, ar=additional without OPT, packed size):\n\n")
	for _, s := range r.servers {
		if s.skipped != "" {
			fmt.Fprintf(&b, "- %s: not measured: %s\n", s.name, firstLine(s.skipped))
			continue
		}
		line := fmt.Sprintf("- %s: %s", s.name, s.note)
		if s.name == "CoreDNS" {
			line += fmt.Sprintf(" (CoreDNS %s built by `go install github.com/coredns/coredns@%s` into a GOBIN under the temp dir)", coreDNSVersion, coreDNSVersion)
		}
		if s.shape != "" {
			line += "; " + s.shape
		}
		b.WriteString(line + "\n")
	}
	b.WriteString("\nNSD runs with its defaults, which add the zone's NS record in Authority (and its address in Additional) to every answer, so its answers are about 110 bytes larger than the others'; its `minimal-responses: yes` would drop the SRV glue too, so it is not used. CoreDNS adds the NS record in Authority. Knot's answers are byte-for-byte the size of signpost's.\n")
	if c := r.churn; c != nil {
		idle, busy := qpsOf(c.idle), qpsOf(c.busy)
		b.WriteString("\n### Under churn\n\n")
		fmt.Fprintf(&b, "signpost alone, the same dnsperf load, idle and while `PUT /v1/instances` streams in at %d a second (32 concurrent clients; each write flips the port of one of 1,000 extra instances, one per queried service, so every write changes an answer), interleaved idle/churn for %d rounds:\n\n", c.rate, len(c.idle))
		b.WriteString("| | queries/s (median) | each round |\n| --- | ---: | --- |\n")
		fmt.Fprintf(&b, "| idle | %s | %s |\n", fmtQPS(idle), qpsList(c.idle))
		fmt.Fprintf(&b, "| under churn | %s (%.1f%% of idle) | %s |\n", fmtQPS(busy), 100*busy/idle, qpsList(c.busy))
		fmt.Fprintf(&b, "\nRegistrations achieved: %s a second (median of rounds; offered %d).\n", fmtQPS(median(c.writes)), c.rate)
	}
	if s := r.scale; s != nil {
		b.WriteString("\n### Scale\n\n")
		fmt.Fprintf(&b, "One signpost server, embedded store, %s instances (%s services × 10) loaded as %d nodes of 1,000 through `PUT /v1/nodes` in %v.\n\n", fmtQPS(float64(s.instances)), fmtQPS(float64(s.instances/10)), s.instances/1000, s.loadTime.Round(time.Millisecond))
		b.WriteString("| measure | value |\n| --- | ---: |\n")
		fmt.Fprintf(&b, "| resident memory (VmRSS) after loading | %.1f MB |\n", float64(s.rss)/1e6)
		fmt.Fprintf(&b, "| resident memory after a restart | %.1f MB |\n", float64(s.rssRestart)/1e6)
		fmt.Fprintf(&b, "| start-up from the embedded store (process start to `signpost server running`), median | %v (each: %s) |\n", durMedian(s.startups).Round(time.Millisecond), roundAll(s.startups))
		fmt.Fprintf(&b, "| start-up to correct answers (process start to svc1 and the last service answered right), median | %v (each: %s) |\n", durMedian(s.answering).Round(time.Millisecond), roundAll(s.answering))
		fmt.Fprintf(&b, "| wrong answers (NXDOMAIN for registered names) after the running line, all restarts | %d |\n", s.wrongAfterReady)
		fmt.Fprintf(&b, "| one node replacing 1,000 instances (`PUT /v1/nodes`, 1,000 removed and 1,000 added), median | %v (max %v; each: %s) |\n", durMedian(s.replaces).Round(time.Millisecond), durMax(s.replaces).Round(time.Millisecond), roundAll(s.replaces))
		fmt.Fprintf(&b, "| registrations a second (`PUT /v1/instances`, 32 concurrent clients, %d calls) | %s |\n", s.regs, fmtQPS(s.regsPerSec))
		fmt.Fprintf(&b, "| data dir size | %.1f MB |\n", float64(s.dataDirSize)/1e6)
	}
	if len(r.micro) > 0 {
		b.WriteString("\n### Answer-path microbenchmarks\n\n")
		fmt.Fprintf(&b, "`%s`\n\n| benchmark | ns/op | B/op | allocs/op |\n| --- | ---: | ---: | ---: |\n", r.microCmd)
		for _, m := range r.micro {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", m.name, m.nsPerOp, m.bPerOp, m.allocs)
		}
	}
	b.WriteString("\n### Other benchmarks run by the harness\n\n")
	if len(r.others) == 0 {
		if r.opts.others {
			b.WriteString("None found: no `go test ... -bench ...` command documented in other sections of this file, and no Go benchmark in other packages. The harness runs any such command it finds here (an env-gated one too, written as `VAR=1 go test ... -bench ...` in backticks).\n")
		} else {
			b.WriteString("Not run (--others=false).\n")
		}
	}
	for _, o := range r.others {
		status := "ok"
		if o.err != "" {
			status = "failed: " + o.err
		}
		fmt.Fprintf(&b, "`%s` (%s): %s in %v\n\n```\n%s\n```\n\n", o.cmd, o.source, status, o.took.Round(time.Second), strings.TrimRight(tail(o.out, 4000), "\n"))
	}
	b.WriteString("\n### Bars (issue 8)\n\n| bar | target | this run | met |\n| --- | --- | --- | --- |\n")
	for _, x := range r.bars() {
		b.WriteString(mdRow([]string{x.what, x.target, x.got, x.met}))
	}
	b.WriteString(endMarker + "\n")
	return b.String()
}

func qpsList(rs []perfResult) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmtQPS(r.QPS))
	}
	return strings.Join(s, ", ")
}

// busyLoad reports whether a 1-minute load average suggests other work
// on the machine beyond the harness's own.
func busyLoad(load string) bool {
	f := strings.Fields(load)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return err == nil && v > 0.5
}

// stripSection returns text without this harness's section.
func stripSection(text string) string {
	i := strings.Index(text, beginMarker)
	j := strings.Index(text, endMarker)
	if i < 0 || j < i {
		return text
	}
	return text[:i] + text[j+len(endMarker):]
}

// updateBenchmarks replaces this harness's section of path with section,
// appending it (or creating the file) when there is none.
func updateBenchmarks(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	text := string(b)
	i := strings.Index(text, beginMarker)
	j := strings.Index(text, endMarker)
	switch {
	case text == "":
		text = "# Benchmarks\n\nEach section is written by whoever owns it; the harness section by `go run ./bench`.\n\n" + section
	case i >= 0 && j > i:
		rest := text[j+len(endMarker):]
		rest = strings.TrimPrefix(rest, "\n")
		text = text[:i] + section + rest
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s: only one of %q and %q found; fix the file by hand", path, beginMarker, endMarker)
	default:
		if !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += "\n" + section
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
