package api

import (
	"context"
	"net/http"
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
		if err := s.ping(ctx); err != nil {
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
