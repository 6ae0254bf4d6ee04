package server_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
)

// lines keeps every log record as one "msg k=v k=v" line.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.all = append(l.all, b.String())
	l.mu.Unlock()
	return nil
}

// count returns how many lines hold every one of parts.
func (l *lines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.all {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(s, p)
		}
		if all {
			n++
		}
	}
	return n
}

// TestServerNamesEachInstanceANodeDrops: an agent's sync that no longer
// lists an instance (a container gone while the agent was away: the stale
// instances removed at its start) and a node releasing its lease each
// leave one INFO line per instance on the server, naming container,
// service, address:port and why.
func TestServerNamesEachInstanceANodeDrops(t *testing.T) {
	log := &lines{}
	ts := startServer(t, func(c *server.Config) { c.Log = slog.New(log) })
	ctx := context.Background()
	withContainer := func(in registry.Instance, c string) registry.Instance {
		in.Container = c
		return in
	}
	a := withContainer(inst("web-1", "web", "10.9.0.1", 80), "web_a")
	b := withContainer(inst("web-2", "web", "10.9.0.2", 8080), "web_b")
	c := withContainer(inst("db-1", "db", "10.9.0.3", 5432), "db_c")
	if _, err := ts.client.ReplaceNode(ctx, "host-1", time.Minute, []registry.Instance{a, b, c}); err != nil {
		t.Fatal(err)
	}
	// The agent restarts: web_b went away meanwhile.
	if _, err := ts.client.ReplaceNode(ctx, "host-1", time.Minute, []registry.Instance{a, c}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dropped instance's line", func() bool {
		return log.count("INFO instance deregistered", "id=web-2", "service=web", "address=10.9.0.2:8080", "node=host-1", "container=web_b", "why=PUT /v1/nodes") == 1
	})
	if n := log.count("instance deregistered", "id=web-1"); n != 0 {
		t.Errorf("an instance the sync kept was logged as deregistered %d times", n)
	}
	if n := log.count("instance registered", "id=web-1"); n != 1 {
		t.Errorf("web-1 registered %d times in the log, want once: a repeated sync is not a registration", n)
	}
	// The agent stops with --deregister-on-exit: both remaining go.
	if _, err := ts.client.ReleaseNode(ctx, "host-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a line per released instance", func() bool {
		return log.count("INFO instance deregistered", "id=web-1", "container=web_a", "address=10.9.0.1:80", "why=DELETE /v1/nodes") == 1 &&
			log.count("INFO instance deregistered", "id=db-1", "container=db_c", "service=db", "address=10.9.0.3:5432", "why=DELETE /v1/nodes") == 1
	})
	if n := log.count("instance deregistered", "id=web-2"); n != 1 {
		t.Errorf("web-2 deregistered %d times in the log, want once", n)
	}
}
