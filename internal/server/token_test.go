package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/server"
)

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return path
	}
	good := strings.Repeat("k", 32)
	cases := []struct {
		name, content string
		mode          os.FileMode
		token, inErr  string
		warnings      []string
	}{
		{"good", good + "\n", 0o600, good, "", nil},
		{"short", "abc\n", 0o600, "abc", "", []string{"3 bytes"}},
		{"readable by others", good, 0o644, good, "", []string{"chmod 600"}},
		{"readable by group", good, 0o640, good, "", []string{"chmod 600"}},
		{"token on line 3", "\n\n" + good + "\n", 0o600, "", "line 3", nil},
		{"empty", "\n \n", 0o600, "", "empty", nil},
		{"second line ignored", good + "\nother\n", 0o600, good, "", []string{"first line"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := file(strings.ReplaceAll(c.name, " ", "-"), c.content, c.mode)
			tok, err := server.ReadToken(path)
			if c.inErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.inErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("ReadToken: %v, want an error naming the file and %q", err, c.inErr)
				}
				return
			}
			if err != nil || tok != c.token {
				t.Fatalf("ReadToken: %q, %v; want %q", tok, err, c.token)
			}
			warns := server.TokenFileWarnings(path, tok)
			if len(warns) != len(c.warnings) {
				t.Fatalf("warnings %q, want %d naming %q", warns, len(c.warnings), c.warnings)
			}
			for i, w := range c.warnings {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %q does not say %q", warns[i], w)
				}
			}
		})
	}
}
