package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/server"
)

// TestVerbs drives register, services, lookup and deregister against a
// real server, as a user at a shell would.
func TestVerbs(t *testing.T) {
	srv, err := server.New(server.Config{DNSAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	api := "--server=" + srv.URL()
	call := func(cmd string, args ...string) (string, error) {
		var out bytes.Buffer
		err := commands[cmd].run(ctx, args, &out)
		return out.String(), err
	}
	// The server answers once it has loaded its store.
	for i := 0; ; i++ {
		if _, err := call("services", api); err == nil {
			break
		} else if i > 300 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := call("register", api, "--service", "_db._tcp", "--address", "10.0.0.7", "--port", "5432", "--meta", "role=primary", "--weight", "5")
	if err != nil || !strings.Contains(out, "registered db-") {
		t.Fatalf("register: %q %v", out, err)
	}
	id := strings.Fields(strings.TrimSuffix(strings.Fields(out)[1], ":"))[0]
	out, err = call("services", api)
	if err != nil || !strings.Contains(out, "db") || !strings.Contains(out, "tcp") {
		t.Fatalf("services: %q %v", out, err)
	}
	out, err = call("services", api, "db")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "passing") || !strings.Contains(out, "(by hand)") {
		t.Fatalf("services db: %q %v", out, err)
	}
	out, err = call("lookup", "--dns", srv.DNSAddr(), "db")
	if err != nil || !strings.Contains(out, "5432") || !strings.Contains(out, "10.0.0.7") || !strings.Contains(out, id+".db.servicediscovery.internal.") {
		t.Fatalf("lookup: %q %v", out, err)
	}
	// Bad input names the flag or the field.
	if _, err := call("register", api, "--service", "Bad Name", "--address", "10.0.0.7", "--port", "1"); err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Fatalf("bad service name: %v", err)
	}
	if _, err := call("register", api, "--service", "db", "--address", "db.example", "--port", "1"); err == nil || !strings.Contains(err.Error(), "db.example") {
		t.Fatalf("bad address: %v", err)
	}
	if _, err := call("register", api, "--service", "db", "--address", "10.0.0.7", "--port", "70000"); err == nil || !strings.Contains(err.Error(), "--port") {
		t.Fatalf("bad port: %v", err)
	}
	if out, err = call("deregister", api, id); err != nil || !strings.Contains(out, "deregistered "+id) {
		t.Fatalf("deregister: %q %v", out, err)
	}
	if _, err := call("lookup", "--dns", srv.DNSAddr(), "db"); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Fatalf("lookup after deregister: %v", err)
	}
	if _, err := call("deregister", api, id); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deregister twice: %v", err)
	}
}
