package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdplane/xdplane/lb"
)

// conntrackMetrics are the gauges of the load balancer's conntrack, set
// after each collection.
type conntrackMetrics struct {
	entries, limit, evicted, expired, stale prometheus.Gauge
}

func newConntrackMetrics(r *prometheus.Registry) *conntrackMetrics {
	const ns = "xdplane_agent"
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "conntrack", Name: name, Help: help})
	}
	m := &conntrackMetrics{
		entries: g("entries", "Conntrack entries in use, two a flow."),
		limit:   g("limit", "Conntrack entries the map holds (--conntrack-size)."),
		evicted: g("evicted", "Entries the kernel evicted to make room since the map was made: above zero, the map is too small."),
		expired: g("expired", "Entries the collector removed, idle past their timeout, since the map was made."),
		stale:   g("stale", "Entries the collector removed, their backend or service gone, since the map was made."),
	}
	r.MustRegister(m.entries, m.limit, m.evicted, m.expired, m.stale)
	return m
}

// report sets the gauges from a collection, and logs a failure.
func (m *conntrackMetrics) report(log *slog.Logger) func(lb.CollectResult, error) {
	return func(res lb.CollectResult, err error) {
		if err != nil {
			log.Warn("conntrack collection failed", "error", err)
			return
		}
		s := res.Stats
		m.entries.Set(float64(s.Entries))
		m.limit.Set(float64(s.Limit))
		m.evicted.Set(float64(s.Evicted))
		m.expired.Set(float64(s.Expired))
		m.stale.Set(float64(s.Stale))
		log.Debug("conntrack collected", "expired", res.Expired, "stale", res.Stale, "entries", s.Entries, "limit", s.Limit)
	}
}
