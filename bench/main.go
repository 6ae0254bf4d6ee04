// Command bench is signpost's benchmark harness (issue 8): signpost beside
// NSD, Knot, CoreDNS and a bare Go UDP echo loop under the same dnsperf
// load, signpost's query rate under registration churn, a 100,000-instance
// scale test, the DNS answer-path microbenchmarks, and the other
// benchmarks documented in BENCHMARKS.md. It prints a table and rewrites
// its own section of BENCHMARKS.md.
//
//	go run ./bench            # the full run (about 15 minutes; root, to apt-get install nsd and knot)
//	go run ./bench --smoke    # under a minute, for CI; never fails on speed
//
// All load goes to 127.0.0.1; every process it starts is killed when it
// ends, on error and on interrupt too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the harness's settings.
type options struct {
	smoke     bool
	rounds    int
	seconds   int
	services  int
	scale     int
	churnRate int
	regCount  int
	out       string
	write     bool
	coredns   bool
	others    bool
	keepTemp  bool
	phases    map[string]bool
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == echoFlag {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runEcho(ctx, os.Args[2], 2*time.Hour); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	fs.BoolVar(&o.smoke, "smoke", false, "short run for CI: one round of 1 s, small scale, installed servers only, never fails on speed, does not write BENCHMARKS.md unless --write")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds (the median is reported)")
	fs.IntVar(&o.seconds, "duration", 10, "seconds of each dnsperf run")
	fs.IntVar(&o.services, "services", 1000, "services in the DNS data set (3 instances each)")
	fs.IntVar(&o.scale, "scale", 100000, "instances in the scale test")
	fs.IntVar(&o.churnRate, "churn-rate", 1000, "registrations a second during the churn test")
	fs.IntVar(&o.regCount, "registrations", 10000, "PUT /v1/instances calls in the registrations-a-second test")
	fs.StringVar(&o.out, "out", "", "BENCHMARKS.md to update (default: the module root's)")
	write := fs.String("write", "auto", "update BENCHMARKS.md: true, false, or auto (full runs of every phase only)")
	fs.BoolVar(&o.coredns, "coredns", true, "include CoreDNS (built with go install from the module proxy when missing; smoke mode only uses an already built one)")
	fs.BoolVar(&o.others, "others", true, "run the other benchmarks documented in BENCHMARKS.md and the Go benchmarks of other packages")
	fs.BoolVar(&o.keepTemp, "keep", false, "keep the temp dir (configs, logs, zone file)")
	phases := fs.String("phases", "dns,scale,micro,others", "comma-separated parts to run: dns (with churn), scale, micro, others")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		def("rounds", &o.rounds, 1)
		def("duration", &o.seconds, 1)
		def("scale", &o.scale, 2000)
		def("registrations", &o.regCount, 300)
		if !set["others"] {
			o.others = false
		}
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "dns", "scale", "micro", "others":
			o.phases[p] = true
		default:
			return o, fmt.Errorf("--phases: unknown part %q", p)
		}
	}
	switch *write {
	case "auto":
		// A partial run would replace the whole section with its part.
		o.write = !o.smoke && len(o.phases) == 4
	case "true":
		o.write = true
	case "false":
		o.write = false
	default:
		return o, fmt.Errorf("--write %q: want true, false or auto", *write)
	}
	if o.rounds < 1 || o.seconds < 1 || o.services < 1 || o.scale < 1000 || o.churnRate < 1 || o.regCount < 1 {
		return o, errors.New("--rounds, --duration, --services, --churn-rate and --registrations must be positive, --scale at least 1000")
	}
	return o, nil
}

// moduleRoot finds the directory of signpost's go.mod from the working
// directory upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/signpost-dns/signpost\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no signpost go.mod above %s", dir)
		}
	}
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, o options) (err error) {
	start := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(root, "BENCHMARKS.md")
	}
	tmp, err := os.MkdirTemp("", "signpost-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	ps := newProcs()
	defer func() {
		ps.stopAll()
		if o.keepTemp {
			logf("kept %s", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()

	rep := &report{opts: o, started: start, machine: machineInfo(ctx)}
	logf("machine: %s", rep.machine.oneLine())

	bin, err := buildSignpost(ctx, root, tmp)
	if err != nil {
		return err
	}
	if o.phases["dns"] {
		if err := dnsPhase(ctx, o, ps, bin, tmp, rep); err != nil {
			return err
		}
	}
	if o.phases["scale"] {
		if err := scalePhase(ctx, o, ps, bin, tmp, rep); err != nil {
			return err
		}
	}
	if o.phases["micro"] {
		if err := microPhase(ctx, o, root, rep); err != nil {
			return err
		}
	}
	if o.others && o.phases["others"] {
		othersPhase(ctx, o, root, rep)
	}
	rep.elapsed = time.Since(start)
	rep.machine.loadAfter = loadAvg()
	fmt.Println(rep.text())
	if o.write {
		if err := updateBenchmarks(o.out, rep.markdown()); err != nil {
			return err
		}
		logf("updated %s", o.out)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return nil
}
