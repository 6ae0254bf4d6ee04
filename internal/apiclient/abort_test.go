package apiclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// heldLink is a TCP proxy that holds what the client sends (it does not
// read it) until released, as a link that is down holds a request in the
// sender's queue.
type heldLink struct {
	l        net.Listener
	release  chan struct{}
	upstream string
}

func startHeldLink(t *testing.T, upstream string) *heldLink {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		// Set before listen, so that accepted connections start with a
		// small receive window.
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &heldLink{l: l, release: make(chan struct{}), upstream: upstream}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go h.serve(c)
		}
	}()
	return h
}

func (h *heldLink) serve(c net.Conn) {
	defer c.Close()
	// A small window: most of a request waits in the sender's queue.
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	<-h.release
	up, err := net.Dial("tcp", h.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	go io.Copy(c, up)
	io.Copy(up, c) // what the client sent, delivered late
}

// A request the client gave up on is not delivered afterwards: its
// connection is reset, and what it queued is dropped.
func TestGivenUpRequestNotDeliveredLater(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return // a request cut short: never applied
		}
		got.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"index": 1}`))
	}))
	defer srv.Close()
	link := startHeldLink(t, srv.Listener.Addr().String())
	c, err := New("http://"+link.l.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	// About 40 KiB: more than the link's window, less than what the
	// kernel queues for the sender.
	var insts []registry.Instance
	for i := range 40 {
		insts = append(insts, registry.Instance{ID: fmt.Sprintf("i-%d", i), Service: "calc", Port: 80, Meta: map[string]string{"pad": strings.Repeat("x", 1000)}})
	}
	_, err = c.ReplaceNode(ctx, "host-a", 10*time.Second, insts)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a node set on a held link: %v, want the deadline", err)
	}
	close(link.release)
	// Whatever the link still held would reach the server at once.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got.Load() != 0 {
			t.Fatalf("the node set the client gave up on reached the server after the link came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
