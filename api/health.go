package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

func (s *server) handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz is 200 once the first Redis sync is applied and PostgreSQL
// answers; 503 with the reasons otherwise.
func (s *server) handleReadyz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var problems []string
		if !s.pres.Ready() {
			problems = append(problems, "presence snapshot not loaded from redis yet")
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.dir.Ping(ctx); err != nil {
			problems = append(problems, "postgres unreachable: "+err.Error())
		}
		if len(problems) > 0 {
			encode(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
			return
		}
		encode(w, http.StatusOK, map[string]string{"status": "ready"})
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
		if s.metrics != nil {
			s.metrics(m)
		}
	}
}
