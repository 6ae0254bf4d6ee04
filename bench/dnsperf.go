package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// perfResult is one dnsperf run against one server.
type perfResult struct {
	QPS       float64
	Completed int64
	Lost      int64
	NoError   float64 // percent of responses with NOERROR
	CPU       time.Duration
	CPUPerQ   float64 // microseconds of server CPU per completed query
	Output    string
}

var (
	reQPS       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	reCompleted = regexp.MustCompile(`Queries completed:\s+([0-9]+)`)
	reLost      = regexp.MustCompile(`Queries lost:\s+([0-9]+)`)
	reNoError   = regexp.MustCompile(`NOERROR\s+[0-9]+\s+\(([0-9.]+)%\)`)
)

// dnsperfArgs are the load options every server gets.
func dnsperfArgs(addr, queryFile string, seconds int) []string {
	host, port, _ := strings.Cut(addr, ":")
	return []string{"-s", host, "-p", port, "-d", queryFile, "-c", "4", "-q", "200", "-l", strconv.Itoa(seconds)}
}

// runDNSPerf runs dnsperf against addr for seconds and measures the CPU
// time that serverPID (and its children) spent meanwhile.
func runDNSPerf(ctx context.Context, addr, queryFile string, seconds int, serverPID int) (perfResult, error) {
	var r perfResult
	before, err := treeCPU(serverPID)
	if err != nil {
		return r, fmt.Errorf("cpu before dnsperf on %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dnsperf", dnsperfArgs(addr, queryFile, seconds)...)
	out, err := cmd.CombinedOutput()
	r.Output = string(out)
	if err != nil {
		return r, fmt.Errorf("dnsperf against %s: %w: %s", addr, err, tail(r.Output, 1000))
	}
	after, err := treeCPU(serverPID)
	if err != nil {
		return r, fmt.Errorf("cpu after dnsperf on %s: %w", addr, err)
	}
	m := reQPS.FindStringSubmatch(r.Output)
	c := reCompleted.FindStringSubmatch(r.Output)
	if m == nil || c == nil {
		return r, fmt.Errorf("dnsperf against %s: no statistics in output: %s", addr, tail(r.Output, 1000))
	}
	r.QPS, _ = strconv.ParseFloat(m[1], 64)
	r.Completed, _ = strconv.ParseInt(c[1], 10, 64)
	if l := reLost.FindStringSubmatch(r.Output); l != nil {
		r.Lost, _ = strconv.ParseInt(l[1], 10, 64)
	}
	if n := reNoError.FindStringSubmatch(r.Output); n != nil {
		r.NoError, _ = strconv.ParseFloat(n[1], 64)
	}
	r.CPU = after - before
	if r.Completed > 0 {
		r.CPUPerQ = float64(r.CPU.Microseconds()) / float64(r.Completed)
	}
	return r, nil
}
