package dnsserver

import (
	"fmt"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a TCP connection is closed to make room (metrics.tcpClosed).
const (
	tcpClientShare = iota
	tcpServerFull
	tcpRefused
)

// Query types counted by name; anything else counts as "other".
var countedTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypePTR, dns.TypeSOA, dns.TypeNS, dns.TypeANY}

// Response codes counted by name; anything else counts as "other".
var countedRcodes = []int{rcodeNoError, rcodeFormErr, rcodeServFail, rcodeNXDomain, rcodeNotImp, rcodeRefused, rcodeBadVers}

// metrics holds counters resolved ahead of time, so counting a query is
// one atomic add and no map lookup.
type metrics struct {
	queries [9][8]prometheus.Counter // [type][rcode]
	dropped prometheus.Counter
	// tcpClosed counts TCP connections closed to make room, by reason.
	tcpClosed [3]prometheus.Counter
	// buildSeconds times the background packing of large services.
	buildSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signpost_dns_queries_total",
		Help: "DNS queries answered, by query type and response code.",
	}, []string{"type", "rcode"})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "signpost_dns_dropped_total",
		Help: "DNS packets dropped without an answer (too short, or not a query).",
	})
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signpost_dns_tcp_closed_total",
		Help: "DNS TCP connections closed to make room: client_share (the client's own oldest idle one, at its share), server_full (the oldest idle one of all), refused (the new one: none idle).",
	}, []string{"reason"})
	build := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "signpost_dns_build_seconds",
		Help:    "Time to pack the answers of a large service after it changed, in the background; queries get its previous answers meanwhile.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{vec, dropped, closed, build} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register DNS metrics: %w", err)
			}
		}
	}
	m := &metrics{dropped: dropped, buildSeconds: build}
	for i, r := range []string{"client_share", "server_full", "refused"} {
		m.tcpClosed[i] = closed.WithLabelValues(r)
	}
	for ti := range m.queries {
		tname := "other"
		if ti < len(countedTypes) {
			tname = dns.TypeToString[countedTypes[ti]]
		}
		for ri := range m.queries[ti] {
			rname := "other"
			if ri < len(countedRcodes) {
				rname = dns.RcodeToString[countedRcodes[ri]]
				if countedRcodes[ri] == rcodeBadVers {
					rname = "BADVERS" // 16 is also TSIG's BADSIG, miekg's name for it
				}
			}
			m.queries[ti][ri] = vec.WithLabelValues(tname, rname)
		}
	}
	return m, nil
}

func (m *metrics) count(qtype uint16, rcode int) {
	ti := len(countedTypes)
	for i, t := range countedTypes {
		if t == qtype {
			ti = i
			break
		}
	}
	ri := len(countedRcodes)
	for i, r := range countedRcodes {
		if r == rcode {
			ri = i
			break
		}
	}
	m.queries[ti][ri].Inc()
}
