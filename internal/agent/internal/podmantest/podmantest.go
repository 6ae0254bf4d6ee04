// Package podmantest runs a Podman service of a test's own, the engine
// behind Podman's Docker-compatible socket (podman system service), so
// that the agent's tests can follow Podman as they follow Docker.
//
// The service is rootful and touches nothing else on the machine: its
// storage, run, temporary and network-configuration directories and its
// socket are all in one temporary directory that the test removes, its
// containers.conf is the test's (file events, cgroupfs: no systemd or
// journald needed), and the test's cleanup removes its containers and
// stops it. Images are built FROM scratch around the static test server
// of package dockertest, since none can be pulled. Every container carries
// dockertest.Label and the session's dockertest.TestLabel.
//
// What the service cannot do here: without systemd, Podman runs no
// HEALTHCHECK on its own (it schedules them as systemd timers); a test
// runs one with HealthcheckRun.
package podmantest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
)

// ImageName is the test server's image in the service's storage.
const ImageName = "localhost/signpost-test-web:latest"

// Require skips the test, loudly, when Podman is not installed or the
// test does not run as root (the service is rootful), and fails it
// instead when CI=true: CI must run the Podman tests.
func Require(t testing.TB) {
	t.Helper()
	var msg string
	if _, err := exec.LookPath("podman"); err != nil {
		msg = "PODMAN IS NOT INSTALLED (apt-get install podman): the agent's Podman tests did not run"
	} else if os.Geteuid() != 0 {
		msg = "NOT ROOT: the agent's Podman tests run a rootful podman system service, and did not run"
	}
	if msg == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true makes them required")
	}
	fmt.Fprintln(os.Stderr, "\n*** SKIPPED: "+msg+" ***")
	t.Skip(msg)
}

// Service is one test's Podman service.
type Service struct {
	t testing.TB
	// Dir holds everything the service keeps.
	Dir string
	// Socket is the path of its Docker-compatible API socket.
	Socket string
	// ID is the value of dockertest.TestLabel on the session's containers.
	ID string
	// Version is Podman's version ("4.3.1").
	Version string
	// Network is the session's network, which Run puts containers on.
	Network string

	cmd     *exec.Cmd
	done    chan error
	ulimits []string
}

// Start starts a Podman service for the test, waits until it answers, and
// stops it (after removing its containers) when the test ends.
func Start(t testing.TB) *Service {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "sp-podman-") // short: conmon's socket paths live under it
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%d", t.Name(), time.Now().UnixNano()))
	s := &Service{t: t, Dir: dir, Socket: filepath.Join(dir, "podman.sock"), ID: hex.EncodeToString(h[:6]), done: make(chan error, 1)}
	conf := "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n"
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append(s.globalFlags(), "system", "service", "--time=0", "unix://"+s.Socket)
	s.cmd = exec.Command("podman", args...)
	// netavark runs iptables, which a PATH without the sbin directories
	// (some test runners') does not find: "netavark: No such file or directory".
	s.cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	started := time.Now()
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start podman system service: %v", err)
	}
	go func() { s.done <- s.cmd.Wait(); logf.Close() }()
	t.Cleanup(s.stop)
	if err := s.waitPing(30 * time.Second); err != nil {
		t.Fatalf("podman system service on %s: %v; its log:\n%s", s.Socket, err, s.Log())
	}
	s.Version = s.Podman("version", "--format", "{{.Server.Version}}")
	backend := s.Podman("info", "--format", "{{.Host.NetworkBackend}}")
	t.Logf("podman %s (network backend %s) answers on %s after %s", s.Version, backend, s.Socket, time.Since(started).Round(time.Millisecond))
	s.ulimits, err = ulimitsOf(s.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A network of the session's own rather than Podman's default one
	// (bridge podman0 on 10.88.0.0/16), which another Podman on the host
	// may use with its own address allocations: Podman picks a free
	// bridge name and subnet. No DNS server (aardvark-dns) on it.
	s.Network = "sp-" + s.ID
	s.Podman(append(append([]string{"network", "create", "--disable-dns"}, s.Labels()...), s.Network)...)
	return s
}

// globalFlags keep the service and the CLI's local commands in Dir.
func (s *Service) globalFlags() []string {
	return []string{
		"--root", filepath.Join(s.Dir, "root"),
		"--runroot", filepath.Join(s.Dir, "run"),
		"--tmpdir", filepath.Join(s.Dir, "tmp"),
		"--network-config-dir", filepath.Join(s.Dir, "net"),
	}
}

