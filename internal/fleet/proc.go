package fleet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is one program running on a host, that the test can stop,
// pause, kill and start again with the same arguments.
type Proc struct {
	Name string
	Host *Host
	bin  string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs bin with args on h; its output goes to a file in dir, whose
// last lines the test prints if it fails. The process is killed when the
// test ends, or if the test process dies first.
func (h *Host) Start(t testing.TB, dir, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Host: h, bin: bin, args: args, env: env, log: filepath.Join(dir, name+".log")}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s on %s (%s), last lines of its log:\n%s", name, h.Name, h.Addr, p.Tail(25))
		}
	})
	return p
}

// Restart starts the process if it is not running.
func (p *Proc) Restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log of %s: %w", p.Name, err)
	}
	fmt.Fprintf(f, "==== %s start: %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.Host.NS, p.bin}, p.args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// ip netns exec execs the program itself, so the pid is the
	// program's: signals reach it, and it dies with the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s on %s: %w", p.Name, p.Host.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("signal %s: %w", p.Name, errNotRunning)
	}
	return p.cmd.Process.Signal(sig)
}

// Pause stops the process (SIGSTOP); Resume lets it go on (SIGCONT).
func (p *Proc) Pause() error  { return p.Signal(syscall.SIGSTOP) }
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill kills the process (SIGKILL) and waits for it to go.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	<-done
}

// Stop asks the process to stop (SIGTERM) and kills it after grace.
func (p *Proc) Stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
	case <-time.After(grace):
		p.Kill()
	}
}

// Exited reports whether the process has ended on its own.
func (p *Proc) Exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Tail is the last n lines of the process's output.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
