package server_test

import (
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/server"
)

// TestServerNamesABadHTTPAddress: an --http value that is no address is
// reported as such, not as a missing token.
func TestServerNamesABadHTTPAddress(t *testing.T) {
	_, err := server.New(server.Config{HTTPAddr: "nonsense", DNSAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `HTTP address "nonsense"`) || strings.Contains(err.Error(), "token") {
		t.Fatalf("server.New with HTTPAddr nonsense: %v, want an error naming the address", err)
	}
}
