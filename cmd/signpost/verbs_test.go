package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/signpost-dns/signpost/internal/server"
	"github.com/signpost-dns/signpost/internal/signposttest"
)

// TestVerbs drives register, services, lookup and deregister against a
// real server, as a user at a shell would.
func TestVerbs(t *testing.T) {
	srv := signposttest.Start(t, server.Config{})
	ctx := context.Background()
	api := "--server=" + srv.URL()
	call := func(cmd string, args ...string) (string, error) {
		var out bytes.Buffer
		err := commands[cmd].run(ctx, args, &out)
		return out.String(), err
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
