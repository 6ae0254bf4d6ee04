package zonexfr

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	notify   *prometheus.CounterVec
	active   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, j *journal) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_xfr_requests_total",
			Help: "Zone transfer requests by answer: axfr, ixfr_incremental, ixfr_whole, ixfr_current, ixfr_udp_soa (did not fit), refused, busy (over --xfr-max-transfers), badtsig, failed (cut).",
		}, []string{"answer"}),
		notify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_xfr_notify_total",
			Help: "NOTIFY messages sent to secondaries, by result: acked, error (answered with an error), unanswered (no answer after every try).",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signpost_xfr_transfers_active",
			Help: "Zone transfers running now (at most --xfr-max-transfers).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	serials := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "signpost_xfr_journal_serials",
		Help: "Differences the IXFR journal holds (at most --xfr-journal-serials).",
	}, func() float64 { n, _ := j.size(); return float64(n) })
	records := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "signpost_xfr_journal_records",
		Help: "Records the IXFR journal holds, deleted and added (at most --xfr-journal-records).",
	}, func() float64 { _, n := j.size(); return float64(n) })
	for _, c := range []prometheus.Collector{m.requests, m.notify, m.active, serials, records} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
