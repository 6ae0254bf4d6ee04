package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procs tracks every process the harness starts, so that all of them are
// killed at the end, on error and on interrupt alike.
type procs struct {
	mu   sync.Mutex
	live map[int]*proc
}

// proc is one started server process.
type proc struct {
	name  string
	cmd   *exec.Cmd
	start time.Time
	log   *lockedBuffer
	done  chan struct{}
	err   error
}

// lockedBuffer collects a process's output; lines can be waited for.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{} // closed and replaced on every write
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{ch: make(chan struct{})} }

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 4<<20 {
		b.buf.Write(p)
	}
	close(b.ch)
	b.ch = make(chan struct{})
	return len(p), nil
}

func (b *lockedBuffer) snapshot() (string, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.ch
}

// String returns everything written so far.
func (b *lockedBuffer) String() string { s, _ := b.snapshot(); return s }

func newProcs() *procs { return &procs{live: map[int]*proc{}} }

// start runs name with args in its own process group, its output in a
// buffer (and in logPath when not empty).
func (ps *procs) start(name, logPath string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, log: newLockedBuffer(), done: make(chan struct{})}
	var out io.Writer = p.log
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("log file for %s: %w", name, err)
		}
		out = io.MultiWriter(p.log, f)
		defer func() {
			go func() { <-p.done; f.Close() }()
		}()
	}
	cmd.Stdout, cmd.Stderr = out, out
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		close(p.done)
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	ps.mu.Lock()
	ps.live[cmd.Process.Pid] = p
	ps.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitFor waits until the process's output holds substr and returns the
// time it first appeared, measured from process start.
func (p *proc) waitFor(ctx context.Context, substr string, timeout time.Duration) (time.Duration, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, ch := p.log.snapshot()
		if strings.Contains(s, substr) {
			return time.Since(p.start), nil
		}
		select {
		case <-ch:
		case <-p.done:
			s = p.log.String()
			if strings.Contains(s, substr) {
				return time.Since(p.start), nil
			}
			return 0, fmt.Errorf("%s exited (%v) before logging %q; output:\n%s", p.name, p.err, substr, tail(s, 2000))
		case <-deadline.C:
			return 0, fmt.Errorf("%s: no %q within %v; output:\n%s", p.name, substr, timeout, tail(s, 2000))
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// stop ends one process (SIGTERM, then SIGKILL to its group after grace).
func (ps *procs) stop(p *proc, grace time.Duration) {
	if p == nil {
		return
	}
	pid := p.pid()
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	// The group too: nsd forks its servers.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	ps.mu.Lock()
	delete(ps.live, pid)
	ps.mu.Unlock()
}

// stopAll ends every process still running.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	var all []*proc
	for _, p := range ps.live {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		ps.stop(p, 2*time.Second)
	}
}

// treeCPU returns the CPU time (user+system) of pid and all its
// descendants, read from /proc/<pid>/stat.
func treeCPU(pid int) (time.Duration, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("read /proc: %w", err)
	}
	parent := map[int]int{}
	ticks := map[int]uint64{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pp, t, err := readStat(n)
		if err != nil {
			continue // gone meanwhile
		}
		parent[n], ticks[n] = pp, t
	}
	if _, ok := ticks[pid]; !ok {
		return 0, fmt.Errorf("/proc/%d/stat: process not found", pid)
	}
	var total uint64
	for n, t := range ticks {
		for m, hops := n, 0; m > 1 && hops < 64; m, hops = parent[m], hops+1 {
			if m == pid {
				total += t
				break
			}
		}
	}
	return time.Duration(total) * time.Second / clockTicks, nil
}

// readStat returns the parent pid and utime+stime (ticks) of pid.
func readStat(pid int) (ppid int, ticks uint64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is state (field 3); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat ppid: %w", pid, err)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat utime/stime: %v %v", pid, err1, err2)
	}
	return ppid, ut + st, nil
}

// rssBytes returns VmRSS of pid from /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	path := filepath.Join("/proc", strconv.Itoa(pid), "status")
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(v)
			if len(fs) < 1 {
				break
			}
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s VmRSS %q: %w", path, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS line", path)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
