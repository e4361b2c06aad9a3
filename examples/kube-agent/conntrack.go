package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdplane/xdplane/datapath"
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

// collectConntrack runs the conntrack garbage collector every interval
// until ctx ends.
func collectConntrack(ctx context.Context, log *slog.Logger, dp *datapath.Datapath, every time.Duration, m *conntrackMetrics) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := lb.CollectConntrack(dp)
		if errors.Is(err, lb.ErrBusy) {
			continue // another process collects
		}
		if err != nil {
			log.Warn("conntrack collection failed", "error", err)
			continue
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
