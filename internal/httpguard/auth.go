package httpguard

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// bearer returns the token of an "Authorization: Bearer <token>" header;
// the scheme is matched case-insensitively (RFC 9110, section 11.1).
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func tokenIs(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// authorize checks the token a request needs: the write token for a
// write; for a read, the read token (or the write token) when a read
// token is set. It returns the refusal message, or "".
func (g *Guard) authorize(r *http.Request, write bool) string {
	need := g.cfg.WriteToken
	what := "writes"
	if !write {
		if g.cfg.ReadToken == "" || r.URL.Path == "/healthz" || g.openRead(r.URL.Path) {
			return ""
		}
		what = "reads"
	}
	if need == "" && write {
		return ""
	}
	got, ok := bearer(r)
	switch {
	case !ok:
		return "missing bearer token: " + what + " need Authorization: Bearer <token>"
	case write && tokenIs(got, g.cfg.WriteToken):
		return ""
	case !write && (tokenIs(got, g.cfg.ReadToken) || tokenIs(got, g.cfg.WriteToken)):
		return ""
	}
	return "wrong bearer token"
}

// openRead says whether path is one of cfg.OpenReads: an exact match, or
// under one that ends in "/" ("/" itself matches only "/").
func (g *Guard) openRead(path string) bool {
	for _, p := range g.cfg.OpenReads {
		if path == p || (p != "/" && strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}
