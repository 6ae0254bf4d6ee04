package signposttest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Process is `signpost server` running as a child process on random
// loopback ports.
type Process struct {
	// Cmd is the running server process.
	Cmd *exec.Cmd
	// DNS and HTTP are the addresses it answers on.
	DNS, HTTP string
	// URL is the API's base URL.
	URL string
}

var runningLine = regexp.MustCompile(`signpost server running.*dns=(\S+) http=(\S+)`)

// StartProcess runs `signpost server` with args (after random loopback
// --dns and --http, and a temporary --data-dir) until the test ends. With
// nofile > 0 the process runs under that open-file limit (ulimit -n).
func StartProcess(t testing.TB, nofile int, args ...string) *Process {
	t.Helper()
	bin := Binary(t)
	args = append([]string{"server", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)
	var cmd *exec.Cmd
	if nofile > 0 {
		cmd = exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan [2]string, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := runningLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[1], m[2]}
			}
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case a := <-found:
		return &Process{Cmd: cmd, DNS: a[0], HTTP: a[1], URL: a[1]}
	case <-time.After(60 * time.Second):
		var seen []string
		for len(lines) > 0 {
			seen = append(seen, <-lines)
		}
		t.Fatalf("signpost server did not say it was running; its log:\n%s", strings.Join(seen, "\n"))
	}
	return nil
}

// Metric reads one gauge or counter (the sum over its labels) from the
// process's /metrics.
func (p *Process) Metric(ctx context.Context, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /metrics: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	return sum, nil
}

// RSS is the process's resident memory in bytes, from /proc.
func (p *Process) RSS() (int64, error) {
	return rssOf(p.Cmd.Process.Pid)
}

var vmRSS = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`)

func rssOf(pid int) (int64, error) {
	b, err := readProc(pid)
	if err != nil {
		return 0, err
	}
	m := vmRSS.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	kb, err := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10, err
}

func readProc(pid int) ([]byte, error) {
	return os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
}
