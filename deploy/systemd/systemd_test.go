// Package systemd_test runs the systemd units' ExecStart lines as systemd
// would run them: as an unprivileged, dynamic-like user, with the API
// token that root keeps at /etc/signpost/token (mode 0600) handed over by
// LoadCredential= in $CREDENTIALS_DIRECTORY.
package systemd_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/signposttest"
)

// unit is what the test needs of a unit file.
type unit struct {
	execStart      []string
	loadCredential string
	dynamicUser    bool
	groups         []string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var u unit
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "ExecStart":
			u.execStart = strings.Fields(v)
		case "LoadCredential":
			u.loadCredential = v
		case "DynamicUser":
			u.dynamicUser = v == "yes"
		case "SupplementaryGroups":
			u.groups = strings.Fields(v)
		}
	}
	if len(u.execStart) == 0 {
		t.Fatalf("%s: no ExecStart", path)
	}
	return u
}

// host is a miniature of the machine: /etc/signpost/token (root, 0600),
// the signpost binary, and what systemd makes for the unit's dynamic user.
type host struct {
	root, bin, token, tokenValue string
	uid                          int
}

func newHost(t *testing.T) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (to run the units as another user), and CI=true")
		}
		t.Skip("SKIPPING: this test needs root to run the units as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	root, err := os.MkdirTemp(reachableTempDir(), "signpost-systemd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &host{root: root, uid: 61184 + os.Getpid()%4000} // systemd's DynamicUser range
	// The binary where the unit expects it, readable by anyone.
	h.bin = filepath.Join(root, "usr/local/bin/signpost")
	data, err := os.ReadFile(signposttest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Dir(h.bin), 0o755, 0)
	if err := os.WriteFile(h.bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// The token as the README says to keep it: root's, mode 0600.
	h.tokenValue = "systemd-test-token-0123456789"
	h.token = filepath.Join(root, "etc/signpost/token")
	mkdir(t, filepath.Dir(h.token), 0o755, 0)
	if err := os.WriteFile(h.token, []byte(h.tokenValue+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// reachableTempDir is the temporary directory if every user can reach
// into it (the unit's user must), else /tmp.
func reachableTempDir() string {
	for d := os.TempDir(); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == filepath.Dir(d) {
			return os.TempDir()
		}
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// credentials does what LoadCredential=token:<path> does: a directory
// only the unit's user reads, holding a copy of the file.
func (h *host) credentials(t *testing.T, u unit, name string) string {
	return h.credentialsOf(t, u, name, nil)
}

// credentialsOf is credentials with the file's content replaced by data
// (unless nil): a wrong token.
func (h *host) credentialsOf(t *testing.T, u unit, name string, data []byte) string {
	t.Helper()
	id, src, ok := strings.Cut(u.loadCredential, ":")
	if !ok || id != "token" || src != "/etc/signpost/token" {
		t.Fatalf("LoadCredential=%q, want token:/etc/signpost/token", u.loadCredential)
	}
	dir := filepath.Join(h.root, "run/credentials", name)
	mkdir(t, filepath.Dir(dir), 0o755, 0)
	if data == nil {
		var err error
		if data, err = os.ReadFile(filepath.Join(h.root, src)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id), data, 0o400); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, id), dir} {
		if err := os.Chown(p, h.uid, h.uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	return dir
}

// start runs the unit's ExecStart as the unit's user, the variables and
// paths replaced as given, and returns its stderr as it comes.
func (h *host) start(t *testing.T, u unit, replace map[string][]string, env ...string) *proc {
	t.Helper()
	if !u.dynamicUser {
		t.Fatal("the unit does not run as DynamicUser=yes")
	}
	var args []string
	for _, a := range u.execStart {
		if r, ok := replace[a]; ok {
			args = append(args, r...)
			continue
		}
		args = append(args, a)
	}
	if args[0] != "/usr/local/bin/signpost" {
		t.Fatalf("ExecStart runs %s, want /usr/local/bin/signpost", args[0])
	}
	args[0] = h.bin
	ctx, cancel := context.WithCancel(context.Background())
	groups := []string{"--clear-groups"}
	if len(u.groups) > 0 {
		var gids []string
		for _, g := range u.groups {
			grp, err := user.LookupGroup(g)
			if err != nil {
				t.Fatalf("SupplementaryGroups=%s: %v", g, err)
			}
			gids = append(gids, grp.Gid)
		}
		groups = []string{"--groups", strings.Join(gids, ",")}
	}
	setpriv := append([]string{"--reuid", fmt.Sprint(h.uid), "--regid", fmt.Sprint(h.uid)}, groups...)
	cmd := exec.CommandContext(ctx, "setpriv", append(append(setpriv, "--"), args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	p := &proc{lines: make(chan string, 100)}
	cmd.Stderr = p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// proc collects a process's stderr, line by line.
type proc struct {
	buf   bytes.Buffer
	lines chan string
	done  chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.Reset()
			p.buf.WriteString(line)
			return len(b), nil
		}
		select {
		case p.lines <- line:
		default:
		}
	}
}

// wait returns the first line matching re, or fails the test with what
// the process said.
func (p *proc) wait(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var said []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-p.lines:
			said = append(said, l)
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.done:
			for len(p.lines) > 0 {
				said = append(said, <-p.lines)
			}
			t.Fatalf("the process exited without saying %s; it said:\n%s", re, strings.Join(said, ""))
		case <-timeout:
			t.Fatalf("30 s without %s; the process said:\n%s", re, strings.Join(said, ""))
		}
	}
}

var running = regexp.MustCompile(`signpost server running.* http=(\S+)`)

// startServer runs the server unit with its credential and returns its
// API URL.
func (h *host) startServer(t *testing.T) string {
	t.Helper()
	u := readUnit(t, "signpost-server.service")
	state := filepath.Join(h.root, "var/lib/signpost") // StateDirectory=signpost
	mkdir(t, filepath.Dir(state), 0o755, 0)
	mkdir(t, state, 0o700, h.uid)
	creds := h.credentials(t, u, "signpost-server.service")
	p := h.start(t, u, map[string][]string{"/var/lib/signpost": {state}, "$SIGNPOST_SERVER_FLAGS": {"--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"}},
		"CREDENTIALS_DIRECTORY="+creds)
	return p.wait(t, running)[1]
}

// TestServerUnitReadsCredential runs signpost-server.service's ExecStart
// as its dynamic user: the token file itself is out of its reach, the
// credential is not, and writes then need that token.
func TestServerUnitReadsCredential(t *testing.T) {
	h := newHost(t)
	u := readUnit(t, "signpost-server.service")
	// Without the credential the user cannot read the token file.
	bareState := filepath.Join(h.root, "bare-state")
	mkdir(t, bareState, 0o700, h.uid)
	bare := h.start(t, u, map[string][]string{"/var/lib/signpost": {bareState},
		"$SIGNPOST_SERVER_FLAGS": {"--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--token-file", h.token}})
	bare.wait(t, regexp.MustCompile(`permission denied`))

	url := h.startServer(t)
	put := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, url+"/v1/instances/db-1", strings.NewReader(`{"service":"db","address":"10.0.0.1","port":5432}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := put(""); got != http.StatusUnauthorized {
		t.Errorf("a write without the token: %d, want 401 (the server did not take the credential)", got)
	}
	if got := put(h.tokenValue); got != http.StatusOK {
		t.Errorf("a write with the token: %d, want 200", got)
	}
}

// TestAgentUnitReadsCredential runs signpost-agent.service's ExecStart as
// its dynamic user (in the docker group, as SupplementaryGroups= says)
// against the server unit, which needs the token: with the credential the
// agent syncs; with the root-owned file it cannot start; with a wrong
// token it stops at once, saying so.
func TestAgentUnitReadsCredential(t *testing.T) {
	h := newHost(t)
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Docker engine answers, and CI=true: %v\n%s", err, out)
		}
		t.Skipf("SKIPPING: no Docker engine answers (%v)", err)
	}
	url := h.startServer(t)
	u := readUnit(t, "signpost-agent.service")
	// A label no container carries: the agent registers nothing of this host.
	flags := []string{"--server", url, "--advertise-ip", "127.0.0.1", "--node", "systemd-test", "--only-label", fmt.Sprintf("gcli-systemd-test=%d", os.Getpid())}

	bare := h.start(t, u, map[string][]string{"$SIGNPOST_AGENT_FLAGS": append(flags, "--token-file", h.token)})
	bare.wait(t, regexp.MustCompile(`read token file .*permission denied`))

	wrong := h.credentialsOf(t, u, "signpost-agent-wrong.service", []byte("not-the-token\n"))
	p := h.start(t, u, map[string][]string{"$SIGNPOST_AGENT_FLAGS": flags}, "CREDENTIALS_DIRECTORY="+wrong)
	p.wait(t, regexp.MustCompile(`refused this agent's credentials`))

	creds := h.credentials(t, u, "signpost-agent.service")
	p = h.start(t, u, map[string][]string{"$SIGNPOST_AGENT_FLAGS": flags}, "CREDENTIALS_DIRECTORY="+creds)
	p.wait(t, regexp.MustCompile(`msg=synced`))
}
