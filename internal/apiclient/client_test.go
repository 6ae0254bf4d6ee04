package apiclient_test

import (
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// TestNewRefusesABadServerURL: a URL that names no usable port is refused
// at once, naming it, rather than sent to port 80 or failing at dial.
func TestNewRefusesABadServerURL(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:", "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://:8080", "127.0.0.1:8080", "ftp://x"} {
		if _, err := apiclient.New(u, ""); err == nil || !strings.Contains(err.Error(), u) {
			t.Errorf("New(%q): %v, want an error naming it", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8080", "https://signpost.example:443/", "http://[::1]:8080", "http://localhost"} {
		if _, err := apiclient.New(u, ""); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}
