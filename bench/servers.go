package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// server is one DNS server under test.
type server struct {
	name string
	addr string // host:port on loopback
	proc *proc
	note string // how it was configured
}

// freePort returns a loopback port free for both UDP and TCP just now.
func freePort() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("free port: none found free for both UDP and TCP")
}

// waitDNS polls addr until it answers the zone's SOA authoritatively.
func waitDNS(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(zoneName+".", dns.TypeSOA)
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (%v); output:\n%s", p.name, p.err, tail(p.log.String(), 2000))
			default:
			}
		}
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && r.Authoritative && len(r.Answer) > 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("rcode %s aa=%v answers=%d", dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	out := ""
	if p != nil {
		out = "; output:\n" + tail(p.log.String(), 2000)
	}
	return fmt.Errorf("%s: no SOA answer within %v: %v%s", addr, timeout, last, out)
}

// verify checks that addr answers the three query kinds for svc1 with the
// instances of data, and returns a one-line summary of the answer shapes.
func verify(ctx context.Context, addr string, data []instance) (string, error) {
	return verifyService(ctx, addr, data, "svc1")
}

// verifyService is verify for service svc.
func verifyService(ctx context.Context, addr string, data []instance, svc string) (string, error) {
	want := map[string]bool{}
	wantA := map[string]bool{}
	for _, in := range data {
		if in.Service == svc {
			want[fmt.Sprintf("%d %s.%s.%s.", in.Port, in.ID, svc, zoneName)] = true
			wantA[in.Address] = true
		}
	}
	c := &dns.Client{Timeout: 2 * time.Second, UDPSize: 1232}
	var summary []string
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{svc + "." + zoneName + ".", dns.TypeSRV},
		{svc + "." + zoneName + ".", dns.TypeA},
		{"_" + svc + "._tcp." + zoneName + ".", dns.TypeSRV},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, false)
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err != nil {
			return "", fmt.Errorf("%s %s %s: %w", addr, q.name, dns.TypeToString[q.qtype], err)
		}
		got := map[string]bool{}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.SRV:
				got[fmt.Sprintf("%d %s", rr.Port, strings.ToLower(rr.Target))] = true
			case *dns.A:
				got[rr.A.String()] = true
			}
		}
		exp := want
		if q.qtype == dns.TypeA {
			exp = wantA
		}
		if r.Rcode != dns.RcodeSuccess || len(got) != len(exp) || len(r.Answer) != len(exp) {
			return "", fmt.Errorf("%s %s %s: rcode %s, %d answers %v, want %v", addr, q.name, dns.TypeToString[q.qtype], dns.RcodeToString[r.Rcode], len(r.Answer), keys(got), keys(exp))
		}
		for k := range exp {
			if !got[k] {
				return "", fmt.Errorf("%s %s %s: answers %v, want %v", addr, q.name, dns.TypeToString[q.qtype], keys(got), keys(exp))
			}
		}
		extra := 0
		for _, rr := range r.Extra {
			if rr.Header().Rrtype != dns.TypeOPT {
				extra++
			}
		}
		b, _ := r.Pack()
		summary = append(summary, fmt.Sprintf("%s %s: an=%d ns=%d ar=%d %dB", strings.TrimSuffix(q.name, "."+zoneName+"."), dns.TypeToString[q.qtype], len(r.Answer), len(r.Ns), extra, len(b)))
	}
	return strings.Join(summary, "; "), nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// haveCommand reports whether name is on PATH (or an absolute path that
// exists).
func haveCommand(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// ensureDebian installs pkg with apt-get when cmd is missing and we are
// root; it returns why not when the command stays missing.
func ensureDebian(ctx context.Context, cmd, pkg string, install bool) error {
	if haveCommand(cmd) {
		return nil
	}
	if !install {
		return fmt.Errorf("%s not installed (Debian package %s); skipped", cmd, pkg)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s not installed and not root to apt-get install %s; skipped", cmd, pkg)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	run := func(args ...string) error {
		c := exec.CommandContext(ctx, "apt-get", args...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, tail(string(out), 500))
		}
		return nil
	}
	if err := run("install", "-y", "-qq", "--no-install-recommends", pkg); err != nil {
		if err2 := run("update", "-qq"); err2 != nil {
			return err2
		}
		if err := run("install", "-y", "-qq", "--no-install-recommends", pkg); err != nil {
			return err
		}
	}
	if !haveCommand(cmd) {
		return fmt.Errorf("%s still missing after apt-get install %s", cmd, pkg)
	}
	return nil
}

// daemon describes how to run one reference server from a config file.
type daemon struct {
	name, label string // process name, and its name in the report
	bin         string
	confName    string
	// conf renders the config for port, with dir as the server's own
	// directory.
	conf func(port int, dir string) string
	args func(confPath string) []string
	note string
}

