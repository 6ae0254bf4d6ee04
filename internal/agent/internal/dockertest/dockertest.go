// Package dockertest helps tests run containers on the real Docker engine
// without touching anything they did not create: every container, network
// and image they make carries the label signpost.test=1, every container
// and network also a label unique to the test, and the test's cleanup
// removes exactly those. Images are built FROM scratch around a static Go
// server, since no image can be pulled.
package dockertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Label is on everything the tests create.
const Label = "signpost.test"

// TestLabel carries each test's own value.
const TestLabel = "signpost.test.t"

// ImageName is the test server's image.
const ImageName = "signpost-test-web:latest"

//go:embed testserver/main.go
var serverSource []byte

// Require skips the test, loudly, when no Docker engine answers, and fails
// it instead when CI=true: CI must run the Docker tests.
func Require(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.APIVersion}}").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("NO DOCKER ENGINE ANSWERS (docker version: %v: %s): the agent's Docker tests did not run", err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true makes them required")
	}
	fmt.Fprintln(os.Stderr, "\n*** SKIPPED: "+msg+" ***")
	t.Skip(msg)
}

// Docker runs the docker CLI and returns its trimmed stdout, failing the
// test on error.
func Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Try(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Try runs the docker CLI and returns its trimmed stdout.
func Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// HealthImageName is the test server's image with a Docker HEALTHCHECK
// that runs "/web -healthcheck" every half second (one failure makes the
// container unhealthy).
const HealthImageName = "signpost-test-web-hc:latest"

var (
	imageOnce sync.Once
	imageErr  error

	healthOnce sync.Once
	healthErr  error
)

// HealthImage returns the HEALTHCHECK image, building it (from Image)
// when it is absent or stale.
func HealthImage(t testing.TB) string {
	t.Helper()
	base := Image(t)
	healthOnce.Do(func() { healthErr = buildHealthImage(base) })
	if healthErr != nil {
		t.Fatal(healthErr)
	}
	return HealthImageName
}

func buildHealthImage(base string) error {
	id, err := Try("image", "inspect", "--format", "{{.Id}}", base)
	if err != nil {
		return err
	}
	hc := `HEALTHCHECK --interval=500ms --timeout=2s --retries=1 CMD ["/web", "-healthcheck"]`
	sum := sha256.Sum256([]byte(id + hc))
	src := hex.EncodeToString(sum[:8])
	if got, err := Try("image", "inspect", "--format", `{{index .Config.Labels "signpost.test.src"}}`, HealthImageName); err == nil && got == src {
		return nil
	}
	dir, err := os.MkdirTemp("", "signpost-test-hc-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	df := fmt.Sprintf("FROM %s\nLABEL %s=1 signpost.test.src=%s\n%s\n", base, Label, src, hc)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return err
	}
	if _, err := Try("build", "-q", "-t", HealthImageName, dir); err != nil {
		return fmt.Errorf("build the HEALTHCHECK test image: %w", err)
	}
	return nil
}

// Image returns the test server's image, building it when it is absent or
// was built from another version of the source.
func Image(t testing.TB) string {
	t.Helper()
	imageOnce.Do(func() { imageErr = buildImage() })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return ImageName
}

func buildImage() error {
	src := SourceSum()
	if got, err := Try("image", "inspect", "--format", `{{index .Config.Labels "signpost.test.src"}}`, ImageName); err == nil && got == src {
		return nil
	}
	dir, err := os.MkdirTemp("", "signpost-test-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := BuildContext(dir); err != nil {
		return err
	}
	if _, err := Try("build", "-q", "-t", ImageName, dir); err != nil {
		return fmt.Errorf("build the test image: %w", err)
	}
	return nil
}

// SourceSum is the short hash of the test server's source that its image
// carries in the label signpost.test.src.
func SourceSum() string {
	sum := sha256.Sum256(serverSource)
	return hex.EncodeToString(sum[:8])
}

// BuildContext writes the test image's build context to dir: the test
// server built as a static linux binary (web) and a FROM scratch
// Dockerfile around it, for docker build or podman build.
func BuildContext(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "main.go"), serverSource, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module testserver\n\ngo 1.22\n"), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "web", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the test server: %w: %s", err, out)
	}
	df := fmt.Sprintf("FROM scratch\nLABEL %s=1 signpost.test.src=%s\nCOPY web /web\nENTRYPOINT [\"/web\"]\n", Label, SourceSum())
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644)
}

// Session is one test's share of the engine.
type Session struct {
	t testing.TB
	// ID is the value of TestLabel on everything this test creates.
	ID string
}

// New starts a session whose containers and networks are removed when the
// test ends.
func New(t testing.TB) *Session {
	t.Helper()
	Require(t)
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%d", t.Name(), time.Now().UnixNano()))
	s := &Session{t: t, ID: hex.EncodeToString(h[:6])}
	t.Cleanup(s.cleanup)
	return s
}

// Labels are the labels to run containers with: --label flags.
func (s *Session) Labels() []string {
	return []string{"--label", Label + "=1", "--label", TestLabel + "=" + s.ID}
}

// Run starts a container of the test image with args before the image
// name (flags such as -p, -e, --name), and returns its id.
func (s *Session) Run(args ...string) string {
	s.t.Helper()
	img := Image(s.t)
	full := append([]string{"run", "-d"}, s.Labels()...)
	full = append(full, args...)
	full = append(full, img)
	return Docker(s.t, full...)
}

// RunImage is Run with another image (HealthImage, say).
func (s *Session) RunImage(img string, args ...string) string {
	s.t.Helper()
	full := append([]string{"run", "-d"}, s.Labels()...)
	full = append(full, args...)
	full = append(full, img)
	return Docker(s.t, full...)
}

// Create creates (without starting) a container like Run.
func (s *Session) Create(args ...string) string {
	s.t.Helper()
	img := Image(s.t)
	full := append([]string{"create"}, s.Labels()...)
	full = append(full, args...)
	full = append(full, img)
	return Docker(s.t, full...)
}

// Network creates a network owned by the test.
func (s *Session) Network(name string) string {
	s.t.Helper()
	return Docker(s.t, append([]string{"network", "create"}, append(s.Labels(), name)...)...)
}

// Running lists the ids of the test's running containers.
func (s *Session) Running() []string {
	s.t.Helper()
	out := Docker(s.t, "ps", "-q", "--no-trunc", "--filter", "label="+TestLabel+"="+s.ID)
	return strings.Fields(out)
}

func (s *Session) cleanup() {
	filter := "label=" + TestLabel + "=" + s.ID
	if ids, err := Try("ps", "-aq", "--filter", filter); err == nil && ids != "" {
		if _, err := Try(append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
			s.t.Logf("cleanup: %v", err)
		}
	}
	if ids, err := Try("network", "ls", "-q", "--filter", filter); err == nil && ids != "" {
		if _, err := Try(append([]string{"network", "rm"}, strings.Fields(ids)...)...); err != nil {
			s.t.Logf("cleanup: %v", err)
		}
	}
}
