package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts checks, transitions and the containers stopped for
// failing. A nil *Metrics counts nothing.
type Metrics struct {
	checks      *prometheus.CounterVec
	transitions *prometheus.CounterVec
	stops       *prometheus.CounterVec
}

// NewMetrics registers the health metrics on reg:
//
//	signpost_health_checks_total{kind="http|tcp",result="pass|fail"}
//	signpost_health_transitions_total{from="pending|passing|critical",to="passing|critical"}
//	signpost_health_container_stops_total{result="ok|error"}
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_health_checks_total",
			Help: "Health-check probes the agent ran, by kind and result.",
		}, []string{"kind", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_health_transitions_total",
			Help: "Health status changes of the agent's instances (its own checks and Docker HEALTHCHECKs), by old and new status.",
		}, []string{"from", "to"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_health_container_stops_total",
			Help: "Containers the agent stopped because they went critical (--stop-unhealthy), by result.",
		}, []string{"result"}),
	}
	// Every usual series exists from the start, at zero.
	for _, k := range []Kind{HTTP, TCP} {
		for _, r := range []string{"pass", "fail"} {
			m.checks.WithLabelValues(string(k), r)
		}
	}
	for _, ft := range [][2]string{{Pending, Passing}, {Pending, Critical}, {Passing, Critical}, {Critical, Passing}} {
		m.transitions.WithLabelValues(ft[0], ft[1])
	}
	m.stops.WithLabelValues("ok")
	m.stops.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.checks, m.transitions, m.stops} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register health metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) checked(kind Kind, ok bool) {
	if m == nil {
		return
	}
	res := "fail"
	if ok {
		res = "pass"
	}
	m.checks.WithLabelValues(string(kind), res).Inc()
}

func (m *Metrics) transition(from, to string) {
	if m != nil {
		m.transitions.WithLabelValues(from, to).Inc()
	}
}

// Transition counts a status change the caller decided (a Docker
// HEALTHCHECK event, say); Check counts its own.
func (m *Metrics) Transition(from, to string) { m.transition(from, to) }

// Stopped counts one container stop and whether it worked.
func (m *Metrics) Stopped(err error) {
	if m == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.stops.WithLabelValues(res).Inc()
}
