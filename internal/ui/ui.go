// Package ui is signpost's web console: a read-only page, served by the
// server at /ui/, that shows services, their instances and health, and the
// nodes with their leases, and follows the API's watch stream so that it
// changes as the registry does. It is plain HTML, CSS and JavaScript
// embedded in the binary: no build step, nothing fetched from elsewhere.
//
// The page reads the registry through the same /v1 API as every other
// client (and so under the same rules: when reads need a token it asks for
// one and sends it as a bearer token); this package serves only the page's
// files and the little it needs to know about the server (config.json:
// zone and DNS address, for the dig lines it shows). Every UI response
// carries a strict Content-Security-Policy: scripts and styles from the
// server only, no inline script, connections to the server only, and
// Trusted Types required, so that the page cannot turn a registry string
// into markup.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"
)

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every UI response. require-trusted-types-for
// makes the browser refuse any assignment of a string to innerHTML and its
// kind, so that a registry string can only ever become text.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

//go:embed static
var static embed.FS

// Config is what the page is told about the server.
type Config struct {
	// Zone is the DNS zone the server is authoritative for.
	Zone string
	// DNSAddr is the host:port DNS answers on. An unspecified host
	// (0.0.0.0, ::) makes the page use the host it was loaded from.
	DNSAddr string
	// TTL is the TTL of DNS answers.
	TTL time.Duration
}

// pageConfig is config.json.
type pageConfig struct {
	Zone string `json:"zone"`
	// DNSHost is "" when DNS listens on every address.
	DNSHost string `json:"dns_host"`
	DNSPort int    `json:"dns_port"`
	TTL     int    `json:"ttl_seconds"`
}

// asset is one file of the page, read once at start.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// handler serves the page's files and config.json.
type handler struct {
	assets map[string]asset
}

// Register adds the UI to mux: the page under Prefix, and a redirect from
// "/" to it. Other paths are left to the mux's other handlers.
func Register(mux *http.ServeMux, cfg Config) error {
	h, err := newHandler(cfg)
	if err != nil {
		return err
	}
	mux.Handle(Prefix, h)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		http.Redirect(w, r, Prefix, http.StatusFound)
	})
	return nil
}

// secure sets the headers of every UI response.
func secure(hd http.Header) {
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func newHandler(cfg Config) (*handler, error) {
	host, portStr, err := net.SplitHostPort(cfg.DNSAddr)
	if err != nil {
		return nil, fmt.Errorf("ui: DNS address %q: %w", cfg.DNSAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("ui: DNS address %q: port %q is not 1-65535", cfg.DNSAddr, portStr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = ""
	}
	conf, err := json.Marshal(pageConfig{
		Zone:    strings.TrimSuffix(cfg.Zone, "."),
		DNSHost: host,
		DNSPort: port,
		TTL:     int(cfg.TTL / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("ui: encode config: %w", err)
	}
	h := &handler{assets: map[string]asset{}}
	h.add("config.json", conf)
	err = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return fmt.Errorf("ui: read embedded %s: %w", p, err)
		}
		h.add(strings.TrimPrefix(p, "static/"), b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (h *handler) add(name string, body []byte) {
	sum := sha256.Sum256(body)
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.assets[name] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// ServeHTTP serves one file under Prefix ("" is index.html) with the
// security headers; anything else is a 404, any method but GET and HEAD
// a 405: the UI takes no writes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	secure(hd)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "the UI is read-only: "+r.Method+" is not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name == "" {
		name = "index.html"
	}
	a, ok := h.assets[name]
	if !ok {
		http.Error(w, "no such page: "+r.URL.Path, http.StatusNotFound)
		return
	}
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", a.etag)
	// Revalidate every time: an upgraded server serves its own page.
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
