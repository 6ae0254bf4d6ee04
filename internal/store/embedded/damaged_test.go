package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/signpost-dns/signpost/internal/registry"
)

// writeStore makes a store in a new dir with n instances and returns the
// path of its file, closed.
func writeStore(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		in := registry.Instance{ID: fmt.Sprintf("i-%d", i), Service: "calc", Address: netip.MustParseAddr("10.0.0.1"), Port: uint16(i + 1)}
		if _, err := s.Put(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, FileName)
}

// TestDamagedFileRefused: a truncated, emptied or overwritten database
// file is refused at Open with a DamagedError that names the file and what
// to do, never a panic; a whole file opens.
func TestDamagedFileRefused(t *testing.T) {
	damage := map[string]func(t *testing.T, path string, size int64){
		"emptied":         func(t *testing.T, path string, _ int64) { truncate(t, path, 0) },
		"first page only": func(t *testing.T, path string, _ int64) { truncate(t, path, 4096) },
		"meta pages only": func(t *testing.T, path string, _ int64) { truncate(t, path, 8192) },
		"cut in half":     func(t *testing.T, path string, size int64) { truncate(t, path, size/2) },
		"odd size":        func(t *testing.T, path string, _ int64) { truncate(t, path, 20000) },
		"garbage over the data pages": func(t *testing.T, path string, size int64) {
			overwrite(t, path, 8192, size-8192)
		},
		"garbage over the instances' root page": func(t *testing.T, path string, _ int64) {
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			var root, pageSize int64
			_ = db.View(func(tx *bolt.Tx) error {
				root, pageSize = int64(tx.Bucket(bucketInstances).Root()), int64(db.Info().PageSize)
				return nil
			})
			db.Close()
			overwrite(t, path, root*pageSize, pageSize)
		},
		"garbage everywhere": func(t *testing.T, path string, size int64) { overwrite(t, path, 0, size) },
	}
	for name, spoil := range damage {
		t.Run(name, func(t *testing.T) {
			path := writeStore(t, 100)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			spoil(t, path, st.Size())
			s, err := Open(filepath.Dir(path), Options{Log: slog.New(slog.DiscardHandler)})
			if err == nil {
				s.Close()
				t.Fatalf("Open of a %s store succeeded", name)
			}
			var de *DamagedError
			msg := err.Error()
			if !errors.As(err, &de) || !strings.Contains(msg, path) || !strings.Contains(msg, "restore") ||
				!strings.Contains(msg, "move it aside") || strings.Contains(msg, "\n") {
				t.Errorf("Open of a %s store: %q; want one line naming the file and what to do", name, msg)
			}
			t.Logf("%s: %v", name, err)
		})
	}
	// Whole, it opens with everything in it.
	path := writeStore(t, 10)
	s, err := Open(filepath.Dir(path), Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Open of a whole store: %v", err)
	}
	defer s.Close()
	if l, _, err := s.List(context.Background()); err != nil || len(l) != 10 {
		t.Errorf("List of a reopened store = %d, %v; want 10", len(l), err)
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// overwrite writes n random bytes at off, seeded so that a failure
// repeats.
func overwrite(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestLockedFileIsNotDamaged: a data dir in use by another store is
// refused as locked, not as damaged.
func TestLockedFileIsNotDamaged(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(dir, Options{Log: slog.New(slog.DiscardHandler)})
	var de *DamagedError
	if err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second Open of a data dir in use: %v; want it refused as locked", err)
	}
}
