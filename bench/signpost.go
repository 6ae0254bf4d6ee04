package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// buildSignpost builds cmd/signpost from the module at root into dir.
func buildSignpost(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "signpost")
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/signpost")
	c.Dir = root
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/signpost in %s: %w: %s", root, err, tail(string(out), 2000))
	}
	return bin, nil
}

// signpostServer is a running signpost server and its API.
type signpostServer struct {
	*server
	api     string
	dataDir string
	ready   time.Duration // process start to the "running" log line
	client  *http.Client
}

// startSignpost runs `signpost server` on loopback ports with dataDir.
func startSignpost(ctx context.Context, ps *procs, bin, dataDir string, dnsPort, httpPort int) (*signpostServer, error) {
	var err error
	if dnsPort == 0 {
		if dnsPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if httpPort == 0 {
		if httpPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	p, err := ps.start("signpost", "", bin, "server",
		"--dns", addr, "--http", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--data-dir", dataDir, "--lease-ttl", "1h")
	if err != nil {
		return nil, err
	}
	ready, err := p.waitFor(ctx, `msg="signpost server running"`, 60*time.Second)
	if err != nil {
		ps.stop(p, time.Second)
		return nil, fmt.Errorf("signpost server (data dir %s): %w", dataDir, err)
	}
	s := &signpostServer{
		server:  &server{name: "signpost", addr: addr, proc: p, note: "signpost server, embedded store"},
		api:     fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		dataDir: dataDir,
		ready:   ready,
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}},
	}
	if err := waitDNS(ctx, p, addr, 10*time.Second); err != nil {
		ps.stop(p, time.Second)
		return nil, err
	}
	return s, nil
}

// put sends one JSON PUT to the API and checks for a 2xx answer.
func (s *signpostServer) put(ctx context.Context, path string, body any) error {
	if err := s.doPut(ctx, path, body); err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	return nil
}

func (s *signpostServer) doPut(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.api+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, rb)
	}
	return nil
}

// nodeBody is the body of PUT /v1/nodes/{node}.
type nodeBody struct {
	TTL       string     `json:"ttl"`
	Instances []instance `json:"instances"`
}

// putNode replaces node's whole instance set.
func (s *signpostServer) putNode(ctx context.Context, node string, ins []instance) error {
	return s.put(ctx, "/v1/nodes/"+node, nodeBody{TTL: "1h", Instances: ins})
}

// load registers data in nodes of at most perNode instances each
// (node-0, node-1, ...), a few nodes at a time.
func (s *signpostServer) load(ctx context.Context, data []instance, perNode int) error {
	var chunks [][]instance
	for i := 0; i < len(data); i += perNode {
		chunks = append(chunks, data[i:min(i+perNode, len(data))])
	}
	return parallel(ctx, len(chunks), 4, func(ctx context.Context, i int) error {
		return s.putNode(ctx, fmt.Sprintf("node-%d", i), chunks[i])
	})
}

// parallel runs f(0..n-1) on workers goroutines, stopping at the first
// error.
func parallel(ctx context.Context, n, workers int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// The parent's context ended.
		return ctx.Err()
	}
	return first
}

// churn streams PUT /v1/instances at rate a second until stop is closed,
// maxCount writes are sent, or maxTime passes. Each write changes an
// instance of a queried service (its port flips), so every write changes
// a DNS answer. It returns the writes done, the errors, and the elapsed time.
func (s *signpostServer) churn(ctx context.Context, ids []instance, rate int, maxCount int, maxTime time.Duration, stop <-chan struct{}) (done, failed int64, elapsed time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	jobs := make(chan int, 64)
	var wg sync.WaitGroup
	var nDone, nFailed atomic.Int64
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				in := ids[k%len(ids)]
				in.Port = 9000 + (k/len(ids))%2
				if err := s.put(ctx, "/v1/instances/"+in.ID, in); err != nil {
					nFailed.Add(1)
					continue
				}
				nDone.Add(1)
			}
		}()
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
loop:
	for sent < maxCount {
		select {
		case <-stop:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
			due := int(time.Since(start) / interval)
			for sent < due && sent < maxCount {
				select {
				case jobs <- sent:
					sent++
				default:
					// Workers saturated: the offered rate is not
					// reached; the achieved rate says so.
					continue loop
				}
			}
		}
	}
	close(jobs)
	wg.Wait()
	return nDone.Load(), nFailed.Load(), time.Since(start)
}

// median returns the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