// startDaemon writes d's config into its own directory under dir, starts
// it on a free loopback port and waits until it answers the zone's SOA.
func startDaemon(ctx context.Context, ps *procs, dir string, d daemon) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	own := filepath.Join(dir, d.name)
	if err := os.MkdirAll(filepath.Join(own, "db"), 0o755); err != nil {
		return nil, fmt.Errorf("%s dir %s: %w", d.name, own, err)
	}
	cf := filepath.Join(own, d.confName)
	if err := os.WriteFile(cf, []byte(d.conf(port, own)), 0o644); err != nil {
		return nil, fmt.Errorf("%s config %s: %w", d.name, cf, err)
	}
	p, err := ps.start(d.name, filepath.Join(own, "output.log"), d.bin, d.args(cf)...)
	if err != nil {
		return nil, err
	}
	s := &server{name: d.label, addr: fmt.Sprintf("127.0.0.1:%d", port), proc: p, note: d.note}
	if err := waitDNS(ctx, p, s.addr, 30*time.Second); err != nil {
		ps.stop(p, time.Second)
		return nil, fmt.Errorf("%s (config %s): %w", d.name, cf, err)
	}
	return s, nil
}

// startNSD runs nsd in the foreground on a loopback port, serving zonePath.
func startNSD(ctx context.Context, ps *procs, dir, zonePath string) (*server, error) {
	bin, err := exec.LookPath("nsd")
	if err != nil {
		return nil, fmt.Errorf("nsd: %w", err)
	}
	n := runtime.NumCPU()
	return startDaemon(ctx, ps, dir, daemon{
		name: "nsd", label: "NSD", bin: bin, confName: "nsd.conf",
		conf: func(port int, d string) string {
			return fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%[1]d
  port: %[1]d
  server-count: %[3]d
  reuseport: yes
  username: ""
  chroot: ""
  zonesdir: "%[2]s"
  database: ""
  zonelistfile: "%[2]s/zone.list"
  xfrdfile: "%[2]s/xfrd.state"
  xfrdir: "%[2]s"
  pidfile: "%[2]s/nsd.pid"
  logfile: "%[2]s/nsd.log"
  verbosity: 0
  hide-version: yes
  do-ip6: no
remote-control:
  control-enable: no
zone:
  name: %[4]s
  zonefile: "%[5]s"
`, port, d, n, zoneName, zonePath)
		},
		args: func(cf string) []string { return []string{"-d", "-c", cf} },
		note: fmt.Sprintf("`nsd -d`, server-count %d, reuseport, otherwise defaults", n),
	})
}

// startKnot runs knotd in the foreground on a loopback port, serving
// zonePath.
func startKnot(ctx context.Context, ps *procs, dir, zonePath string) (*server, error) {
	bin, err := exec.LookPath("knotd")
	if err != nil {
		return nil, fmt.Errorf("knotd: %w", err)
	}
	return startDaemon(ctx, ps, dir, daemon{
		name: "knot", label: "Knot", bin: bin, confName: "knot.conf",
		conf: func(port int, d string) string {
			return fmt.Sprintf(`server:
    rundir: "%[2]s"
    pidfile: "%[2]s/knot.pid"
    listen: 127.0.0.1@%[1]d
log:
  - target: stderr
    any: warning
control:
    listen: "%[2]s/knot.sock"
database:
    storage: "%[2]s/db"
template:
  - id: default
    storage: "%[2]s"
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: %[3]s
    file: "%[4]s"
`, port, d, zoneName, zonePath)
		},
		args: func(cf string) []string { return []string{"-c", cf} },
		note: "`knotd` in the foreground, default workers (one UDP worker per CPU)",
	})
}

// startCoreDNS runs a CoreDNS binary with the file plugin only.
func startCoreDNS(ctx context.Context, ps *procs, bin, dir, zonePath string) (*server, error) {
	return startDaemon(ctx, ps, dir, daemon{
		name: "coredns", label: "CoreDNS", bin: bin, confName: "Corefile",
		conf: func(port int, _ string) string {
			return fmt.Sprintf("%s:%d {\n    bind 127.0.0.1\n    file %s\n}\n", zoneName, port, zonePath)
		},
		args: func(cf string) []string { return []string{"-conf", cf, "-quiet"} },
		note: "file plugin only, no log or cache",
	})
}

// coreDNSVersion is the CoreDNS release built from the Go module proxy.
const coreDNSVersion = "v1.15.0"

// buildCoreDNS returns a CoreDNS binary, built with go install into a
// cached GOBIN under the temp dir when build is true and it is not there.
func buildCoreDNS(ctx context.Context, build bool, logf func(string, ...any)) (string, error) {
	gobin := filepath.Join(os.TempDir(), "signpost-bench-cache", "coredns-"+coreDNSVersion)
	bin := filepath.Join(gobin, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if !build {
		return "", fmt.Errorf("coredns %s not built yet (smoke mode does not build it; run the full harness once)", coreDNSVersion)
	}
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return "", fmt.Errorf("coredns GOBIN %s: %w", gobin, err)
	}
	logf("building CoreDNS %s with go install (GOBIN=%s); this takes a few minutes the first time", coreDNSVersion, gobin)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "go", "install", "github.com/coredns/coredns@"+coreDNSVersion)
	c.Dir = os.TempDir() // outside the module: no go.mod change
	c.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go install github.com/coredns/coredns@%s: %w: %s", coreDNSVersion, err, tail(string(out), 1500))
	}
	return bin, nil
}
