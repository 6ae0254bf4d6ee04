package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Result is the outcome of one probe.
type Result struct {
	OK bool
	// Output says what happened, bounded to MaxOutput bytes: the HTTP
	// status (and the start of a failing answer's body) or the dial error.
	Output string
	At     time.Time
}

// Prober probes addresses. Its zero value is ready to use.
type Prober struct {
	// Client replaces the HTTP client (tests); it must not follow
	// redirects.
	Client *http.Client
}

// client is the HTTP client of checks: no proxy (a check must reach the
// container itself, never go out through HTTP_PROXY), no redirects, no
// kept-alive connections (each probe is a fresh connection, as a new
// client's would be).
var client = &http.Client{
	Transport: &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Probe runs one check of spec against addr, bounded by spec.Timeout and
// ctx. A None spec passes.
func (p *Prober) Probe(ctx context.Context, spec Spec, addr netip.AddrPort) Result {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r Result
	switch spec.Kind {
	case HTTP:
		r = p.http(ctx, spec, addr)
	case TCP:
		r = tcp(ctx, addr)
	default:
		r = Result{OK: true, Output: "no check"}
	}
	r.At = time.Now()
	r.Output = Bound(r.Output)
	return r
}

func (p *Prober) http(ctx context.Context, spec Spec, addr netip.AddrPort) Result {
	path := spec.Path
	if path == "" {
		path = DefaultPath
	}
	url := "http://" + addr.String() + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{Output: fmt.Sprintf("GET %s: %v", url, err)}
	}
	req.Header.Set("User-Agent", "signpost-agent/health")
	req.Header.Set("Accept", "*/*")
	hc := p.Client
	if hc == nil {
		hc = client
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Result{Output: fmt.Sprintf("GET %s: %s", url, describe(ctx, err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return Result{OK: true, Output: "HTTP " + resp.Status}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxOutput))
	out := "HTTP " + resp.Status
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		out += " (redirect to " + loc + ", not followed)"
	}
	if b := strings.TrimSpace(string(body)); b != "" {
		out += ": " + b
	}
	return Result{Output: out}
}

// tcpSettle is how long a TCP check waits after connecting to see whether
// the peer closes at once. Docker's userland proxy (published ports on
// loopback) and rootless port drivers accept every connection and close it
// when nothing listens in the container; a plain connect would pass.
const tcpSettle = 25 * time.Millisecond

func tcp(ctx context.Context, addr netip.AddrPort) Result {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return Result{Output: fmt.Sprintf("tcp connect %s: %s", addr, describe(ctx, err))}
	}
	defer c.Close()
	settle := time.Now().Add(tcpSettle)
	if dl, ok := ctx.Deadline(); ok && dl.Before(settle) {
		settle = dl
	}
	c.SetReadDeadline(settle)
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// Closed or reset at once: a proxy with nothing behind it.
		return Result{Output: fmt.Sprintf("tcp connect %s: connected, then closed by the peer at once (%v): nothing listening behind a proxy?", addr, err)}
	}
	// Silence (the peer waits for the client) or a greeting: both listen.
	return Result{OK: true, Output: "tcp connect " + addr.String() + ": ok"}
}

// describe shortens an error, saying "timeout" when the check's deadline
// passed.
func describe(ctx context.Context, err error) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout: " + err.Error()
	}
	return err.Error()
}
