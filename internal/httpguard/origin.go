package httpguard

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// hosts decides which Host headers the API answers, against DNS
// rebinding: a web page whose own name was made to resolve to the
// server's address sends its name, not the server's, as the Host.
type hosts struct {
	any   bool
	names map[string]bool
	// suffixes holds ".example.com" for an allowed "*.example.com".
	suffixes []string
}

// newHosts allows IP literals (which cannot be rebound), localhost and its
// subdomains, the listen address's own name, and every entry of allowed
// ("*.example.com" allows its subdomains, "*" allows every Host).
func newHosts(listen string, allowed []string) hosts {
	h := hosts{names: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" {
		h.names[strings.ToLower(host)] = true
	}
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(a), "."))
		switch {
		case a == "":
		case a == "*":
			h.any = true
		case strings.HasPrefix(a, "*."):
			h.suffixes = append(h.suffixes, a[1:])
		default:
			h.names[a] = true
		}
	}
	return h
}

// allows reports whether a Host header (with or without a port) names
// this server.
func (h hosts) allows(hostHeader string) bool {
	if h.any {
		return true
	}
	host := hostHeader
	if hh, _, err := net.SplitHostPort(hostHeader); err == nil {
		host = hh
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if h.names[host] || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, s := range h.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// checkContentType refuses a write whose body is not declared as JSON: a
// browser sends text/plain, form or multipart bodies across sites without
// asking, never application/json. A DELETE without a body is exempt (a
// browser cannot send one across sites without a CORS preflight, which
// the API never grants).
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.Method == http.MethodDelete && r.ContentLength == 0 {
		return nil
	}
	if ct == "" {
		return fmt.Errorf("%s %s: no Content-Type: writes must be sent as application/json", r.Method, r.URL.Path)
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("%s %s: Content-Type %q: writes must be sent as application/json", r.Method, r.URL.Path, ct)
	}
	return nil
}
