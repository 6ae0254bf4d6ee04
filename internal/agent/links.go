package agent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signpost-dns/signpost/internal/backend"
)

// Links reports the servers the backend writes through, which one is
// current and which are failing; false when the backend has none to
// report (Route 53).
func (a *Agent) Links() (backend.Links, bool) {
	lr, ok := a.be.(backend.LinkReporter)
	if !ok {
		return backend.Links{}, false
	}
	return lr.Links(), true
}

// linksHealth says how the backend's servers fare: failing (every server
// known to have failed its last request: heartbeats reach none) or
// degraded (some failing, at least one answering), each with why.
func (a *Agent) linksHealth() (failing, degraded error) {
	l, ok := a.Links()
	if !ok || len(l.Servers) == 0 {
		return nil, nil
	}
	var down []string
	for _, s := range l.Servers {
		if s.State == "down" {
			down = append(down, fmt.Sprintf("%s down since %s: %s", s.Name, s.Since.UTC().Format(time.RFC3339), s.LastError))
		}
	}
	switch {
	case len(down) == 0:
		return nil, nil
	case len(down) == len(l.Servers):
		return fmt.Errorf("no server answers: %s", strings.Join(down, "; ")), nil
	}
	return nil, fmt.Errorf("%d of %d servers failing: %s", len(down), len(l.Servers), strings.Join(down, "; "))
}

// Degraded says, while the agent does its job (Health is nil), what is
// wrong all the same: some of the backend's servers fail and the others
// carry its writes; containers of awsvpc tasks wait for their task's
// address (ECS introspection fails). nil when nothing is.
func (a *Agent) Degraded() error {
	_, d := a.linksHealth()
	if a.ecs != nil {
		if err := a.ecs.degraded(); err != nil {
			d = errors.Join(d, err)
		}
	}
	return d
}

// linkCollector exports the backend's servers:
//
//	signpost_agent_server_up{server}       1 when its last request or probe was answered
//	signpost_agent_server_current{server}  1 on the server writes go to
//	signpost_agent_server_failovers_total  moves to another server because the current one failed
type linkCollector struct {
	lr                  backend.LinkReporter
	up, current, failed *prometheus.Desc
}

func newLinkCollector(lr backend.LinkReporter) *linkCollector {
	return &linkCollector{
		lr:      lr,
		up:      prometheus.NewDesc("signpost_agent_server_up", "1 when the server answered the agent's last request or probe, 0 when it failed or was not tried yet.", []string{"server"}, nil),
		current: prometheus.NewDesc("signpost_agent_server_current", "1 on the server the agent's writes and heartbeats go to.", []string{"server"}, nil),
		failed:  prometheus.NewDesc("signpost_agent_server_failovers_total", "Times the agent's requests moved to another server because the current one failed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.current
	ch <- c.failed
}

// Collect implements prometheus.Collector.
func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.lr.Links()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, s := range l.Servers {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b(s.State == "up"), s.Name)
		ch <- prometheus.MustNewConstMetric(c.current, prometheus.GaugeValue, b(s.Current), s.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(l.Failovers))
}
