package main

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// microResult is one line of `go test -bench` output.
type microResult struct {
	name    string
	nsPerOp string
	bPerOp  string
	allocs  string
}

var reBenchLine = regexp.MustCompile(`^(Benchmark\S+)\s+\d+\s+([0-9.]+) ns/op(?:.*?\s([0-9.]+) B/op\s+([0-9]+) allocs/op)?`)

// microCmd is the answer-path microbenchmark command.
func microCmd(smoke bool) []string {
	args := []string{"test", "-run", "^$", "-bench", "Respond", "-benchmem", "-count", "1"}
	if smoke {
		args = append(args, "-benchtime", "200x")
	}
	return append(args, "./internal/dnsserver/")
}

// microPhase runs the dnsserver answer-path microbenchmarks.
func microPhase(ctx context.Context, o options, root string, rep *report) error {
	args := microCmd(o.smoke)
	rep.microCmd = "go " + joinArgs(args)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "go", args...)
	c.Dir = root
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", rep.microCmd, err, tail(string(out), 2000))
	}
	rep.microOut = string(out)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := reBenchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		rep.micro = append(rep.micro, microResult{name: m[1], nsPerOp: m[2], bPerOp: m[3], allocs: m[4]})
	}
	if len(rep.micro) == 0 {
		return fmt.Errorf("%s: no benchmark lines in output: %s", rep.microCmd, tail(string(out), 1000))
	}
	logf("microbenchmarks: %d results", len(rep.micro))
	return nil
}

// otherRun is one documented or discovered benchmark command and its
// output.
type otherRun struct {
	cmd    string
	source string
	out    string
	err    string
	took   time.Duration
}

// reGoTestCmd matches a go test command at the start of a line or of an
// inline code span, with any environment assignments before it.
var reGoTestCmd = regexp.MustCompile("(?:^|`)((?:[A-Z][A-Z0-9_]*=\\S+\\s+)*go test [^`\\n]*)")

// reBenchEnv matches an environment assignment that gates a benchmark.
var reBenchEnv = regexp.MustCompile(`^(?:[A-Z][A-Z0-9_]*=\S+\s+)*[A-Z0-9_]*BENCH[A-Z0-9_]*=`)

// documentedCommands returns the `go test ... -bench ...` commands written
// in BENCHMARKS.md outside this harness's own section.
func documentedCommands(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	text := stripSection(string(b))
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
		for _, m := range reGoTestCmd.FindAllStringSubmatch(line, -1) {
			cmd := strings.TrimSpace(m[1])
			if !strings.Contains(cmd, "-bench") && !reBenchEnv.MatchString(cmd) {
				continue // a test command, not a benchmark
			}
			if !seen[cmd] {
				seen[cmd] = true
				out = append(out, cmd)
			}
		}
	}
	return out
}

var reBenchFunc = regexp.MustCompile(`(?m)^func (Benchmark\w+)\(\w+ \*testing\.B\)`)

// discoverBenchmarks returns the package directories (./x/y) outside
// internal/dnsserver and bench that define Go benchmarks.
func discoverBenchmarks(root string) []string {
	dirs := map[string]bool{}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil && reBenchFunc.Match(b) {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			rel = filepath.ToSlash(rel)
			if rel != "internal/dnsserver" && rel != "bench" {
				dirs["./"+rel] = true
			}
		}
		return nil
	})
	out := make([]string, 0, len(dirs))
	for d := range dirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// othersPhase runs the benchmarks other engineers documented in
// BENCHMARKS.md, and any Go benchmark of another package that no
// documented command names. Their failures are reported, not fatal.
func othersPhase(ctx context.Context, o options, root string, rep *report) {
	docs := documentedCommands(o.out)
	var cmds []otherRun
	for _, c := range docs {
		cmds = append(cmds, otherRun{cmd: c, source: "documented in BENCHMARKS.md"})
	}
	for _, dir := range discoverBenchmarks(root) {
		named := false
		for _, c := range docs {
			if strings.Contains(c, dir) || strings.Contains(c, strings.TrimPrefix(dir, "./")) {
				named = true
			}
		}
		if !named {
			cmds = append(cmds, otherRun{cmd: "go test -run ^$ -bench . -benchmem -count 1 " + dir, source: "Benchmark functions found in " + dir})
		}
	}
	for i := range cmds {
		r := &cmds[i]
		if ctx.Err() != nil {
			r.err = "interrupted"
			continue
		}
		logf("other benchmark: %s", r.cmd)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		c := exec.CommandContext(cctx, "bash", "-c", r.cmd)
		c.Dir = root
		t := time.Now()
		out, err := c.CombinedOutput()
		cancel()
		r.took = time.Since(t)
		r.out = string(out)
		if err != nil {
			r.err = err.Error()
		}
	}
	rep.others = cmds
}
