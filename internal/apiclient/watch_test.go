package apiclient_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// TestWatchGivesUpASilentStream: a stream that goes silent (a connection
// that died without a word) breaks after WatchStall, saying so; one that
// keeps sending keepalives does not.
func TestWatchGivesUpASilentStream(t *testing.T) {
	var keepalives atomic.Int32 // how many keepalives the server sends before it ends the stream
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		n := int(keepalives.Load())
		for i := 0; i < n; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			fmt.Fprint(w, ": keepalive\n\n")
			w.(http.Flusher).Flush()
		}
		if n == 0 {
			<-r.Context().Done() // silent until the client leaves
		}
	}))
	t.Cleanup(srv.Close)
	c, err := apiclient.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	c.WatchStall = 400 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	noEvent := func(apiclient.WatchEvent) error { return nil }

	err = c.Watch(ctx, "", 0, noEvent)
	if err == nil || !strings.Contains(err.Error(), "not even a keepalive") || ctx.Err() != nil {
		t.Errorf("a silent stream: Watch returned %v, want it given up as silent", err)
	}
	// Ten keepalives 100ms apart, 1s in all: longer than WatchStall, but
	// never silent that long.
	keepalives.Store(10)
	err = c.Watch(ctx, "", 0, noEvent)
	if err == nil || !strings.Contains(err.Error(), "the server ended the stream") {
		t.Errorf("a stream with keepalives: Watch returned %v, want it followed until the server ended it", err)
	}
}
