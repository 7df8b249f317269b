package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/presencehub/presencehub/store"
)

// history is the part of *store.DB that answers from the registration
// history; Options.History is nil when the history is off.
type history interface {
	RegistrationHistory(ctx context.Context, accountSID string, q store.HistoryQuery) ([]store.Session, *store.HistoryCursor, error)
	UserHistory(ctx context.Context, accountSID, user string, now time.Time) (store.UserHistory, error)
}

// HistoryOptions tune the registration history endpoints.
type HistoryOptions struct {
	// MaxLimit bounds ?limit= of RegistrationHistory (default 1000); the
	// default page is 100 or MaxLimit, whichever is smaller.
	MaxLimit int
	// FlapSessions: a user is flapping with more than this many sessions,
	// or NAT binding changes, in the last hour (default 6).
	FlapSessions int
}

var errHistoryOff = &apiError{http.StatusNotFound, "registration history is off on this server (--registration-history)"}

// sessionJSON is one session of RegistrationHistory.
type sessionJSON struct {
	Name      string  `json:"name"`
	Contact   *string `json:"contact"`
	Protocol  *string `json:"protocol"`
	Proxy     *string `json:"proxy"`
	StartedAt int64   `json:"started_at"`
	EndedAt   *int64  `json:"ended_at"`
	EndReason *string `json:"end_reason"`
	Refreshes int     `json:"refreshes"`
}

type historyPage struct {
	Sessions   []sessionJSON `json:"sessions"`
	NextCursor *string       `json:"next_cursor"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// parseMillis reads an epoch-milliseconds query parameter ("" gives zero).
func parseMillis(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	// Up to the year 9999: later times cannot be stored.
	if err != nil || n < 0 || n > 253402300799999 {
		return time.Time{}, badRequest("%s must be epoch milliseconds (a whole number from 0), got %q", name, truncate(v, 32))
	}
	return time.UnixMilli(n), nil
}

// historyAccount resolves {AccountSid} for the caller of a history
// endpoint; errHistoryOff when the registration history is off.
func (s *server) historyAccount(r *http.Request) (store.Account, error) {
	a, err := s.account(r.Context(), chi.URLParam(r, "AccountSid"))
	if err == nil && s.hist == nil {
		err = errHistoryOff
	}
	return a, err
}

// handleRegistrationHistory answers GET /v1/Accounts/{AccountSid}/RegistrationHistory.
func (s *server) handleRegistrationHistory() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.historyAccount(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		q, err := s.historyQuery(r.URL.Query())
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		sessions, next, err := s.hist.RegistrationHistory(r.Context(), a.SID, q)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		page := historyPage{Sessions: make([]sessionJSON, len(sessions))}
		for i, ss := range sessions {
			j := sessionJSON{Name: ss.Name, Contact: nullable(ss.Contact), Protocol: nullable(ss.Protocol), Proxy: nullable(ss.Proxy),
				StartedAt: ss.Started.UnixMilli(), EndReason: nullable(ss.EndReason), Refreshes: ss.Refreshes}
			if !ss.Ended.IsZero() {
				ms := ss.Ended.UnixMilli()
				j.EndedAt = &ms
			}
			page.Sessions[i] = j
		}
		if next != nil {
			c := next.String()
			page.NextCursor = &c
		}
		encode(w, http.StatusOK, page)
	})
}

func (s *server) historyQuery(v url.Values) (store.HistoryQuery, error) {
	for name := range v {
		switch name {
		case "user", "since", "until", "limit", "cursor":
		default:
			return store.HistoryQuery{}, badRequest("unknown query parameter %q (want user, since, until, limit, cursor)", truncate(name, 32))
		}
	}
	q := store.HistoryQuery{User: v.Get("user"), Limit: min(100, s.histOpts.MaxLimit)}
	if len(q.User) > maxNameLen {
		return q, badRequest("usernames are at most %d bytes long", maxNameLen)
	}
	var err error
	if q.Since, err = parseMillis(v, "since"); err != nil {
		return q, err
	}
	if q.Until, err = parseMillis(v, "until"); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return q, badRequest("until must not be before since")
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > s.histOpts.MaxLimit {
			return q, badRequest("limit must be a whole number from 1 to %d, got %q", s.histOpts.MaxLimit, truncate(l, 32))
		}
		q.Limit = n
	}
	if c := v.Get("cursor"); c != "" {
		cur, err := store.ParseHistoryCursor(c)
		if err != nil {
			return q, badRequest("malformed cursor (use next_cursor of the previous page)")
		}
		q.After = &cur
	}
	return q, nil
}

// presenceJSON is the answer of GET …/Presence/{Client}.
type presenceJSON struct {
	Name             string `json:"name"`
	RegisteredStatus string `json:"registered_status"`
	LastSeen         *int64 `json:"last_seen"`
	Sessions24h      int    `json:"sessions_24h"`
	Sessions1h       int    `json:"sessions_1h"`
	NATChanges1h     int    `json:"nat_changes_1h"`
	Flapping         bool   `json:"flapping"`
}

// handlePresence answers GET /v1/Accounts/{AccountSid}/Presence/{Client}:
// the current status from the hub and the user's recent history.
func (s *server) handlePresence() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.historyAccount(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		name, err := clientParam(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		var cur struct {
			Status string `json:"registered_status"`
		}
		if err := json.Unmarshal(s.pres.Get(a.SIPRealm, name), &cur); err != nil {
			fail(w, r, s.log, err)
			return
		}
		u, err := s.hist.UserHistory(r.Context(), a.SID, name, time.Now())
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		out := presenceJSON{Name: name, RegisteredStatus: cur.Status, Sessions24h: u.Sessions24h, Sessions1h: u.Sessions1h,
			NATChanges1h: u.NATChanges1h, Flapping: u.Flapping(s.histOpts.FlapSessions)}
		if !u.LastSeen.IsZero() {
			ms := u.LastSeen.UnixMilli()
			out.LastSeen = &ms
		}
		encode(w, http.StatusOK, out)
	})
}
