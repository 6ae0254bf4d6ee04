package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// ecsMetrics are the ECS introspection client's metrics:
//
//	signpost_agent_ecs_introspection_requests_total{result}  requests by result: ok, not_found, error
//	signpost_agent_ecs_waiting_containers                    awsvpc containers not registered because their task's address is unknown
type ecsMetrics struct {
	requests *prometheus.CounterVec
	waiting  prometheus.Gauge
}

// newECSMetrics makes the metrics, registered with reg when it is set.
func newECSMetrics(reg prometheus.Registerer) (*ecsMetrics, error) {
	m := &ecsMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_agent_ecs_introspection_requests_total",
			Help: "Requests to the ECS agent's introspection API for an awsvpc task, by result (ok, not_found, error: no answer, a timeout, a bad or oversized one).",
		}, []string{"result"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_agent_ecs_waiting_containers",
			Help: "Containers of awsvpc tasks not registered because their task's address is not known yet (the introspection API failed); retried.",
		}),
	}
	for _, r := range []string{"ok", "not_found", "error"} {
		m.requests.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.waiting} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ECS introspection metrics: %w", err)
		}
	}
	return m, nil
}
