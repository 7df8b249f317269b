package main

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsExposition scrapes a running serve and parses /metrics the way
// Prometheus does: every presencehub_ metric is there with its type (and no
// other), so are the Go runtime's and the process's, and the counters move
// when a registration arrives from Redis.
func TestMetricsExposition(t *testing.T) {
	in := startInstance(t)
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := http.Get(in.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Fatalf("GET /metrics = %d %q, want 200 in the text format 0.0.4", resp.StatusCode, ct)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("/metrics does not parse as the Prometheus text format: %v", err)
		}
		return fams
	}
	value := func(fams map[string]*dto.MetricFamily, name string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil || len(f.Metric) != 1 {
			t.Fatalf("/metrics has no single sample of %s", name)
		}
		m := f.Metric[0]
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s is a %v, want a counter or a gauge", name, f.GetType())
		return 0
	}

	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	want := map[string]dto.MetricType{
		// api: the stream and the rate limits
		"presencehub_stream_connections":                   gauge,
		"presencehub_stream_connections_total":             counter,
		"presencehub_stream_disconnects_total":             counter,
		"presencehub_stream_slow_disconnects_total":        counter,
		"presencehub_stream_frames_total":                  counter,
		"presencehub_stream_pings_total":                   counter,
		"presencehub_stream_pings_skipped_total":           counter,
		"presencehub_stream_resync_snapshots_total":        counter,
		"presencehub_stream_bad_messages_total":            counter,
		"presencehub_http_rate_limited_total":              counter,
		"presencehub_stream_budget_closes_total":           counter,
		"presencehub_stream_unauthorized_closes_total":     counter,
		"presencehub_stream_revoked_subscriptions_total":   counter,
		"presencehub_stream_limit_refusals_total":          counter,
		"presencehub_stream_rate_limited_total":            counter,
		"presencehub_stream_watchlist_names_decoded_total": counter,
		"presencehub_stream_key_conn_refusals_total":       counter,
		"presencehub_stream_ip_refusals_total":             counter,
		// hub
		"presencehub_changes_total":                 counter,
		"presencehub_expirations_total":             counter,
		"presencehub_resyncs_total":                 counter,
		"presencehub_conflations_total":             counter,
		"presencehub_subscriber_resyncs_total":      counter,
		"presencehub_subscription_queued_changes":   gauge,
		"presencehub_subscriptions":                 gauge,
		"presencehub_realm_claims_total":            counter,
		"presencehub_last_resync_timestamp_seconds": gauge,
		// store: the Redis watch
		"presencehub_redis_notifications_total":        counter,
		"presencehub_redis_malformed_total":            counter,
		"presencehub_redis_reconnects_total":           counter,
		"presencehub_redis_reads_total":                counter,
		"presencehub_redis_full_syncs_total":           counter,
		"presencehub_redis_malformed_keys":             gauge,
		"presencehub_redis_last_sync_duration_seconds": gauge,
		"presencehub_redis_connected":                  gauge,
		"presencehub_redis_last_sync_age_seconds":      gauge,
		// store: PostgreSQL
		"presencehub_decrypt_failures_total": counter,
		// store: the registration history
		"presencehub_history_changes_total":        counter,
		"presencehub_history_rows_total":           counter,
		"presencehub_history_dropped_total":        counter,
		"presencehub_history_gaps_total":           counter,
		"presencehub_history_write_failures_total": counter,
		"presencehub_history_reconciles_total":     counter,
		"presencehub_history_queued":               gauge,
		// the Go runtime and the process
		"go_goroutines":                 gauge,
		"go_memstats_heap_alloc_bytes":  gauge,
		"process_resident_memory_bytes": gauge,
		"process_cpu_seconds_total":     counter,
	}
	before := scrape()
	for name, typ := range want {
		f := before[name]
		switch {
		case f == nil:
			t.Errorf("/metrics lacks %s", name)
		case f.GetType() != typ:
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), typ)
		case f.GetHelp() == "":
			t.Errorf("%s has no help", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(before)) {
		if _, ok := want[name]; !ok && strings.HasPrefix(name, "presencehub_") {
			t.Errorf("/metrics has %s, which this test does not know: add it to want (and to the README)", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if v := value(before, "presencehub_redis_connected"); v != 1 {
		t.Errorf("presencehub_redis_connected = %v once ready, want 1", v)
	}
	if v := value(before, "presencehub_last_resync_timestamp_seconds"); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("presencehub_last_resync_timestamp_seconds = %v once ready, want the time of the first load", v)
	}

	in.register("alice", "metrics.example.com", "udp", time.Minute)
	moved := []string{"presencehub_changes_total", "presencehub_redis_notifications_total", "presencehub_redis_reads_total"}
	var after map[string]*dto.MetricFamily
	in.eventually("the counters to move after a registration", 10*time.Second, func() bool {
		after = scrape()
		for _, name := range moved {
			if value(after, name) <= value(before, name) {
				return false
			}
		}
		return true
	})
}
