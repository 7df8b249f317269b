package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// metricsRegistry is what GET /metrics serves, less the API's own
// collectors (api.New adds them): the Go runtime and the process, the hub,
// the Redis watch, the PostgreSQL store, and the history writer and jambonz mirror when they run.
// A registry of our own, not prometheus.DefaultRegisterer, so that two
// servers in one test binary do not collide.
func metricsRegistry(h *hub.Hub, src *store.RedisSource, db *store.DB, hist *store.History, jambonz *store.Jambonz) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(hubCollectors(h)...)
	reg.MustRegister(src.Collectors()...)
	reg.MustRegister(db.Collectors()...)
	if hist != nil {
		reg.MustRegister(hist.Collectors()...)
	}
	if jambonz != nil {
		reg.MustRegister(jambonz.Collectors()...)
	}
	return reg
}

// hubCollectors expose hub.Metrics. They live here, not in hub, because
// hub imports nothing but the standard library.
func hubCollectors(h *hub.Hub) []prometheus.Collector {
	m := &h.Metrics
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, v *atomic.Int64, scale float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) * scale })
	}
	return []prometheus.Collector{
		counter("presencehub_changes_total", "Presence changes emitted by the hub.", &m.Changes),
		counter("presencehub_expirations_total", "Registrations expired by the hub's own clock.", &m.Expirations),
		counter("presencehub_resyncs_total", "Full resyncs from Redis applied.", &m.Resyncs),
		counter("presencehub_conflations_total", "Subscriber queues compacted to the latest state per user.", &m.Conflations),
		counter("presencehub_subscriber_resyncs_total", "Subscribers sent a fresh snapshot because they fell behind.", &m.SubResyncs),
		gauge("presencehub_subscriptions", "Current stream subscriptions.", &m.Subscribers, 1),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presencehub_subscription_queued_changes", Help: "Changes waiting in the subscriptions' queues for their connection's writer (counted when scraped)."},
			func() float64 { return float64(h.Queued()) }),
		counter("presencehub_realm_claims_total", "Realms that changed holder: subscriptions ended, history dropped, new epoch.", &m.Claims),
		gauge("presencehub_last_resync_timestamp_seconds", "Unix time of the last full resync the hub applied; 0 before the first.", &m.SyncedAtUnix, 1e-3),
	}
}
