package health

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Setting is one convention value and the variable it came from.
type Setting struct {
	Var   string
	Value string
}

// Warning is a check setting that could not be used; the documented
// default was used instead.
type Warning struct {
	Var    string
	Value  string
	Reason string
}

// Error names the variable, its value and what is wrong.
func (w Warning) Error() string { return fmt.Sprintf("%s=%q: %s", w.Var, w.Value, w.Reason) }

// ParseSpec reads one port's check settings, keyed as the conventions
// parser keys them: "" (SERVICE_<port>_CHECK), "http", "tcp", "interval",
// "timeout". def is the agent's default check. It never fails: a value it
// cannot use becomes a Warning and the default stands.
//
//	SERVICE_<port>_CHECK=none|http|tcp   none turns the check off
//	SERVICE_<port>_CHECK_HTTP=/path      HTTP GET of /path (empty or "true": /health)
//	SERVICE_<port>_CHECK_TCP=true        TCP connect
//	SERVICE_<port>_CHECK_INTERVAL=5s     a Go duration, or whole seconds
//	SERVICE_<port>_CHECK_TIMEOUT=1s      at most the interval
func ParseSpec(def Spec, settings map[string]Setting) (Spec, []Warning) {
	var warns []Warning
	warn := func(st Setting, f string, args ...any) {
		warns = append(warns, Warning{Var: st.Var, Value: st.Value, Reason: fmt.Sprintf(f, args...)})
	}
	spec := def
	if spec.Path == "" {
		spec.Path = DefaultPath
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case "", "http", "tcp", "interval", "timeout":
		default:
			st := settings[k]
			warn(st, "unknown check setting (want CHECK, CHECK_HTTP, CHECK_TCP, CHECK_INTERVAL or CHECK_TIMEOUT); ignored")
		}
	}
	tcpSt, hasTCP := settings["tcp"]
	httpSt, hasHTTP := settings["http"]
	if hasTCP {
		switch v := strings.ToLower(strings.TrimSpace(tcpSt.Value)); v {
		case "true", "1", "yes", "on":
			spec.Kind = TCP
		case "false", "0", "no", "off":
			// Not a TCP check; whatever else says stands.
		default:
			warn(tcpSt, "want true or false; using the default check (%s)", def.Kind)
		}
	}
	if hasHTTP {
		v := strings.TrimSpace(httpSt.Value)
		switch {
		case v == "" || strings.EqualFold(v, "true"):
			spec.Kind, spec.Path = HTTP, DefaultPath
		case strings.HasPrefix(v, "/") && !strings.ContainsAny(v, " \t#") && !strings.HasPrefix(v, "//"):
			spec.Kind, spec.Path = HTTP, v
		default:
			warn(httpSt, "a check path must start with a single / and have no spaces; using %s", DefaultPath)
			spec.Kind, spec.Path = HTTP, DefaultPath
		}
		if hasTCP && spec.Kind == HTTP && strings.EqualFold(strings.TrimSpace(tcpSt.Value), "true") {
			warn(tcpSt, "both CHECK_HTTP and CHECK_TCP are set; the HTTP check is used")
		}
	}
	if st, ok := settings[""]; ok {
		k, err := ParseKind(st.Value)
		switch {
		case err != nil:
			warn(st, "want none, http or tcp; using %s", spec.Kind)
		case k == None:
			spec.Kind = None
		case k == HTTP && !hasHTTP:
			spec.Kind, spec.Path = HTTP, DefaultPath
		case k == TCP && !hasHTTP:
			spec.Kind = TCP
		}
	}
	if st, ok := settings["interval"]; ok {
		d, err := parseDuration(st.Value)
		switch {
		case err != nil:
			warn(st, "%v; using the default interval %s", err, def.Interval)
		case d < MinInterval:
			warn(st, "shorter than %s; using the default interval %s", MinInterval, def.Interval)
		default:
			spec.Interval = d
		}
	}
	if st, ok := settings["timeout"]; ok {
		d, err := parseDuration(st.Value)
		switch {
		case err != nil:
			warn(st, "%v; using the default timeout %s", err, def.Timeout)
		case d <= 0:
			warn(st, "want more than 0; using the default timeout %s", def.Timeout)
		case d > spec.Interval:
			warn(st, "longer than the interval %s; using the default timeout %s", spec.Interval, min(def.Timeout, spec.Interval))
		default:
			spec.Timeout = d
		}
	}
	if spec.Timeout > spec.Interval {
		// A short interval with the agent's default timeout.
		spec.Timeout = spec.Interval
	}
	return spec, warns
}

// parseDuration reads a Go duration ("5s", "500ms") or whole seconds ("5").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (want 5s, 500ms or whole seconds)")
	}
	if d <= 0 {
		return 0, fmt.Errorf("not a positive duration")
	}
	return d, nil
}
