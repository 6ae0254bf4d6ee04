// Package conventions reads the registrator-compatible SERVICE_* conventions
// of one container (environment variables and labels; labels win) and says
// which container ports to register, under which names, with which tags,
// weights, priorities, metadata and health-check settings.
//
// It knows nothing of Docker or of the registry's storage: the agent hands
// it plain strings and gets plain data back, which keeps it table-testable.
//
// The conventions:
//
//	SERVICE_<port>_NAME      calc, or _calc._tcp / _calc._udp
//	SERVICE_NAME             every port of the container; "<name>-<port>" when it has several
//	SERVICE_[<port>_]TAGS    comma-separated
//	SERVICE_[<port>_]WEIGHT  SRV weight, 1-65535 (default 1)
//	SERVICE_[<port>_]PRIORITY SRV priority, 0-65535 (default 0)
//	SERVICE_[<port>_]IGNORE  any value but "", 0, false, no: skip the port (or the container)
//	SERVICE_[<port>_]CHECK, _CHECK_HTTP, _CHECK_TCP, _CHECK_INTERVAL, _CHECK_TIMEOUT
//	                         health-check settings, kept in Port.Check (never metadata)
//	SERVICE_[<port>_]<KEY>   any other key: metadata key=value, published in TXT
//
// The port in a key is matched exactly against the container's port, tcp
// or udp. A key that is none of these but close to one (SERVICE_8081_NAM)
// is reported in Result.Typos, and a service name given in upper case
// (registered lower-cased) in Result.Normalized. No variable outside
// SERVICE_* is ever read. A container with no
// name for a port does not register that port.
package conventions

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Prefix starts every convention key.
const Prefix = "SERVICE_"

// ContainerPort is one port the container has (exposed or published).
type ContainerPort struct {
	Port  uint16
	Proto string // "tcp" or "udp"
}

// String gives the port as Docker writes it: 8080/tcp.
func (p ContainerPort) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Proto) }

// Input is what the parser needs to know about one container.
type Input struct {
	// Container names the container in warnings (its name, or short id).
	Container string
	// Env is the container's environment, "KEY=VALUE" entries.
	Env []string
	// Labels are the container's labels; they win over Env.
	Labels map[string]string
	// Ports are the container's ports, exposed or published.
	Ports []ContainerPort
}

// Setting is one convention value and the variable it came from, so that a
// later consumer (the health checker) can name the variable in a warning.
type Setting struct {
	Var   string
	Value string
}

// Port is one container port to register.
type Port struct {
	ContainerPort
	// Service is the bare service name ("calc").
	Service string
	// GivenName is the name as the container wrote it, trimmed:
	// SERVICE_<port>_NAME's value ("calc" or "_calc._tcp"), or
	// SERVICE_NAME's, with "-<port>" after the name when that covers
	// several ports ("_shop-8081._tcp"). The Route 53 layout names its SRV
	// record set after it.
	GivenName string
	Tags      []string
	Weight    uint16
	Priority  uint16
	Meta      map[string]string
	// Check holds the port's health-check settings, keyed by what follows
	// CHECK in the variable, lower-cased: "" (SERVICE_<port>_CHECK),
	// "http", "tcp", "interval", "timeout" and any other CHECK_* key.
	// Port-specific settings override container-wide ones. They are not
	// validated here.
	Check map[string]Setting
}

// Warning is a convention the parser could not use; the port it concerns
// (if any) is skipped. It names the container and the variable.
type Warning struct {
	Container string
	Var       string
	Value     string
	Reason    string
}

// Error names the container, the variable, its value and what is wrong.
func (w Warning) Error() string {
	return fmt.Sprintf("container %s: %s=%q: %s", w.Container, w.Var, w.Value, w.Reason)
}

