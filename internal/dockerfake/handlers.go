package dockerfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/common"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/system"
)

// versionPrefix matches a path's API version prefix, as the engine's router.
var versionPrefix = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)(/.*)$`)

// ServeHTTP serves the Engine API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	s.mu.Lock()
	s.requests[key]++
	apiV, minV, engineV := s.apiVersion, s.minVersion, s.engineVer
	s.mu.Unlock()

	// The engine's version middleware: on every response.
	h := w.Header()
	h.Set("Server", fmt.Sprintf("Docker/%s (%s)", engineV, runtime.GOOS))
	h.Set("Api-Version", apiV)
	h.Set("Ostype", runtime.GOOS)

	p, reqV := r.URL.Path, apiV
	if m := versionPrefix.FindStringSubmatch(p); m != nil {
		reqV, p = m[1], m[2]
		if versionLess(reqV, minV) || versionLess(apiV, reqV) {
			writeError(w, http.StatusBadRequest, versionError(reqV, minV, apiV))
			return
		}
	}
	get := r.Method == http.MethodGet
	switch {
	case p == "/_ping" && (get || r.Method == http.MethodHead):
		s.ping(w, r)
	case p == "/version" && get:
		s.version(w, apiV, minV, engineV)
	case p == "/info" && get:
		s.info(w, engineV)
	case p == "/containers/json" && get:
		s.list(w, r)
	case p == "/events" && get:
		s.events(w, r, reqV)
	case strings.HasPrefix(p, "/containers/") && strings.HasSuffix(p, "/json") && get:
		s.inspect(w, strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/json"))
	case strings.HasPrefix(p, "/containers/") && strings.HasSuffix(p, "/stop") && r.Method == http.MethodPost:
		s.stop(w, strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/stop"))
	default:
		s.mu.Lock()
		s.unhandled[key]++
		s.mu.Unlock()
		s.log.Warn("dockerfake: request not served", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery)
		writeError(w, http.StatusNotFound, "page not found")
	}
}

// writeJSON writes v as the engine does: JSON and a newline.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"message":"dockerfake: encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes Docker's JSON error body.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, common.ErrorResponse{Message: msg})
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Builder-Version", "2")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Docker-Experimental", "false")
	h.Set("Pragma", "no-cache")
	h.Set("Swarm", "inactive")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK"))
}

func (s *Server) version(w http.ResponseWriter, apiV, minV, engineV string) {
	writeJSON(w, http.StatusOK, system.VersionResponse{
		Platform:      system.PlatformInfo{Name: "Docker Engine - Community (dockerfake)"},
		Version:       engineV,
		APIVersion:    apiV,
		MinAPIVersion: minV,
		Os:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		Components: []system.ComponentVersion{{
			Name: "Engine", Version: engineV,
			Details: map[string]string{"ApiVersion": apiV, "MinAPIVersion": minV, "Os": runtime.GOOS, "Arch": runtime.GOARCH},
		}},
		GoVersion:     runtime.Version(),
		KernelVersion: "dockerfake",
	})
}

func (s *Server) info(w http.ResponseWriter, engineV string) {
	s.mu.Lock()
	in := system.Info{ID: "dockerfake", Name: "dockerfake", ServerVersion: engineV, OSType: runtime.GOOS,
		Architecture: runtime.GOARCH, OperatingSystem: "dockerfake", Driver: "overlay2", NCPU: runtime.NumCPU(),
		SystemTime: time.Now().Format(time.RFC3339Nano), NEventsListener: s.streams, LoggingDriver: "json-file"}
	for _, st := range s.containers {
		in.Containers++
		if st.running {
			in.ContainersRunning++
		} else {
			in.ContainersStopped++
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, in)
}

// parseFilters reads the filters parameter, in either of the engine's
// encodings ({"label":{"a=b":true}} or the legacy {"label":["a=b"]}),
// allowing only the terms in allowed.
func parseFilters(raw string, allowed ...string) (map[string][]string, error) {
	out := map[string][]string{}
	if raw == "" {
		return out, nil
	}
	var sets map[string]map[string]bool
	if err := json.Unmarshal([]byte(raw), &sets); err == nil {
		for k, vs := range sets {
			for v, on := range vs {
				if on {
					out[k] = append(out[k], v)
				}
			}
		}
	} else {
		var lists map[string][]string
		if err := json.Unmarshal([]byte(raw), &lists); err != nil {
			return nil, fmt.Errorf("invalid filter: %s", raw)
		}
		out = lists
	}
	for k := range out {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("invalid filter '%s'", k)
		}
	}
	return out, nil
}

// labelsMatch reports whether labels satisfy every label filter ("k" or
// "k=v").
func labelsMatch(labels map[string]string, filters []string) bool {
	for _, f := range filters {
		k, v, hasV := strings.Cut(f, "=")
		got, ok := labels[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return true
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilters(r.URL.Query().Get("filters"), "label", "status", "id", "name")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	all := r.URL.Query().Get("all")
	showAll := all == "1" || all == "true" || len(f["status"]) > 0
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []container.Summary{}
	for i := len(s.order) - 1; i >= 0; i-- { // newest first, as docker ps
		st := s.containers[s.order[i]]
		if !showAll && !st.running {
			continue
		}
		if len(f["status"]) > 0 && !slices.Contains(f["status"], string(st.status)) {
			continue
		}
		if !labelsMatch(st.spec.Labels, f["label"]) {
			continue
		}
		if ids := f["id"]; len(ids) > 0 && !slices.ContainsFunc(ids, func(p string) bool { return strings.HasPrefix(st.spec.ID, p) }) {
			continue
		}
		if ns := f["name"]; len(ns) > 0 && !slices.ContainsFunc(ns, func(n string) bool { return strings.Contains(st.spec.Name, strings.TrimPrefix(n, "/")) }) {
			continue
		}
		out = append(out, s.summaryLocked(st))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) summaryLocked(st *state) container.Summary {
	sum := container.Summary{
		ID:      st.spec.ID,
		Names:   []string{"/" + st.spec.Name},
		Image:   st.spec.Image,
		Command: "sh",
		Created: st.created.Unix(),
		Ports:   []container.PortSummary{},
		Labels:  st.spec.Labels,
		State:   st.status,
		Mounts:  []container.MountPoint{},
	}
	if sum.Labels == nil {
		sum.Labels = map[string]string{}
	}
	if st.running {
		sum.Status = "Up " + time.Since(st.startedAt).Round(time.Second).String()
	} else {
		sum.Status = fmt.Sprintf("Exited (%d) %s ago", st.exitCode, time.Since(st.finishedAt).Round(time.Second))
	}
	if st.health != nil && st.running {
		sum.Health = &container.HealthSummary{Status: st.health.Status, FailingStreak: st.health.FailingStreak}
		sum.Status += " (" + string(st.health.Status) + ")"
	}
	sum.HostConfig.NetworkMode = st.spec.NetworkMode
	for _, ps := range st.spec.Ports {
		p, _ := parsePort(ps)
		bs := st.spec.Bindings[p]
		if len(bs) == 0 || !st.running {
			sum.Ports = append(sum.Ports, container.PortSummary{PrivatePort: p.Num(), Type: string(p.Proto())})
		}
		for _, b := range bs {
			hp, _ := strconv.ParseUint(b.HostPort, 10, 16)
			if st.running {
				sum.Ports = append(sum.Ports, container.PortSummary{IP: b.HostIP, PrivatePort: p.Num(), PublicPort: uint16(hp), Type: string(p.Proto())})
			}
		}
	}
	sum.NetworkSettings = &container.NetworkSettingsSummary{Networks: s.endpointsLocked(st)}
	return sum
}

// endpointsLocked is a container's networks as the engine reports them.
func (s *Server) endpointsLocked(st *state) map[string]*network.EndpointSettings {
	nets := st.spec.Networks
	if nets == nil && st.spec.NetworkMode == "bridge" {
		nets = map[string]netip.Addr{"bridge": netip.MustParseAddr("172.17.0.2")}
	}
	out := map[string]*network.EndpointSettings{}
	for name, addr := range nets {
		ep := &network.EndpointSettings{NetworkID: "net_" + name, EndpointID: "ep_" + shortID(st.spec.ID) + "_" + name}
		if st.running {
			if addr.Is4() {
				ep.IPAddress, ep.IPPrefixLen = addr, 16
				b := addr.As4()
				b[3] = 1
				ep.Gateway = netip.AddrFrom4(b)
			} else if addr.IsValid() {
				ep.GlobalIPv6Address, ep.GlobalIPv6PrefixLen = addr, 64
			}
		}
		out[name] = ep
	}
	return out
}

func (s *Server) inspect(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findLocked(ref)
	if st == nil {
		writeError(w, http.StatusNotFound, "No such container: "+ref)
		return
	}
	exposed := network.PortSet{}
	ports := network.PortMap{}
	for _, ps := range st.spec.Ports {
		p, _ := parsePort(ps)
		exposed[p] = struct{}{}
		if st.running {
			ports[p] = st.spec.Bindings[p]
		}
	}
	state := &container.State{
		Status:     st.status,
		Running:    st.running,
		ExitCode:   st.exitCode,
		StartedAt:  st.startedAt.Format(time.RFC3339Nano),
		FinishedAt: "0001-01-01T00:00:00Z",
	}
	if st.running {
		state.Pid = 4242
	} else {
		state.FinishedAt = st.finishedAt.Format(time.RFC3339Nano)
	}
	if st.health != nil {
		h := *st.health
		h.Log = slices.Clone(h.Log)
		state.Health = &h
	}
	writeJSON(w, http.StatusOK, container.InspectResponse{
		ID:      st.spec.ID,
		Created: st.created.Format(time.RFC3339Nano),
		Path:    "sh",
		State:   state,
		Image:   "sha256:" + strings.Repeat("0", 64),
		Name:    "/" + st.spec.Name,
		Driver:  "overlay2",
		HostConfig: &container.HostConfig{
			NetworkMode:  container.NetworkMode(st.spec.NetworkMode),
			PortBindings: st.spec.Bindings,
		},
		Mounts: []container.MountPoint{},
		Config: &container.Config{
			Hostname:     shortID(st.spec.ID),
			Image:        st.spec.Image,
			Env:          st.spec.Env,
			Cmd:          []string{"sh"},
			Labels:       st.spec.Labels,
			ExposedPorts: exposed,
		},
		NetworkSettings: &container.NetworkSettings{
			SandboxID: "sandbox_" + shortID(st.spec.ID),
			Ports:     ports,
			Networks:  s.endpointsLocked(st),
		},
	})
}

func (s *Server) stop(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findLocked(ref)
	switch {
	case st == nil:
		writeError(w, http.StatusNotFound, "No such container: "+ref)
	case !st.running:
		w.WriteHeader(http.StatusNotModified)
	default:
		if s.cfg.Podman {
			s.emitLocked(st, "stop", nil) // Podman's Docker API stop says so first; its own (podman stop) does not
		}
		s.stopLocked(st, 143)
		w.WriteHeader(http.StatusNoContent)
	}
}
