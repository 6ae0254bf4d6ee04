package forward

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts what the resolver did with each query.
type metrics struct {
	zone, forwarded, refused, failed, overloaded prometheus.Counter
	inflight                                     prometheus.Gauge
	tcpShare                                     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signpost_resolver_queries_total",
		Help: "Queries to the resolver for containers, by result: zone (answered by signpost), forwarded (answered by an upstream), refused (a client outside --allow-recursion), failed (no upstream answered), overloaded (too many being forwarded).",
	}, []string{"result"})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "signpost_resolver_forwarding",
		Help: "Queries being forwarded to upstreams now (at most the resolver's MaxInflight).",
	})
	tcpShare := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "signpost_resolver_tcp_share_closed_total",
		Help: "TCP connections closed as soon as accepted because their client already held its share (MaxTCPConnsPerClient).",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{vec, inflight, tcpShare} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register resolver metrics: %w", err)
			}
		}
	}
	return &metrics{
		zone:       vec.WithLabelValues("zone"),
		forwarded:  vec.WithLabelValues("forwarded"),
		refused:    vec.WithLabelValues("refused"),
		failed:     vec.WithLabelValues("failed"),
		overloaded: vec.WithLabelValues("overloaded"),
		inflight:   inflight,
		tcpShare:   tcpShare,
	}, nil
}
