package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus metrics, on a registry of its own.
type metrics struct {
	registry      *prometheus.Registry
	syncs         *prometheus.CounterVec
	syncDuration  prometheus.Histogram
	services      prometheus.Gauge
	frontends     prometheus.Gauge
	backends      prometheus.Gauge
	serviceErrors prometheus.Gauge
	lastSync      prometheus.Gauge
}

func newMetrics() *metrics {
	const ns = "xdplane_agent"
	m := &metrics{
		registry: prometheus.NewRegistry(),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "syncs_total",
			Help: "Syncs of the datapath's services with the API, by result (ok, error).",
		}, []string{"result"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "sync_duration_seconds",
			Help:    "How long writing the desired services into the datapath took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100 µs to 3.3 s
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "services",
			Help: "Kubernetes Services installed at the last successful sync.",
		}),
		frontends: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "frontends",
			Help: "Frontends (address, port, protocol) installed at the last successful sync.",
		}),
		backends: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "backends",
			Help: "Backends of all frontends at the last successful sync.",
		}),
		serviceErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "services_left_out",
			Help: "Services the last sync left out because they could not be translated (see the log).",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_sync_timestamp_seconds",
			Help: "When the last successful sync finished.",
		}),
	}
	m.registry.MustRegister(m.syncs, m.syncDuration, m.services, m.frontends, m.backends, m.serviceErrors, m.lastSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