// ulimitsOf returns --ulimit flags for the hard open-file and process
// limits of process pid. Podman gives a container 1048576 of each unless
// told otherwise, which a runtime without CAP_SYS_RESOURCE (this kind of
// machine) cannot set: runc fails with "error setting rlimit type 7:
// operation not permitted".
func ulimitsOf(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return nil, err
	}
	var flags []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		var name string
		switch {
		case strings.HasPrefix(line, "Max open files"):
			name = "nofile"
		case strings.HasPrefix(line, "Max processes"):
			name = "nproc"
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) < 5 {
			return nil, fmt.Errorf("/proc/%d/limits: %q", pid, line)
		}
		hard := f[len(f)-2]
		if hard == "unlimited" {
			continue
		}
		flags = append(flags, "--ulimit", name+"="+hard+":"+hard)
	}
	return flags, sc.Err()
}

// Host is the service's address for a Docker client (DOCKER_HOST).
func (s *Service) Host() string { return "unix://" + s.Socket }

// waitPing polls GET /_ping until it answers OK.
func (s *Service) waitPing(within time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
		},
	}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("the service exited: %v", err)
		default:
		}
		resp, err := hc.Get("http://podman/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("_ping: %s", resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond) // polling interval of a condition wait
	}
	return fmt.Errorf("no answer within %s: %v", within, last)
}

// Log is the service's log so far.
func (s *Service) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "service.log"))
	return string(b)
}

// Podman runs the podman CLI against the service (--url) and returns its
// trimmed stdout, failing the test on error.
func (s *Service) Podman(args ...string) string {
	s.t.Helper()
	out, err := s.Try(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// Try runs the podman CLI against the service and returns its trimmed stdout.
func (s *Service) Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", append([]string{"--url", s.Host()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Image builds the test server's image in the service's storage (once per
// service) and returns its name.
func (s *Service) Image() string {
	s.t.Helper()
	if got, err := s.Try("image", "inspect", "--format", `{{index .Config.Labels "signpost.test.src"}}`, ImageName); err == nil && got == dockertest.SourceSum() {
		return ImageName
	}
	dir, err := os.MkdirTemp("", "signpost-podman-image")
	if err != nil {
		s.t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := dockertest.BuildContext(dir); err != nil {
		s.t.Fatal(err)
	}
	s.Podman("build", "-q", "--layers=false", "-t", ImageName, dir)
	return ImageName
}

// Labels are the session's --label flags.
func (s *Service) Labels() []string {
	return []string{"--label", dockertest.Label + "=1", "--label", dockertest.TestLabel + "=" + s.ID}
}

// Run starts a container of the test image (podman run -d) with args
// before the image name, and returns its id.
func (s *Service) Run(args ...string) string {
	s.t.Helper()
	img := s.Image()
	full := append([]string{"run", "-d"}, s.Labels()...)
	full = append(full, s.ulimits...)
	full = append(full, "--network", s.Network)
	full = append(full, args...)
	return s.Podman(append(full, img)...)
}

// HealthcheckRun runs a container's HEALTHCHECK once (podman healthcheck
// run) and reports whether it passed.
func (s *Service) HealthcheckRun(id string) bool {
	_, err := s.Try("healthcheck", "run", id)
	return err == nil
}

func (s *Service) stop() {
	if out, err := s.Try("ps", "-aq"); err == nil && out != "" {
		if _, err := s.Try(append([]string{"rm", "-f", "-t", "0"}, strings.Fields(out)...)...); err != nil {
			s.t.Logf("podman cleanup: %v", err)
		}
	}
	if s.Network != "" {
		if _, err := s.Try("network", "rm", "-f", s.Network); err != nil {
			s.t.Logf("podman cleanup: %v", err)
		}
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.t.Failed() {
		s.t.Logf("podman service log:\n%s", s.Log())
	}
	s.unmount()
	if err := os.RemoveAll(s.Dir); err != nil {
		s.t.Logf("podman cleanup: %v (left in %s)", err, s.Dir)
	}
}

// unmount undoes the mounts the service left under Dir (its storage
// driver bind-mounts root/overlay on itself), innermost first.
func (s *Service) unmount() {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var under []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], s.Dir+"/") {
			under = append(under, f[1])
		}
	}
	for i := len(under) - 1; i >= 0; i-- {
		if out, err := exec.Command("umount", "--lazy", under[i]).CombinedOutput(); err != nil {
			s.t.Logf("podman cleanup: umount %s: %v: %s", under[i], err, bytes.TrimSpace(out))
		}
	}
}