// Result is what Parse found.
type Result struct {
	// Ignored is true when SERVICE_IGNORE asks to skip the whole container.
	Ignored bool
	// Ports are the ports to register, sorted by port then protocol.
	Ports []Port
	// Warnings list every convention that was not used and why.
	Warnings []Warning
	// Typos list the SERVICE_* variables whose key is no known key but
	// close to one (SERVICE_8081_NAM): they are read as metadata (or as a
	// check setting), which is almost never what was meant.
	Typos []Warning
	// Normalized list the service names that were used in another form
	// than given (MyWeb is registered as myweb: DNS names are lower-case).
	Normalized []Warning
}

// knownKeys are the keys that follow SERVICE_ or SERVICE_<port>_ and mean
// something other than metadata.
var knownKeys = []string{"name", "tags", "weight", "priority", "ignore",
	"check", "check_http", "check_tcp", "check_interval", "check_timeout"}

// typoOf returns the known key that key is probably a misspelling of, or
// "": one edit away (two for keys longer than five letters), counting a
// swap of two neighbours as one edit.
func typoOf(key string) string {
	for _, k := range knownKeys {
		if key == k {
			return ""
		}
	}
	for _, k := range knownKeys {
		limit := 1
		if len(k) > 5 {
			limit = 2
		}
		if len(key) >= 3 && editDistance(key, k) <= limit {
			return k
		}
	}
	return ""
}

// editDistance is the optimal string alignment distance of a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// perPortKeys are keys that only make sense for a port; seeing one after
// something that is not a port number is almost certainly a typo.
var perPortKeys = map[string]bool{"name": true, "tags": true, "weight": true, "priority": true, "ignore": true}

// settings gathers one scope's values (container-wide or one port).
type settings struct {
	vals  map[string]Setting // lower-cased key -> setting (name, tags, weight, priority, ignore)
	check map[string]Setting
	meta  map[string]Setting
}

func newSettings() *settings {
	return &settings{vals: map[string]Setting{}, check: map[string]Setting{}, meta: map[string]Setting{}}
}

func (s *settings) put(key string, st Setting) {
	switch {
	case key == "check":
		s.check[""] = st
	case strings.HasPrefix(key, "check_"):
		s.check[strings.TrimPrefix(key, "check_")] = st
	case perPortKeys[key]:
		s.vals[key] = st
	default:
		s.meta[key] = st
	}
}

// collect merges env and labels into one map of SERVICE_* variables, labels
// winning. Keys keep their original spelling for warnings.
func collect(in Input) map[string]Setting {
	out := map[string]Setting{} // upper-cased key -> setting
	for _, kv := range in.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !hasPrefix(k) {
			continue
		}
		out[strings.ToUpper(k)] = Setting{Var: k, Value: v}
	}
	for k, v := range in.Labels {
		if !hasPrefix(k) {
			continue
		}
		out[strings.ToUpper(k)] = Setting{Var: k, Value: v}
	}
	return out
}

// Any reports whether the container carries any SERVICE_* variable or
// label at all, before anything is parsed.
func Any(in Input) bool { return len(collect(in)) > 0 }

func hasPrefix(k string) bool {
	return len(k) > len(Prefix) && strings.EqualFold(k[:len(Prefix)], Prefix)
}

// truthy reads an IGNORE value.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}

