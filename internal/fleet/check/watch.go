package check

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// checkWatches is check 6: each stream is ordered and exact, and one that
// ran to the end ends on the store's state (within Bounds.Converge of the
// run's end).
func checkWatches(m *model, r *Report) {
	streams := map[string][]history.WatchEvent{}
	for _, e := range m.h.Watches {
		streams[e.Stream] = append(streams[e.Stream], e)
	}
	ran := map[string]bool{}
	for _, s := range m.h.Streams {
		ran[s.Stream] = s.Stopped == 0
	}
	n := 0
	for name, evs := range streams {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Got < evs[j].Got })
		lastRev := map[string]int64{}
		lastEv := map[string]history.WatchEvent{}
		for _, e := range evs {
			n++
			if e.Reset {
				// The stream starts over: what it knew of services the
				// reset does not name is gone.
				clear(lastRev)
				for svc := range lastEv {
					if !slices.Contains(e.Services, svc) {
						delete(lastEv, svc)
					}
				}
				continue
			}
			if prev, ok := lastRev[e.Service]; ok && e.Index <= prev {
				what := "again"
				if e.Index < prev {
					what = "after revision " + strconv.FormatInt(prev, 10)
				}
				r.add(6, "watch order", e.Got, "watch %s (%s) sent %s at revision %d %s", name, e.Server, e.Service, e.Index, what)
			}
			lastRev[e.Service] = e.Index
			lastEv[e.Service] = e
			s := m.services[e.Service]
			if s == nil {
				if len(e.IDs) > 0 {
					r.add(6, "watch event", e.Got, "watch %s (%s) sent %s with [%s], but the store never had the service", name, e.Server, e.Service, strings.Join(e.IDs, " "))
				}
				continue
			}
			if v := s.vs[s.at(e.Index)]; v.idSig != sig(e.IDs) {
				r.add(6, "watch event", e.Got, "watch %s (%s) sent %s at revision %d with [%s]; the store's %s at that revision is [%s]",
					name, e.Server, e.Service, e.Index, strings.Join(e.IDs, " "), e.Service, strings.Join(v.ids, " "))
			}
		}
		if !ran[name] || m.h.End == 0 {
			continue
		}
		// The stream's last word on each service must have been current
		// Bounds.Converge before the end.
		by := m.h.End - int64(m.h.Bounds.Converge) - m.slack
		for svc, s := range m.services {
			e, ok := lastEv[svc]
			if !ok {
				if i := s.at(m.revKnownBy(by)); len(s.vs[i].ids) > 0 {
					r.add(6, "watch incomplete", m.h.End, "watch %s never sent %s, which holds [%s]", name, svc, strings.Join(s.vs[i].ids, " "))
				}
				continue
			}
			i := s.at(e.Index)
			if m.replacedBefore(s, i, by) {
				r.add(6, "watch incomplete", m.h.End, "watch %s (%s) last sent %s at revision %d, replaced at revision %d by %s; the stream ended at %s",
					name, e.Server, svc, e.Index, s.end(i), secs(m.knownBy(s.end(i))), secs(m.h.End))
			}
		}
	}
	r.Checked["watch events"] = n
}
