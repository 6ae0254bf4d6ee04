package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// echoFlag makes the harness binary run the reference UDP echo loop.
const echoFlag = "--echo-server"

// runEcho is the reference: one Go goroutine on one UDP socket that reads
// each query and writes it straight back with the QR bit set, answering
// nothing. It runs until ctx ends or maxRun passes.
func runEcho(ctx context.Context, addr string, maxRun time.Duration) error {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("echo listen %s: %w", addr, err)
	}
	defer c.Close()
	fmt.Fprintf(os.Stderr, "echo listening %s\n", c.LocalAddr())
	deadline := time.Now().Add(maxRun)
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(maxRun):
		}
		c.Close()
	}()
	buf := make([]byte, 65535)
	for time.Now().Before(deadline) {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("echo read on %s: %w", addr, err)
		}
		if n >= 3 {
			buf[2] |= 0x80 // QR: so that dnsperf counts it as a response
		}
		if _, err := c.WriteTo(buf[:n], from); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("echo write to %s: %w", from, err)
		}
	}
	return nil
}

// startEcho starts the echo loop as a child process (this same binary), so
// that its CPU time is its own.
func startEcho(ps *procs) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("echo: own executable: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := ps.start("echo", "", self, echoFlag, addr)
	if err != nil {
		return nil, err
	}
	if _, err := p.waitFor(context.Background(), "echo listening", 10*time.Second); err != nil {
		ps.stop(p, time.Second)
		return nil, err
	}
	return &server{name: "Go UDP echo", addr: addr, proc: p, note: "one goroutine, one socket, ReadFrom/WriteTo, no DNS parsing"}, nil
}
