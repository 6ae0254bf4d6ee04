package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
)

// failingStore fails every write with err, as a store whose shared commit
// broke would: its text names the database file and another client's node.
type failingStore struct {
	registry.Store
	err error
}

func (s failingStore) Put(context.Context, registry.Instance) (int64, error) { return 0, s.err }
func (s failingStore) ReplaceNode(context.Context, string, time.Duration, []registry.Instance) (int64, error) {
	return 0, s.err
}
func (s failingStore) KeepAlive(context.Context, string) error { return s.err }

// TestStoreErrorsNotShown: a write the store fails is answered 500 (or
// 503 when the store is unavailable) without the store's error text,
// which may name files on the server and other clients' data; the server
// logs it whole.
func TestStoreErrorsNotShown(t *testing.T) {
	const secret = "/var/lib/signpost/signpost.db"
	const other = "other-clients-node"
	const reason = "etcd did not answer within 5s (3 attempts)"
	for _, tc := range []struct {
		err  error
		want int
		says string // what the answer must say
	}{
		{fmt.Errorf("commit to %s: node %q: key too large", secret, other), http.StatusInternalServerError, "ref="},
		{fmt.Errorf("put %s of node %q: %w", secret, other, registry.ErrUnavailable), http.StatusServiceUnavailable, "store unavailable"},
		{fmt.Errorf("node %q in %s: %w", other, secret, context.DeadlineExceeded), http.StatusServiceUnavailable, "in time"},
		// A store's reason is shown, its cause (an endpoint, a key) not.
		{fmt.Errorf("put %s: %w", secret, &registry.UnavailableError{Reason: reason, Err: fmt.Errorf("dial %s for %q: refused", secret, other)}),
			http.StatusServiceUnavailable, "store unavailable (" + reason + ")"},
	} {
		var logged strings.Builder
		a, err := New(Config{Store: failingStore{err: tc.err}, Index: registry.NewIndex(nil), Log: slog.New(slog.NewTextHandler(&logged, nil))})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []struct{ method, path, body string }{
			{"PUT", "/v1/instances/calc-1", `{"service":"calc","address":"10.0.0.1","port":8081}`},
			{"PUT", "/v1/nodes/n1", `{"instances":[{"id":"calc-1","service":"calc","address":"10.0.0.1","port":8081}]}`},
			{"POST", "/v1/nodes/n1/heartbeat", ""},
		} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(w.method, w.path, strings.NewReader(w.body))
			req.Header.Set("Content-Type", "application/json")
			a.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.want {
				t.Errorf("%s %s failing with %q: %d, want %d", w.method, w.path, tc.err, rec.Code, tc.want)
			}
			if strings.Contains(string(body), secret) || strings.Contains(string(body), other) {
				t.Errorf("%s %s: the answer shows the store's error: %s", w.method, w.path, body)
			}
			if !strings.Contains(string(body), tc.says) {
				t.Errorf("%s %s failing with %q: the answer %s does not say %q", w.method, w.path, tc.err, body, tc.says)
			}
		}
		if !strings.Contains(logged.String(), other) {
			t.Errorf("the store's error is not logged: %q", logged.String())
		}
	}
}
