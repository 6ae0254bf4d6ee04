package fleet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Token is the fleet's API bearer token (the servers listen beyond
// loopback, so writes need one).
const Token = "fleet-token"

// Server is one signpost server on its own host.
type Server struct {
	*Proc
	Name string
	URL  string // http://addr:8080
	DNS  string // addr:53
}

// ServerOptions are the flags the fleet's servers share.
type ServerOptions struct {
	LeaseTTL, StaleAfter, MaxStale, EtcdTimeout time.Duration
}

// StartServers starts `signpost server` (the binary bin) on each host,
// on etcd through members.
func StartServers(t testing.TB, dir, bin string, hosts []*Host, members []*Member, o ServerOptions) []*Server {
	t.Helper()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL())
	}
	var out []*Server
	for i, h := range hosts {
		name := fmt.Sprintf("s%d", i+1)
		args := []string{"server",
			"--store", "etcd", "--etcd-endpoints", strings.Join(eps, ","),
			"--http", h.Addr.String() + ":8080", "--dns", h.Addr.String() + ":53",
			"--advertise", h.Addr.String(), "--token-file", tok,
			"--data-dir", filepath.Join(dir, name+".data"),
			"--lease-ttl", o.LeaseTTL.String(),
			"--stale-after", o.StaleAfter.String(), "--max-stale", o.MaxStale.String(),
			"--etcd-timeout", o.EtcdTimeout.String(),
		}
		p := h.Start(t, dir, name, bin, nil, args...)
		out = append(out, &Server{Proc: p, Name: name, URL: "http://" + h.Addr.String() + ":8080", DNS: h.Addr.String() + ":53"})
	}
	return out
}

// HTTPClient is an HTTP client whose connections start on h.
func HTTPClient(h *Host, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:         h.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// WaitHealthy waits until every server's /healthz answers 200 from h.
func WaitHealthy(t testing.TB, h *Host, servers []*Server, within time.Duration) {
	t.Helper()
	c := HTTPClient(h, 2*time.Second)
	deadline := time.Now().Add(within)
	for _, s := range servers {
		for {
			err := healthy(c, s)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %s not healthy after %s: %v", s.Name, within, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func healthy(c *http.Client, s *Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/healthz", nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	return nil
}
