package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/signpost-dns/signpost/internal/check"
)

func init() {
	commands["check"] = command{"probe every registered endpoint's health path and remove the failing ones (for backends without leases)", runCheck}
}

func runCheck(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("check", "[flags]")
	mkClient := clientFlags(fs)
	mkLog := logFlags(fs)
	var cfg check.Config
	backendName := fs.String("backend", "server", "registry to sweep: server (the signpost server API) or route53")
	interval := fs.Duration("interval", 0, "sweep again every interval (0: sweep once and exit, for cron or a systemd timer)")
	sweeps := fs.Int("sweeps", 0, "with --interval: exit after this many sweeps (0: never); --sweeps 3 --failures 3 counts failures in a row within one run, with no state file (a scheduled task that may run on any host)")
	fs.StringVar(&cfg.Path, "path", "/health", "HTTP path probed on each endpoint; a 2xx answer passes")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "timeout of one probe")
	fs.IntVar(&cfg.Failures, "failures", 3, "failures in a row before an endpoint is removed")
	fs.IntVar(&cfg.Concurrency, "concurrency", 32, "probes at once")
	fs.StringVar(&cfg.StateFile, "state-file", "", "file keeping failure counts between one-shot runs (needed with --interval 0 and --failures > 1)")
	fs.BoolVar(&cfg.DryRun, "dry-run", false, "report what would be removed, remove nothing (reads --state-file, never writes it)")
	includeAgents := fs.Bool("include-agents", false, "server backend: also sweep instances that belong to an agent's node (agents check their own containers)")
	r53 := route53CheckFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := mkLog()
	if err != nil {
		return err
	}
	cfg.Log = log
	var src check.Source
	switch *backendName {
	case "server":
		c, err := mkClient()
		if err != nil {
			return err
		}
		src = &check.ServerSource{Client: c, IncludeAgents: *includeAgents}
	case "route53":
		if src, err = r53(ctx, log); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--backend %q: want server or route53", *backendName)
	}
	if *interval == 0 && cfg.Failures > 1 && cfg.StateFile == "" && *sweeps == 0 {
		log.Warn("one-shot sweep without --state-file: failures are not remembered between runs, so nothing fails more than once in a row", "failures", cfg.Failures)
	}
	sw, err := check.New(src, cfg)
	if err != nil {
		return err
	}
	switch {
	case *sweeps < 0 || (*sweeps > 0 && *interval == 0):
		return fmt.Errorf("--sweeps %d: want 0, or a count of sweeps with --interval", *sweeps)
	case *sweeps > 0:
		return sw.Sweeps(ctx, *interval, *sweeps, func(res check.Result) { _ = res.Report(stdout) })
	case *interval > 0:
		return sw.Run(ctx, *interval)
	}
	res, err := sw.Sweep(ctx)
	_ = res.Report(stdout)
	return err
}
