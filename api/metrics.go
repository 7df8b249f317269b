package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handleMetrics serves GET /metrics: the registry of Options.Metrics in the
// Prometheus exposition format the scraper asks for (text by default).
func (s *server) handleMetrics() http.Handler {
	return promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{ErrorLog: promLog{s.log}})
}

// promLog hands promhttp's errors (a collector failing) to the log.
type promLog struct{ log *slog.Logger }

func (l promLog) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }

// collectors are the API's metrics: the stream's counters and the rate
// limits'. They read the atomic counters the handlers keep, when scraped.
func (s *server) collectors() []prometheus.Collector {
	st := &s.stats
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presencehub_stream_connections", Help: "Open websocket connections."},
			func() float64 { return float64(st.connections.Load()) }),
		counter("presencehub_stream_connections_total", "Websocket connections accepted.", &st.accepted),
		counter("presencehub_stream_disconnects_total", "Websocket connections ended, for any reason.", &st.disconnects),
		counter("presencehub_stream_slow_disconnects_total", "Websocket connections closed because a frame could not be written in time.", &st.slowDisconnects),
		counter("presencehub_stream_frames_total", "Frames written to websocket clients.", &st.frames),
		counter("presencehub_stream_pings_total", "Websocket pings sent (heartbeats of connections that had no data acknowledged since the last one).", &st.pings),
		counter("presencehub_stream_pings_skipped_total", "Heartbeats that sent no ping: data frames were written since the last one and the client's TCP had acknowledged every byte.", &st.pingsSkipped),
		counter("presencehub_stream_resync_snapshots_total", "Fresh snapshots sent to subscribers that fell behind.", &st.resyncs),
		counter("presencehub_stream_bad_messages_total", "Client frames answered with an error frame.", &st.badMessages),
		counter("presencehub_http_rate_limited_total", "Requests answered 429 by a rate limit.", &s.lim.limited),
		counter("presencehub_stream_budget_closes_total", "Websocket connections closed 4008 because more than the output budget waited unread.", &st.budgetCloses),
		counter("presencehub_stream_unauthorized_closes_total", "Websocket connections closed 4001 because their credential was revoked or expired.", &st.authCloses),
		counter("presencehub_stream_revoked_subscriptions_total", "Subscriptions ended with an unauthorized error frame.", &st.revokedSubs),
		counter("presencehub_stream_limit_refusals_total", "Subscribes refused by the subscription, watched-user or output-budget cap.", &st.limitRefusals),
		counter("presencehub_stream_rate_limited_total", "Subscribes refused by the per-connection or per-key rate limit.", &st.rateLimited),
		counter("presencehub_stream_watchlist_names_decoded_total", "Watchlist names decoded from subscribe frames (a subscribe refused by a cap or rate limit is refused before its names are decoded).", &st.namesDecoded),
		counter("presencehub_stream_key_conn_refusals_total", "Upgrades refused (429) because the key had its maximum of open sockets.", &st.keyConnRefusals),
		counter("presencehub_stream_ip_refusals_total", "Upgrades refused (429) because the client address had its maximum of unauthenticated upgrades in progress.", &st.ipRefusals),
	}
}

// counter exposes an atomic counter as a Prometheus counter.
func counter(name, help string, v *atomic.Uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
}
