package dockerfake

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/network"
)

// validVersion reports whether v is an API version, "major.minor".
func validVersion(v string) bool {
	_, _, ok := splitVersion(v)
	return ok
}

func splitVersion(v string) (int, int, bool) {
	a, b, ok := strings.Cut(v, ".")
	if !ok {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(a)
	min, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || maj < 0 || min < 0 {
		return 0, 0, false
	}
	return maj, min, true
}

// versionLess reports whether API version a is lower than b; both valid.
func versionLess(a, b string) bool {
	am, an, _ := splitVersion(a)
	bm, bn, _ := splitVersion(b)
	if am != bm {
		return am < bm
	}
	return an < bn
}

// parsePort parses an exposed port, "8080/tcp" or "8080".
func parsePort(p string) (network.Port, error) {
	np, err := network.ParsePort(p)
	if err != nil {
		return network.Port{}, fmt.Errorf("port %q: %w", p, err)
	}
	return np, nil
}

// versionError is the daemon's message for a request version it does not
// serve (an InvalidParameter: 400).
func versionError(v, minV, maxV string) string {
	if versionLess(v, minV) {
		return fmt.Sprintf("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", v, minV)
	}
	return fmt.Sprintf("client version %s is too new. Maximum supported API version is %s", v, maxV)
}
