package check

import (
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// checkDNS is check 5. Each server's answers are matched, in the order
// they were asked, to the earliest revision at or after the last one
// matched (a server has one registry revision for every service, so its
// answers may not go back); the earliest keeps the most choice for later
// answers, so an answer left without a match proves the server went back.
func checkDNS(m *model, r *Report) {
	stale, staleTTL := int64(m.h.Bounds.Stale), int64(m.h.Bounds.StaleTTL)
	byServer := map[string][]history.DNSAnswer{}
	for _, a := range m.h.DNS {
		if a.Got != 0 {
			byServer[a.Server] = append(byServer[a.Server], a)
		}
	}
	n := 0
	for srv, as := range byServer {
		sort.SliceStable(as, func(i, j int) bool { return as[i].Sent < as[j].Sent })
		var floor int64
		for _, a := range as {
			switch a.Rcode {
			case dns.RcodeNameError:
				n++
				// A server may lag by Stale, and by anything during a fault.
				window := stale + m.slack
				if m.inFault(srv, a.Sent) {
					window = 10e9
				}
				if m.existed(a.Service, a.Sent-window, a.Got) {
					r.add(5, "NXDOMAIN", a.Sent, "%s answered NXDOMAIN for %s, which had instances at every revision that may have been current from %s before the question to its answer", srv, a.Service, secs(window))
				}
				continue
			case dns.RcodeSuccess:
			case dns.RcodeServerFailure:
				// A server stepping aside says so, during faults only.
				m.saidTooLong(r, 5, srv, a.Sent, "SERVFAIL")
				continue
			default:
				continue
			}
			n++
			s := m.services[a.Service]
			if s == nil {
				if len(a.Targets) > 0 {
					r.add(5, "DNS", a.Sent, "%s answered %s with [%s], but the store never had the service", srv, a.Service, strings.Join(a.Targets, " "))
				}
				continue
			}
			cands := s.bySrv[sig(a.Targets)]
			from := s.at(floor)
			j := sort.SearchInts(cands, from)
			if j == len(cands) {
				if len(cands) > 0 {
					r.add(5, "DNS went back", a.Sent, "%s answered %s with [%s]: the store's state at revision %d, older than revision %d that its earlier answers showed",
						srv, a.Service, strings.Join(a.Targets, " "), s.vs[cands[len(cands)-1]].rev, floor)
				} else {
					r.add(5, "DNS", a.Sent, "%s answered %s with [%s], which equals the store's serving instances at no revision",
						srv, a.Service, strings.Join(a.Targets, " "))
				}
				continue
			}
			floor = max(floor, s.vs[cands[j]].rev)
			// The youngest matching state decides freshness.
			youngest := int64(-1)
			for _, i := range cands[j:] {
				age := m.age(s, i, a.Sent)
				if youngest < 0 || age < youngest {
					youngest = age
				}
			}
			// A TTL of at most 1 s on records says the server knows it
			// may be stale.
			said := len(a.Targets) > 0 && a.MinTTL <= 1
			if said {
				m.saidTooLong(r, 5, srv, a.Sent, "TTL "+strconv.Itoa(int(a.MinTTL)))
			}
			if !said && !m.inFault(srv, a.Sent) && youngest > stale+m.slack {
				r.add(5, "stale DNS", a.Sent, "%s answered %s with [%s], a state replaced %s before the question; the bound is %s",
					srv, a.Service, strings.Join(a.Targets, " "), secs(youngest), secs(stale))
			}
			if staleTTL > 0 && youngest > staleTTL+m.slack && a.MinTTL > 1 {
				r.add(5, "stale DNS TTL", a.Sent, "%s answered %s with a state replaced %s before the question, with TTL %d; a stale server's TTL is at most 1",
					srv, a.Service, secs(youngest), a.MinTTL)
			}
		}
	}
	r.Checked["DNS answers"] = n
}

// existed reports whether service had instances at every revision that
// may have been current between from and t.
func (m *model) existed(service string, from, t int64) bool {
	s := m.services[service]
	if s == nil {
		return false
	}
	any := false
	for i, v := range s.vs {
		// Possibly current somewhere in [from, t]: begun by t, not
		// replaced before from.
		if m.after(v.rev) > t || m.replacedBefore(s, i, from) {
			continue
		}
		if len(v.ids) == 0 {
			return false
		}
		any = true
	}
	return any
}