// Parse reads the container's conventions. It never fails: whatever it
// cannot use becomes a Warning and the port concerned is skipped.
func Parse(in Input) Result {
	var res Result
	warn := func(st Setting, reason string, args ...any) {
		res.Warnings = append(res.Warnings, Warning{Container: in.Container, Var: st.Var, Value: st.Value, Reason: fmt.Sprintf(reason, args...)})
	}
	noteCase := func(st Setting) {
		if v := strings.TrimSpace(st.Value); v != strings.ToLower(v) {
			res.Normalized = append(res.Normalized, Warning{Container: in.Container, Var: st.Var, Value: st.Value,
				Reason: fmt.Sprintf("service name lower-cased: registered as %q (DNS names are lower-case)", strings.ToLower(v))})
		}
	}
	global := newSettings()
	byPort := map[uint16]*settings{}
	vars := collect(in)
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, uk := range keys {
		st := vars[uk]
		rest := strings.ToLower(uk[len(Prefix):])
		first, after, hasAfter := strings.Cut(rest, "_")
		switch {
		case first != "" && first[0] >= '0' && first[0] <= '9':
			n, err := strconv.ParseUint(first, 10, 16)
			if err != nil || n == 0 {
				warn(st, "%q is not a port number (want 1-65535)", first)
				continue
			}
			if !hasAfter || after == "" {
				warn(st, "nothing follows the port number: want SERVICE_%s_NAME and the like", first)
				continue
			}
			if k := typoOf(after); k != "" {
				res.Typos = append(res.Typos, Warning{Container: in.Container, Var: st.Var, Value: st.Value,
					Reason: fmt.Sprintf("unknown key %q looks like a typo of %s%s_%s; read as %s", strings.ToUpper(after), Prefix, first, strings.ToUpper(k), readAs(after))})
			}
			ps := byPort[uint16(n)]
			if ps == nil {
				ps = newSettings()
				byPort[uint16(n)] = ps
			}
			ps.put(after, st)
		case hasAfter && perPortKeys[after] && !perPortKeys[first] && first != "check":
			// SERVICE_HTTP_NAME, SERVICE_80A_NAME: a port that is not a number.
			warn(st, "%q is not a port number (want SERVICE_<port>_%s)", first, strings.ToUpper(after))
		default:
			if k := typoOf(rest); k != "" {
				res.Typos = append(res.Typos, Warning{Container: in.Container, Var: st.Var, Value: st.Value,
					Reason: fmt.Sprintf("unknown key %q looks like a typo of %s%s; read as %s", strings.ToUpper(rest), Prefix, strings.ToUpper(k), readAs(rest))})
			}
			global.put(rest, st)
		}
	}
	if ig, ok := global.vals["ignore"]; ok && truthy(ig.Value) {
		res.Ignored = true
		return res
	}

	// Which ports does the container have, and which port numbers do keys name?
	have := map[uint16][]ContainerPort{}
	var all []ContainerPort
	seen := map[ContainerPort]bool{}
	for _, p := range in.Ports {
		if (p.Proto != registry.TCP && p.Proto != registry.UDP) || p.Port == 0 || seen[p] {
			continue
		}
		seen[p] = true
		have[p.Port] = append(have[p.Port], p)
		all = append(all, p)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Port != all[j].Port {
			return all[i].Port < all[j].Port
		}
		return all[i].Proto < all[j].Proto
	})
	portNums := make([]int, 0, len(byPort))
	for n := range byPort {
		portNums = append(portNums, int(n))
	}
	sort.Ints(portNums)
	for _, n := range portNums {
		if len(have[uint16(n)]) == 0 {
			for _, st := range sortedSettings(byPort[uint16(n)]) {
				warn(st, "the container has no port %d (its ports: %s)", n, portList(all))
			}
		}
	}

	// Ports that SERVICE_NAME covers: those not ignored and without their own name.
	gname, hasGlobalName := global.vals["name"]
	var unnamed []ContainerPort
	for _, p := range all {
		ps := byPort[p.Port]
		if ps != nil {
			if ig, ok := ps.vals["ignore"]; ok && truthy(ig.Value) {
				continue
			}
		}
		if ps == nil || ps.vals["name"].Var == "" {
			unnamed = append(unnamed, p)
		}
	}
	nPorts := 0
	for _, p := range all {
		if ps := byPort[p.Port]; ps != nil {
			if ig, ok := ps.vals["ignore"]; ok && truthy(ig.Value) {
				continue
			}
		}
		nPorts++
	}

	for _, p := range all {
		ps := byPort[p.Port]
		if ps == nil {
			ps = newSettings()
		}
		if ig, ok := ps.vals["ignore"]; ok && truthy(ig.Value) {
			continue
		}
		var name, proto, given string
		nameSt, own := ps.vals["name"]
		switch {
		case own:
			n, pr, err := registry.ParseServiceName(nameSt.Value)
			if err != nil {
				warn(nameSt, "invalid service name for port %s: %v", p, err)
				continue
			}
			name, proto, given = n, pr, strings.TrimSpace(nameSt.Value)
			noteCase(nameSt)
		case hasGlobalName:
			n, pr, err := registry.ParseServiceName(gname.Value)
			if err != nil {
				if p == unnamed[0] { // one warning, not one per port
					warn(gname, "invalid service name: %v", err)
				}
				continue
			}
			name, proto, given = n, pr, strings.TrimSpace(gname.Value)
			if p == unnamed[0] {
				noteCase(gname)
			}
			if nPorts > 1 {
				name = fmt.Sprintf("%s-%d", name, p.Port)
				if err := registry.CheckLabel(name); err != nil {
					warn(gname, "service name for port %s, %q: %v", p, name, err)
					continue
				}
				given = name
				if proto != "" {
					given = "_" + name + "._" + proto
				}
			}
		default:
			continue // no name: not registered
		}
		if proto != "" && proto != p.Proto {
			// "_dns._udp" names only the udp port of that number; warn only
			// when the container has no such port at all.
			if own && !hasOtherProto(have[p.Port], proto) {
				warn(nameSt, "service name says %s but the container's port %d is %s only", proto, p.Port, p.Proto)
			}
			continue
		}
		out := Port{ContainerPort: p, Service: name, GivenName: given, Weight: 1}
		bad := false
		get := func(key string) (Setting, bool) {
			if st, ok := ps.vals[key]; ok {
				return st, true
			}
			st, ok := global.vals[key]
			return st, ok
		}
		if st, ok := get("tags"); ok {
			for _, t := range strings.Split(st.Value, ",") {
				if t = strings.TrimSpace(t); t != "" {
					out.Tags = append(out.Tags, t)
				}
			}
		}
		if st, ok := get("weight"); ok {
			w, err := strconv.ParseUint(strings.TrimSpace(st.Value), 10, 16)
			if err != nil || w == 0 {
				warn(st, "invalid weight for port %s: want 1-65535", p)
				bad = true
			}
			out.Weight = uint16(w)
		}
		if st, ok := get("priority"); ok {
			pr, err := strconv.ParseUint(strings.TrimSpace(st.Value), 10, 16)
			if err != nil {
				warn(st, "invalid priority for port %s: want 0-65535", p)
				bad = true
			}
			out.Priority = uint16(pr)
		}
		if bad {
			continue
		}
		for k, st := range global.meta {
			if out.Meta == nil {
				out.Meta = map[string]string{}
			}
			out.Meta[k] = st.Value
		}
		for k, st := range ps.meta {
			if out.Meta == nil {
				out.Meta = map[string]string{}
			}
			out.Meta[k] = st.Value
		}
		for k, st := range global.check {
			if out.Check == nil {
				out.Check = map[string]Setting{}
			}
			out.Check[k] = st
		}
		for k, st := range ps.check {
			if out.Check == nil {
				out.Check = map[string]Setting{}
			}
			out.Check[k] = st
		}
		res.Ports = append(res.Ports, out)
	}
	return res
}

// readAs says what an unknown key becomes.
func readAs(key string) string {
	if key == "check" || strings.HasPrefix(key, "check_") {
		return "a check setting"
	}
	return fmt.Sprintf("metadata %q", key)
}

func hasOtherProto(ports []ContainerPort, proto string) bool {
	for _, p := range ports {
		if p.Proto == proto {
			return true
		}
	}
	return false
}

func sortedSettings(s *settings) []Setting {
	var out []Setting
	for _, m := range []map[string]Setting{s.vals, s.check, s.meta} {
		for _, st := range m {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Var < out[j].Var })
	return out
}

func portList(ps []ContainerPort) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
