package signposttest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Need returns the path of a program the test needs, from PATH or
// /usr/sbin (where Debian puts daemons such as nsd). It skips the test,
// loudly, when the program is missing, except in CI (CI set), where
// .ci/run installs it: there it fails.
func Need(t testing.TB, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err == nil {
		return p
	}
	if sbin := filepath.Join("/usr/sbin", prog); fileExists(sbin) {
		return sbin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI (.ci/run installs it): %v", prog, err)
	}
	t.Skipf("SKIPPING: %s is not installed (apt-get install %s)", prog, prog)
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// DocFile returns the file at path in the repository (docs/resolvers/
// unbound.conf) with each of the documented placeholders replaced (pairs:
// old, new), and fails if one is missing, so that a test runs exactly
// what the documentation says.
func DocFile(t testing.TB, path string, replace ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	full := filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(path))
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatalf("documented configuration: %v", err)
	}
	text := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(text, replace[i]) {
			t.Fatalf("%s no longer contains %q: update the test with the documentation", path, replace[i])
		}
		text = strings.ReplaceAll(text, replace[i], replace[i+1])
	}
	return text
}

// FreePort returns a loopback port free for both UDP and TCP right now.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		_ = pc.Close()
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// Run starts a program for the rest of the test, kills it at the end, and
// shows its output if the test failed.
func Run(t testing.TB, prog string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(prog, args...)
	out := &Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(prog), out.String())
		}
	})
	return cmd
}
