package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the echo reference process, as
// the harness binary does.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == echoFlag {
		if err := runEcho(context.Background(), os.Args[2], 10*time.Minute); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs `go run ./bench --smoke` in-process: it fails when
// signpost does not answer or the harness breaks, never on speed. It runs
// in CI (CI=true) and wherever dnsperf is installed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED: the benchmark smoke run is not short (-short)")
	}
	if _, err := exec.LookPath("dnsperf"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("SKIPPED LOUDLY: dnsperf is not installed and CI is not true; `apt-get install dnsperf` to run the benchmark smoke test")
	}
	o, err := parseOptions([]string{"--smoke", "--write=false"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatalf("smoke run: %v", err)
	}
}

func TestUpdateBenchmarksKeepsOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := updateBenchmarks(path, beginMarker+"\none\n"+endMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	others := "\n## Agent\n\n`go test -run XXX -bench . ./internal/agent/`\n"
	if err := os.WriteFile(path, append(b, others...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateBenchmarks(path, beginMarker+"\ntwo\n"+endMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	s := string(b)
	if strings.Contains(s, "one") || !strings.Contains(s, "two") || !strings.HasSuffix(s, others) || strings.Count(s, beginMarker) != 1 {
		t.Fatalf("got:\n%s", s)
	}
	cmds := documentedCommands(path)
	if len(cmds) != 1 || cmds[0] != "go test -run XXX -bench . ./internal/agent/" {
		t.Fatalf("documented commands: %q", cmds)
	}
}

func TestDocumentedCommandsEnvGated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	text := "```sh\nSIGNPOST_ETCD_BENCH=1 go test -run XXX -bench Replication ./internal/store/etcd/\n```\n" +
		"go test ./... (not a benchmark)\n" + beginMarker + "\n`go test -bench Respond ./internal/dnsserver/`\n" + endMarker + "\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := documentedCommands(path)
	if len(cmds) != 1 || cmds[0] != "SIGNPOST_ETCD_BENCH=1 go test -run XXX -bench Replication ./internal/store/etcd/" {
		t.Fatalf("documented commands: %q", cmds)
	}
}

func TestDocumentedCommandsIndented(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	text := "Command:\n\n    SIGNPOST_BENCH=1 go test -count=1 -run TestBenchEventToDNS -v ./internal/agent/\n\n(`SIGNPOST_BENCH_N=200` for more.)\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := documentedCommands(path)
	if len(cmds) != 1 || cmds[0] != "SIGNPOST_BENCH=1 go test -count=1 -run TestBenchEventToDNS -v ./internal/agent/" {
		t.Fatalf("documented commands: %q", cmds)
	}
}
