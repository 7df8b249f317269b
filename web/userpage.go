package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// History is the part of *store.DB that answers from the registration
// history; Options.History is nil when it is off.
type History interface {
	RegistrationHistory(ctx context.Context, accountSID string, q store.HistoryQuery) ([]store.Session, *store.HistoryCursor, error)
	UserHistory(ctx context.Context, accountSID, user string, now time.Time) (store.UserHistory, error)
	// SessionCounts counts every user's sessions of the last day (the
	// account page's flapping filter), in one query.
	SessionCounts(ctx context.Context, accountSID string, now time.Time) (map[string]store.SessionCounts, error)
	// OnlineSeries is the account's registered users over time (the
	// account page's chart).
	OnlineSeries(ctx context.Context, accountSID string, from, now time.Time, step time.Duration) (store.OnlineSeries, error)
}

// maxTimelineSessions bounds the sessions a user page reads (7 days).
const maxTimelineSessions = 2000

// userView is the model of the user page.
type userView struct {
	Account  store.Account
	Name     string
	Status   string // online, expiring, offline
	Row      UserRow
	HasRow   bool
	History  bool // the registration history is on
	Summary  store.UserHistory
	Flapping bool
	Flap     int
	Day      Timeline
	Week     Timeline
	Sessions []SessionRow
	Capped   bool // more sessions than shown
	Now      time.Time
}

// SessionRow is one session in the user page's table.
type SessionRow struct {
	Started, Ended time.Time // Ended zero: open
	Protocol       string
	Proxy          string
	Contact        string
	EndReason      string
	Refreshes      int
}

// Timeline is a time axis with one bar per session, in SVG units
// (0–TimelineWidth).
type Timeline struct {
	Label string
	Bars  []TimelineBar
	Ticks []TimelineTick
}

// TimelineBar is one session on a timeline.
type TimelineBar struct {
	X, W  float64
	Class string // bar-open, bar-unregistered, bar-expired, bar-replaced
	Title string
}

// TimelineTick is one labelled time on the axis.
type TimelineTick struct {
	X     float64
	Label string
}

// TimelineWidth is the SVG width of a timeline.
const TimelineWidth = 600

// BuildTimeline lays out sessions over [now-span, now]; times without a
// session stay empty. Ticks are every tick, labelled with layout.
func BuildTimeline(label string, sessions []store.Session, now time.Time, span, tick time.Duration, layout string) Timeline {
	start := now.Add(-span)
	x := func(t time.Time) float64 {
		return float64(t.Sub(start)) / float64(span) * TimelineWidth
	}
	tl := Timeline{Label: label}
	for _, s := range sessions {
		end := s.Ended
		class := "bar-" + s.EndReason
		if end.IsZero() {
			end, class = now, "bar-open"
		}
		if !end.After(start) || s.Started.After(now) {
			continue
		}
		from := s.Started
		if from.Before(start) {
			from = start
		}
		b := TimelineBar{X: x(from), W: max(x(end)-x(from), 1), Class: class}
		reason := s.EndReason
		if reason == "" {
			reason = "still registered"
		}
		b.Title = fmt.Sprintf("%s – %s, %s via %s: %s", fmtDateTime(s.Started), endLabel(s.Ended), dash(s.Protocol), dash(s.Proxy), reason)
		tl.Bars = append(tl.Bars, b)
	}
	for t := start.Truncate(tick).Add(tick); t.Before(now); t = t.Add(tick) {
		tl.Ticks = append(tl.Ticks, TimelineTick{X: x(t), Label: t.Format(layout)})
	}
	return tl
}

func endLabel(t time.Time) string {
	if t.IsZero() {
		return "now"
	}
	return fmtDateTime(t)
}

func (s *server) handleUser() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.loadAccount(w, r)
		if !ok {
			return
		}
		name, err := url.PathUnescape(chi.URLParam(r, "name"))
		if err != nil || name == "" || len(name) > 256 {
			s.notFound(w, r)
			return
		}
		now := s.now()
		v := userView{Account: a, Name: name, Status: StatusOffline, Now: now, History: s.hist != nil, Flap: s.flap}
		if a.SIPRealm != "" {
			for _, u := range s.pres.Users(a.SIPRealm) {
				if u.Name == name {
					rows := BuildRows(nil, []hub.UserView{u}, now)
					if len(rows) == 1 {
						v.Row, v.HasRow, v.Status = rows[0], true, rows[0].Status
					}
					break
				}
			}
		}
		if s.hist != nil {
			if v.Summary, err = s.hist.UserHistory(r.Context(), a.SID, name, now); err != nil {
				s.internalError(w, r, err)
				return
			}
			v.Flapping = v.Summary.Flapping(s.flap)
			sessions, next, err := s.hist.RegistrationHistory(r.Context(), a.SID, store.HistoryQuery{
				User: name, Since: now.Add(-7 * 24 * time.Hour), Limit: maxTimelineSessions})
			if err != nil && !errors.Is(err, store.ErrInvalid) {
				s.internalError(w, r, err)
				return
			}
			v.Capped = next != nil
			v.Day = BuildTimeline("Last 24 hours", sessions, now, 24*time.Hour, 3*time.Hour, "15:04")
			v.Week = BuildTimeline("Last 7 days", sessions, now, 7*24*time.Hour, 24*time.Hour, "Mon 02")
			for _, ss := range sessions {
				v.Sessions = append(v.Sessions, SessionRow{Started: ss.Started, Ended: ss.Ended, Protocol: ss.Protocol,
					Proxy: ss.Proxy, Contact: ss.Contact, EndReason: ss.EndReason, Refreshes: ss.Refreshes})
			}
		}
		m := s.meta(r, name+" · "+accountTitle(a))
		s.render(w, r, http.StatusOK, userPage(m, v))
	}
}

func userURL(accountSID, name string) string {
	return "/accounts/" + accountSID + "/users/" + url.PathEscape(name)
}

func fmtSVG(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

func endReasonLabel(r string) string {
	switch r {
	case "":
		return "still registered"
	case store.EndReplaced:
		return "replaced (new binding)"
	}
	return r
}
