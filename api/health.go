package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/presencehub/presencehub/store"
)

func (s *server) handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz is 200 once the first Redis sync is applied, the checks of
// Options.Ready pass and PostgreSQL answers; 503 with the reasons otherwise.
// The reasons name what is down, never an address or a driver's error text
// (anyone may call /readyz): the details go to the log.
func (s *server) handleReadyz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var problems []string
		if !s.pres.Ready() {
			problems = append(problems, "presence snapshot not loaded from redis yet")
		}
		if s.ready != nil {
			problems = append(problems, s.ready()...)
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.dir.Ping(ctx); err != nil {
			problems = append(problems, "postgres unreachable")
			s.log.Warn("readyz: postgres unreachable", "err", err)
		}
		body := map[string]any{"status": "ready"}
		if s.jambonz != nil {
			// A stale mirror does not make the process unready: it keeps
			// serving the last mirror, which is the point of having one.
			body["jambonz_mirror"] = jambonzMirrorState(s.jambonz())
		}
		if len(problems) > 0 {
			body["status"], body["problems"] = "not ready", problems
			encode(w, http.StatusServiceUnavailable, body)
			return
		}
		encode(w, http.StatusOK, body)
	}
}

// MetricsWriter writes Prometheus text-format samples.
type MetricsWriter struct {
	w io.Writer
}

// Counter writes one counter with its help line.
func (m *MetricsWriter) Counter(name, help string, v uint64) {
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
}

// Gauge writes one gauge with its help line.
func (m *MetricsWriter) Gauge(name, help string, v float64) {
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
}

// handleMetrics serves GET /metrics in the Prometheus text format.
func (s *server) handleMetrics() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m := &MetricsWriter{w: w}
		st := &s.stats
		m.Gauge("presencehub_stream_connections", "Open websocket connections.", float64(st.connections.Load()))
		m.Counter("presencehub_stream_connections_total", "Websocket connections accepted.", st.accepted.Load())
		m.Counter("presencehub_stream_disconnects_total", "Websocket connections ended, for any reason.", st.disconnects.Load())
		m.Counter("presencehub_stream_slow_disconnects_total", "Websocket connections closed because a frame could not be written in time.", st.slowDisconnects.Load())
		m.Counter("presencehub_stream_frames_total", "Frames written to websocket clients.", st.frames.Load())
		m.Counter("presencehub_stream_resync_snapshots_total", "Fresh snapshots sent to subscribers that fell behind.", st.resyncs.Load())
		m.Counter("presencehub_stream_bad_messages_total", "Client frames answered with an error frame.", st.badMessages.Load())
		m.Counter("presencehub_http_rate_limited_total", "Requests answered 429 by a rate limit.", s.lim.limited.Load())
		m.Counter("presencehub_stream_budget_closes_total", "Websocket connections closed 4008 because more than the output budget waited unread.", st.budgetCloses.Load())
		m.Counter("presencehub_stream_unauthorized_closes_total", "Websocket connections closed 4001 because their credential was revoked or expired.", st.authCloses.Load())
		m.Counter("presencehub_stream_revoked_subscriptions_total", "Subscriptions ended with an unauthorized error frame.", st.revokedSubs.Load())
		m.Counter("presencehub_stream_limit_refusals_total", "Subscribes refused by the subscription, watched-user or output-budget cap.", st.limitRefusals.Load())
		m.Counter("presencehub_stream_rate_limited_total", "Subscribes refused by the per-connection or per-key rate limit.", st.rateLimited.Load())
		m.Counter("presencehub_stream_key_conn_refusals_total", "Upgrades refused (429) because the key had its maximum of open sockets.", st.keyConnRefusals.Load())
		m.Counter("presencehub_stream_ip_refusals_total", "Upgrades refused (429) because the client address had its maximum of unauthenticated upgrades in progress.", st.ipRefusals.Load())
		if s.jambonz != nil {
			st := s.jambonz()
			stale, since, last := 0.0, 0.0, 0.0
			if !st.StaleSince.IsZero() || !st.Synced {
				stale = 1
			}
			if !st.StaleSince.IsZero() {
				since = float64(st.StaleSince.UnixMilli()) / 1000
			}
			if !st.LastSync.IsZero() {
				last = float64(st.LastSync.UnixMilli()) / 1000
			}
			m.Gauge("presencehub_jambonz_mirror_stale", "1 while the mirror of jambonz's tenants is stale (its last sync failed, or none succeeded yet).", stale)
			m.Gauge("presencehub_jambonz_mirror_stale_since_seconds", "Unix time of the first failed sync since the last success; 0 while fresh.", since)
			m.Gauge("presencehub_jambonz_mirror_last_sync_seconds", "Unix time of the last successful sync of jambonz's tenants; 0 before the first.", last)
		}
		if s.metrics != nil {
			s.metrics(m)
		}
	}
}

// jambonzMirrorState is /readyz's view of the jambonz mirror. The sync's
// error stays in the log: it names internal hosts.
func jambonzMirrorState(st store.JambonzStatus) map[string]any {
	out := map[string]any{"status": "fresh"}
	if !st.LastSync.IsZero() {
		out["last_sync"] = st.LastSync.UTC().Format(time.RFC3339Nano)
	}
	switch {
	case !st.StaleSince.IsZero():
		out["status"] = "stale"
		out["stale_since"] = st.StaleSince.UTC().Format(time.RFC3339Nano)
	case !st.Synced:
		out["status"] = "not synced yet"
	}
	return out
}
