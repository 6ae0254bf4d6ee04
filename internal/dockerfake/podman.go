package dockerfake

import (
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
)

// PodmanHealthLag is how long after its health_status event a Podman
// engine (Config.Podman) records a HEALTHCHECK result, as Podman 4 sends
// the event when the check starts.
const PodmanHealthLag = 300 * time.Millisecond

// The Podman flavour (Config.Podman) answers as Podman 4.3's
// Docker-compatible API does where it differs from Docker's:
//
//   - its event filter matches a die event by "died", not "die"
//     (containers/podman#16857), and a label given as a bare key matches
//     only a label of empty value (#26702);
//   - stop (Stop, as podman stop does) sends die alone, no kill and no
//     stop; stop through the Docker API sends stop, then die; a kill
//     names no signal; removing sends remove, not destroy;
//   - a HEALTHCHECK result sends a bare health_status event, naming no
//     status, whether or not the status changed (#24003), and the result
//     is recorded PodmanHealthLag after the event.

// podmanEventMatches is eventMatches as Podman applies the filters.
func podmanEventMatches(m events.Message, f map[string][]string) bool {
	if ts := f["type"]; len(ts) > 0 && !slices.Contains(ts, string(m.Type)) {
		return false
	}
	if es := f["event"]; len(es) > 0 && !slices.ContainsFunc(es, func(e string) bool {
		switch {
		case e == "died":
			return m.Action == "die"
		case e == "die":
			return false
		}
		return e == string(m.Action)
	}) {
		return false
	}
	if cs := f["container"]; len(cs) > 0 && !slices.ContainsFunc(cs, func(c string) bool {
		return c == m.Actor.ID || c == m.Actor.Attributes["name"]
	}) {
		return false
	}
	for _, l := range f["label"] {
		k, v, _ := strings.Cut(l, "=")
		if got, ok := m.Actor.Attributes[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// podmanHealthLocked sends a status-less health_status event now and
// records the result later, as Podman 4 does.
func (s *Server) podmanHealthLocked(st *state, res *container.HealthcheckResult, status container.HealthStatus) {
	s.emitLocked(st, "health_status", nil)
	time.AfterFunc(PodmanHealthLag, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if st.health == nil || !st.running {
			return
		}
		recordHealth(st.health, res, status)
	})
}

// recordHealth appends a result to a health log and sets the status.
func recordHealth(h *container.Health, res *container.HealthcheckResult, status container.HealthStatus) {
	if res.ExitCode != 0 {
		h.FailingStreak++
	} else {
		h.FailingStreak = 0
	}
	h.Log = append(h.Log, res)
	if n := len(h.Log); n > 5 { // the engine keeps the last 5
		h.Log = slices.Clone(h.Log[n-5:])
	}
	h.Status = status
}
