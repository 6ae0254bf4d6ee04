package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// serverProc is `signpost server` running as a child process.
type serverProc struct {
	cmd  *exec.Cmd
	dns  string
	http string
}

var runningLine = regexp.MustCompile(`signpost server running.*dns=(\S+) http=(\S+)`)

func startServerProc(t *testing.T, args ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(signposttest.Binary(t), append([]string{"server", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := runningLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[1], m[2]}
			}
		}
	}()
	select {
	case a := <-found:
		p.dns, p.http = a[0], a[1]
	case <-time.After(30 * time.Second):
		t.Fatal("server did not say it was running")
	}
	return p
}

// TestAcknowledgedWritesSurviveSIGKILL writes from several clients, kills
// the server with SIGKILL in the middle of the stream, restarts it on the
// same data dir, and finds every write the API acknowledged.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	dataDir := t.TempDir()
	p := startServerProc(t, "--data-dir", dataDir)
	c, err := apiclient.New(p.http, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Some deletes that are acknowledged before the kill must stay deleted.
	for i := 0; i < 5; i++ {
		in := registry.Instance{ID: fmt.Sprintf("gone-%d", i), Service: "gone", Address: netip.MustParseAddr("10.0.0.1"), Port: uint16(1000 + i)}
		if _, err := c.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Deregister(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	acked := map[string]uint16{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				port := uint16(10000 + w*1000 + i%1000)
				in := registry.Instance{ID: id, Service: fmt.Sprintf("svc%d", i%7), Address: netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", w, i%250+1)), Port: port}
				if _, err := c.Register(ctx, in); err != nil {
					return // the server died under us: this one was not acknowledged
				}
				mu.Lock()
				acked[id] = port
				mu.Unlock()
			}
		}(w)
	}
	// Let a few hundred writes through, then kill -9.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 300 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}

	p2 := startServerProc(t, "--data-dir", dataDir)
	c2, err := apiclient.New(p2.http, "")
	if err != nil {
		t.Fatal(err)
	}
	all, _, err := c2.Instances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]uint16{}
	for _, in := range all {
		have[in.ID] = in.Port
	}
	missing := 0
	for id, port := range acked {
		if have[id] != port {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged write %s (port %d) lost after SIGKILL", id, port)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", missing, len(acked))
	}
	for i := 0; i < 5; i++ {
		if _, ok := have[fmt.Sprintf("gone-%d", i)]; ok {
			t.Errorf("acknowledged delete gone-%d came back after SIGKILL", i)
		}
	}
	// And DNS answers them.
	m := new(dns.Msg)
	m.SetQuestion("_svc0._tcp.servicediscovery.internal.", dns.TypeSRV)
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, p2.dns)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("DNS after restart: %v %v", r, err)
	}
	t.Logf("%d acknowledged writes, all found after SIGKILL and restart", len(acked))
}
