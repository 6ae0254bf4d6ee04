package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

func probeInstance(n int) registry.Instance {
	return registry.Instance{ID: fmt.Sprintf("p-%d", n), Service: "probe", Address: netip.AddrFrom4([4]byte{10, 8, byte(n >> 8), byte(n)}), Port: uint16(1 + n%60000)}
}

// TestWriteRacingClose: writes racing Close either succeed, and are then
// in the file when it is opened again, or fail as unavailable.
func TestWriteRacingClose(t *testing.T) {
	dir := t.TempDir()
	for round := range 5 {
		s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		acked := map[string]bool{}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					in := probeInstance(round*10000 + g*200 + i)
					_, err := s.Put(context.Background(), in)
					if err != nil {
						if !errors.Is(err, registry.ErrUnavailable) {
							t.Errorf("put racing Close: %v, want unavailable", err)
						}
						return
					}
					mu.Lock()
					acked[in.ID] = true
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(round+1) * 5 * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		s, err = Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		list, _, err := s.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, in := range list {
			have[in.ID] = true
		}
		for id := range acked {
			if !have[id] {
				t.Errorf("round %d: put of %s was acknowledged before Close, but is not in the store opened again", round, id)
			}
		}
		t.Logf("round %d: %d writes acknowledged before Close", round, len(acked))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullDisk: a data dir on a full file system fails writes with an
// error, never a panic; once there is room again writes succeed, and
// every write acknowledged is in the file when it is opened again.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: cannot mount a small tmpfs (needs root): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Fill what is left but a little with another file.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	ctx := context.Background()
	acked := map[string]bool{}
	var failed error
	for n := range 5000 {
		in := probeInstance(n)
		in.Meta = map[string]string{"pad": strings.Repeat("x", 200)}
		if _, err := s.Put(ctx, in); err != nil {
			failed = err
			break
		}
		acked[in.ID] = true
	}
	if failed == nil {
		t.Fatal("5000 writes fitted a full file system")
	}
	t.Logf("full: %d writes acknowledged, then: %v", len(acked), failed)
	// A 503 to the client, saying what, without the path.
	if !errors.Is(failed, registry.ErrUnavailable) || strings.Contains(failed.Error(), dir) || !strings.Contains(failed.Error(), "out of space") {
		t.Errorf("write on a full disk: %v; want unavailable, saying out of space, without the path", failed)
	}
	// A read still works, and the store holds what was acknowledged.
	list, _, err := s.List(ctx)
	if err != nil {
		t.Fatalf("list on a full disk: %v", err)
	}
	if len(list) != len(acked) {
		t.Errorf("on a full disk the store lists %d instances; %d writes were acknowledged", len(list), len(acked))
	}
	// Room again: writes succeed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	in := probeInstance(9999)
	if _, err := s.Put(ctx, in); err != nil {
		t.Fatalf("put once there is room again: %v", err)
	}
	acked[in.ID] = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open again after the disk was full: %v", err)
	}
	defer s.Close()
	list, _, err = s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, in := range list {
		have[in.ID] = true
	}
	for id := range acked {
		if !have[id] {
			t.Errorf("%s was acknowledged but is not in the store opened again", id)
		}
	}
	if len(have) != len(acked) {
		t.Errorf("store opened again holds %d instances, %d were acknowledged", len(have), len(acked))
	}
}

// TestReplaceNodeRacesExpiry: node sets renewed right as their lease runs
// out. A node set acknowledged is there with a live lease; once renewals
// stop, the lease and every instance go together.
func TestReplaceNodeRacesExpiry(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const ttl = 40 * time.Millisecond
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("n%d", g)
			for i := range 60 {
				set := []registry.Instance{probeInstance(g*1000 + i%3), probeInstance(g*1000 + 100)}
				for j := range set {
					set[j].Node = node
				}
				if _, err := s.ReplaceNode(ctx, node, ttl, set); err != nil {
					t.Errorf("replace node %s: %v", node, err)
					return
				}
				// Right after: the set is there (its lease has ttl to run).
				got := map[string]bool{}
				list, _, _ := s.List(ctx)
				for _, in := range list {
					if in.Node == node {
						got[in.ID] = true
					}
				}
				if len(got) != 2 || !got[set[0].ID] || !got[set[1].ID] {
					t.Errorf("node %s right after its node set was acknowledged: %v, want %s and %s", node, got, set[0].ID, set[1].ID)
				}
				time.Sleep(ttl - 5*time.Millisecond + time.Duration(i%10)*time.Millisecond)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, _, _ := s.List(ctx)
		leases, _ := s.Leases(ctx)
		if len(list) == 0 && len(leases) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the last renewal: %d instances and %d leases left", len(list), len(leases))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFileReplacedWhileRunning: a signpost.db moved over (or removed)
// under a running store is noticed: Ping says so and writes are refused
// rather than acknowledged into a file nobody will open again.
func TestFileReplacedWhileRunning(t *testing.T) {
	for _, how := range []string{"replaced", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			if _, err := s.Put(ctx, probeInstance(1)); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("ping before: %v", err)
			}
			path := filepath.Join(dir, FileName)
			if how == "replaced" {
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path+".new", data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path+".new", path); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); !errors.Is(err, registry.ErrUnavailable) || strings.Contains(err.Error(), dir) {
				t.Errorf("ping after the file was %s: %v; want unavailable, without the path", how, err)
			}
			if _, err := s.Put(ctx, probeInstance(2)); !errors.Is(err, registry.ErrUnavailable) {
				t.Errorf("put after the file was %s: %v; want it refused as unavailable", how, err)
			}
		})
	}
}
