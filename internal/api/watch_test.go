package api

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestWatchFromAFutureIndex: a watch from an index the server has not
// reached (a client that followed another server, or this one before its
// store was replaced) gets the current state at once, as from 0, rather
// than nothing until the services change again.
func TestWatchFromAFutureIndex(t *testing.T) {
	ix := registry.NewIndex(nil)
	put(ix, 1, "a-1", "calc", 1)
	put(ix, 2, "b-1", "time", 2)
	a, err := New(Config{Store: failingStore{}, Index: ix})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/watch?index=1000", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for len(got) < 2 && sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			for _, svc := range []string{"calc", "time"} {
				if strings.Contains(data, `"service":"`+svc+`"`) {
					got[svc] = true
				}
			}
		}
	}
	if len(got) < 2 {
		t.Fatalf("watch from index 1000 on a server at 2: events for %v, want calc and time (%v)", got, sc.Err())
	}
}
