package awstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/signpost-dns/signpost/internal/signposttest"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireTools skips the test, loudly, when a tool is missing, and fails it
// instead when CI=true: CI must run these tests (.ci/run checks the tools
// first).
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	skipOrFail(t, fmt.Sprintf("%s not on PATH: the CloudFormation tests against moto did not run", strings.Join(missing, ", ")))
}

// skipOrFail skips the test with msg, loudly, or fails it when CI=true.
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true makes it required")
	}
	fmt.Fprintln(os.Stderr, "\n*** SKIPPED: "+msg+" ***")
	t.Skip(msg)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startMoto runs moto_server on a random loopback port until the test
// ends and returns its URL.
func startMoto(t *testing.T) string {
	t.Helper()
	requireTools(t, "moto_server", "aws")
	var url string
	var out *signposttest.Output
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		out = &signposttest.Output{}
		cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start moto_server: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			// Its own process group, so that whatever the Python launcher
			// started goes too.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		url = fmt.Sprintf("http://127.0.0.1:%d", port)
		if waitHTTP(url+"/moto-api/", done, 60*time.Second) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("moto_server's log (end):\n%s", tail(out.String(), 40))
				}
			})
			return url
		}
		stop()
		t.Logf("moto_server on port %d did not answer (attempt %d):\n%s", port, attempt+1, tail(out.String(), 20))
	}
	t.Fatalf("moto_server never answered")
	return ""
}

// waitHTTP polls url until it answers 200, the process exits or the
// deadline passes.
func waitHTTP(url string, exited <-chan struct{}, d time.Duration) bool {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// awsEnv is the environment of every AWS client the tests run: fixed
// fake credentials, one region, no shared config, no instance metadata.
func awsEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
		"AWS_DEFAULT_REGION=us-east-1", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=")
}

// cli runs the aws CLI against one endpoint.
type cli struct {
	t        *testing.T
	endpoint string
}

// try runs `aws <args> --endpoint-url <moto> --output json` and returns
// its stdout.
func (c cli) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append(append([]string{}, args...), "--endpoint-url", c.endpoint, "--output", "json")
	cmd := exec.CommandContext(ctx, "aws", full...)
	cmd.Env = awsEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("aws %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// run is try, failing the test on error.
func (c cli) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// json runs the command and decodes its output into v.
func (c cli) json(v any, args ...string) {
	c.t.Helper()
	out := c.run(args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("aws %s: decode %q: %v", strings.Join(args, " "), tail(out, 5), err)
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not after %s; last seen: %s", what, d, last)
}
