package store

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors are the Prometheus metrics of the Redis watch: its counters
// and its health, read when scraped.
func (s *RedisSource) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		counter("presencehub_redis_notifications_total", "Keyspace notifications received.", &s.m.notifications),
		counter("presencehub_redis_malformed_total", "Registration values skipped because they were malformed.", &s.m.malformed),
		counter("presencehub_redis_reconnects_total", "Pub/sub reconnections to Redis.", &s.m.reconnects),
		counter("presencehub_redis_reads_total", "Registration keys read from Redis (GET and PTTL), in resyncs and after notifications.", &s.m.reads),
		counter("presencehub_redis_full_syncs_total", "Full loads of every registration from Redis handed to the hub.", &s.m.resyncs),
		gauge("presencehub_redis_malformed_keys", "Registration keys currently skipped as malformed.",
			func() float64 { return float64(s.m.malformedKeys.Load()) }),
		gauge("presencehub_redis_last_sync_duration_seconds", "Duration of the last full load from Redis.",
			func() float64 { return time.Duration(s.m.lastResync.Load()).Seconds() }),
		gauge("presencehub_redis_connected", "1 while the Redis watch is subscribed and synced.",
			func() float64 { return boolGauge(s.connected.Load()) }),
		gauge("presencehub_redis_last_sync_age_seconds", "Seconds since the last full load from Redis (-1 before the first).",
			func() float64 {
				if last := s.Health().LastSync; !last.IsZero() {
					return time.Since(last).Seconds()
				}
				return -1
			}),
	}
}

// Collectors are the Prometheus metrics of the PostgreSQL store.
func (db *DB) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		counter("presencehub_decrypt_failures_total", "Reads of a SIP client whose stored password did not decrypt with any configured key (shown masked, with decrypt_failed).", &db.decryptFailures),
	}
}

// Collectors are the Prometheus metrics of the history writer.
func (h *History) Collectors() []prometheus.Collector {
	m := &h.Metrics
	return []prometheus.Collector{
		counter("presencehub_history_changes_total", "Changes written to the registration history.", &m.Changes),
		counter("presencehub_history_rows_total", "Registration history rows inserted or updated by change batches.", &m.Rows),
		counter("presencehub_history_dropped_total", "Changes not recorded because the history buffer was full.", &m.Dropped),
		counter("presencehub_history_gaps_total", "Intervals recorded as incomplete registration history.", &m.Gaps),
		counter("presencehub_history_write_failures_total", "Registration history writes that failed and were retried.", &m.Failures),
		counter("presencehub_history_reconciles_total", "Reconciliations of the stored open sessions with the hub (at start, after a gap).", &m.Reconciles),
		gauge("presencehub_history_queued", "Changes waiting to be written to the registration history.",
			func() float64 { return float64(h.Queued()) }),
	}
}

// Collectors are the Prometheus metrics of the jambonz mirror's freshness.
func (j *Jambonz) Collectors() []prometheus.Collector {
	unix := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixMilli()) / 1000
	}
	return []prometheus.Collector{
		gauge("presencehub_jambonz_mirror_stale", "1 while the mirror of jambonz's tenants is stale (its last sync failed, or none succeeded yet).",
			func() float64 { st := j.Status(); return boolGauge(!st.StaleSince.IsZero() || !st.Synced) }),
		gauge("presencehub_jambonz_mirror_stale_since_seconds", "Unix time of the first failed sync since the last success; 0 while fresh.",
			func() float64 { return unix(j.Status().StaleSince) }),
		gauge("presencehub_jambonz_mirror_last_sync_seconds", "Unix time of the last successful sync of jambonz's tenants; 0 before the first.",
			func() float64 { return unix(j.Status().LastSync) }),
	}
}

// counter exposes an atomic counter as a Prometheus counter.
func counter(name, help string, v *atomic.Uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
}

// gauge is a Prometheus gauge read from f when scraped.
func gauge(name, help string, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
