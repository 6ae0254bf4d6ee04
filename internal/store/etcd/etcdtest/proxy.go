package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on a loopback port in front of an etcd member's
// client URL, which a test cuts to separate a client from etcd: Refuse
// closes every connection and the port (connections are refused, as from
// a stopped machine), Blackhole accepts connections and holds every byte
// both ways (as a network that drops packets), Heal restores it (held
// bytes then flow, as retransmitted packets would).
type Proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	cond  *sync.Cond
	ln    net.Listener
	hole  bool
	conns map[net.Conn]struct{}
	done  bool
}

// StartProxy starts a proxy to target (HOST:PORT, or a member's URL) on a
// loopback port; it stops with the test.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	if len(target) > 7 && target[:7] == "http://" {
		target = target[7:]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	go p.accept(ln)
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's client URL.
func (p *Proxy) URL() string { return "http://" + p.addr }

// Refuse closes the port and every connection through the proxy.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}

// Blackhole holds every byte, both ways, and every new connection.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.hole = true
	p.mu.Unlock()
}

// Heal ends Refuse (the port listens again) and Blackhole (held bytes
// flow).
func (p *Proxy) Heal(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hole = false
	p.cond.Broadcast()
	if p.ln == nil {
		var err error
		for i := 0; i < 50; i++ {
			if p.ln, err = net.Listen("tcp", p.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("proxy listen again on %s: %v", p.addr, err)
		}
		go p.accept(p.ln)
	}
}

func (p *Proxy) close() {
	p.Refuse()
	p.mu.Lock()
	p.done, p.hole = true, false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// gate waits while the proxy holds bytes; false when it closed.
func (p *Proxy) gate() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.hole && !p.done {
		p.cond.Wait()
	}
	return !p.done
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	if !p.track(c) {
		_ = c.Close()
		return
	}
	defer p.untrack(c)
	if !p.gate() {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		_ = up.Close()
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done
}

// pipe copies from src to dst, holding what it read while blackholed.
func (p *Proxy) pipe(dst io.WriteCloser, src io.Reader) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
