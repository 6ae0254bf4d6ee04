package main

import (
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestServerLists: --server takes several servers, comma-separated or
// repeated, and so does $SIGNPOST_SERVER; a request goes through the one
// that answers; the command line replaces the environment's list; a bad
// or repeated URL is a usage error naming it.
func TestServerLists(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	dead := "http://127.0.0.1:1"
	for _, args := range [][]string{
		{"services", "--server", dead + "," + srv.URL()},
		{"services", "--server", dead, "--server", srv.URL()},
		{"register", "--server", dead + "," + srv.URL(), "--service", "db", "--address", "10.0.0.7", "--port", "5432"},
	} {
		if code, out, errOut := cli(t, args...); code != 0 {
			t.Errorf("%q: exit %d, %q %q; want the live server to answer", args, code, out, errOut)
		}
	}
	t.Setenv("SIGNPOST_SERVER", dead+", "+srv.URL())
	if code, out, errOut := cli(t, "services"); code != 0 || !strings.Contains(out, "db") {
		t.Errorf("services with $SIGNPOST_SERVER=%q: exit %d, %q %q", dead+","+srv.URL(), code, out, errOut)
	}
	// The command line replaces the environment's list, not adds to it.
	if code, _, errOut := cli(t, "services", "--server", dead, "--timeout", "5s"); code != 1 || !strings.Contains(errOut, "127.0.0.1:1") || strings.Contains(errOut, srv.URL()) {
		t.Errorf("--server %s over $SIGNPOST_SERVER: exit %d, %q; want only %s tried", dead, code, errOut, dead)
	}
	t.Setenv("SIGNPOST_SERVER", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"services", "--server", srv.URL() + ",ftp://x"}, `"ftp://x"`},
		{[]string{"services", "--server", srv.URL(), "--server", srv.URL() + "/"}, "given twice"},
		{[]string{"agent", "--server", "http://a:8080,http://b:99999"}, `"http://b:99999"`},
		{[]string{"agent", "--server", "http://a:8080", "--server", "http://a:8080"}, "given twice"},
		{[]string{"watch", "--server", "a:8080"}, `"a:8080"`},
		{[]string{"check", "--server", ","}, "none given"},
	} {
		code, out, errOut := cli(t, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "server") {
			t.Errorf("%q: exit %d, %q %q; want a usage error with %s", tc.args, code, out, errOut, tc.want)
		}
	}
}
