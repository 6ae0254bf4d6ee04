package dockerfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types"
	"github.com/moby/moby/api/types/events"
)

// legacyMessage is an event as engines before API 1.52 send it: the
// deprecated top-level status, id and from beside the message.
type legacyMessage struct {
	Status string `json:"status,omitempty"`
	ID     string `json:"id,omitempty"`
	From   string `json:"from,omitempty"`
	events.Message
}

// parseTimestamp reads since/until as the client sends them: seconds,
// optionally with a fraction of up to 9 digits. Zero means unset.
func parseTimestamp(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	sec, frac, _ := strings.Cut(v, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || len(frac) > 9 {
		return 0, fmt.Errorf("invalid timestamp %q", v)
	}
	var ns int64
	if frac != "" {
		ns, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid timestamp %q", v)
		}
	}
	return s*int64(time.Second) + ns, nil
}

// eventMatches applies the engine's event filters: a message passes when
// it matches one value of each of type, event and container, and every
// label filter.
func eventMatches(m events.Message, f map[string][]string) bool {
	if ts := f["type"]; len(ts) > 0 && !slices.Contains(ts, string(m.Type)) {
		return false
	}
	if es := f["event"]; len(es) > 0 {
		a := string(m.Action)
		base, _, _ := strings.Cut(a, ":")
		if !slices.Contains(es, a) && !slices.Contains(es, base) {
			return false
		}
	}
	if cs := f["container"]; len(cs) > 0 && !slices.ContainsFunc(cs, func(c string) bool {
		return c == m.Actor.ID || c == m.Actor.Attributes["name"]
	}) {
		return false
	}
	return labelsMatch(m.Actor.Attributes, f["label"])
}

// encodeEvent is m in the shape of API version v.
func encodeEvent(m events.Message, v string) ([]byte, error) {
	if versionLess(v, "1.52") {
		l := legacyMessage{Message: m}
		if m.Type == events.ContainerEventType {
			l.Status, l.ID, l.From = string(m.Action), m.Actor.ID, m.Actor.Attributes["image"]
		}
		return json.Marshal(l)
	}
	return json.Marshal(m)
}

// streamContentType is the media type of an event stream: application/json
// before 1.52, then the best the client accepts of JSON Lines and NDJSON.
func streamContentType(r *http.Request, v string) string {
	if versionLess(v, "1.52") {
		return types.MediaTypeJSON
	}
	accept := strings.Join(r.Header.Values("Accept"), ",")
	switch {
	case strings.Contains(accept, types.MediaTypeJSONLines):
		return types.MediaTypeJSONLines
	case strings.Contains(accept, types.MediaTypeNDJSON):
		return types.MediaTypeNDJSON
	}
	return types.MediaTypeJSON
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, reqV string) {
	q := r.URL.Query()
	since, err := parseTimestamp(q.Get("since"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	until, err := parseTimestamp(q.Get("until"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := parseFilters(q.Get("filters"), "type", "event", "label", "container")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	fl, _ := w.(http.Flusher)

	s.mu.Lock()
	if s.streams >= s.cfg.MaxStreams {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("dockerfake: %d event streams open, the most it serves", s.cfg.MaxStreams))
		return
	}
	s.streams++
	restarted := s.restarted
	// Without since, only new events; with it, the held ones from since.
	next := s.firstSeq + uint64(len(s.held))
	if since > 0 {
		next = s.firstSeq
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streams--
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", streamContentType(r, reqV))
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	var untilC <-chan time.Time
	if until > 0 {
		d := time.Until(time.Unix(0, until))
		if d < 0 {
			d = 0
		}
		t := time.NewTimer(d)
		defer t.Stop()
		untilC = t.C
	}
	ending := false
	for {
		s.mu.Lock()
		if next < s.firstSeq {
			next = s.firstSeq // dropped while this stream lagged
		}
		batch := slices.Clone(s.held[next-s.firstSeq:])
		next = s.firstSeq + uint64(len(s.held))
		changed := s.changed
		s.mu.Unlock()
		for _, m := range batch {
			if until > 0 && m.TimeNano > until {
				return
			}
			match := eventMatches
			if s.cfg.Podman {
				match = podmanEventMatches
			}
			if m.TimeNano < since || !match(m, f) {
				continue
			}
			b, err := encodeEvent(m, reqV)
			if err != nil {
				return
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if ending {
			return
		}
		select {
		case <-changed:
		case <-untilC:
			ending = true // send what came up to until, then end
		case <-restarted:
			return
		case <-s.closed:
			return
		case <-r.Context().Done():
			return
		}
	}
}
