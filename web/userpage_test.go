package web

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
)

// fakeHistory answers from fixed sessions, newest first.
type fakeHistory struct {
	sessions map[string][]store.Session // by user
	summary  map[string]store.UserHistory
	counts   map[string]store.SessionCounts
	// series answers OnlineSeries: called with the range asked for, it
	// fills in users and no-data intervals.
	series func(from, now time.Time, step time.Duration) store.OnlineSeries
	mu     sync.Mutex
	asked  []time.Duration // the steps OnlineSeries was asked for
}

func (f *fakeHistory) SessionCounts(context.Context, string, time.Time) (map[string]store.SessionCounts, error) {
	return f.counts, nil
}

func (f *fakeHistory) OnlineSeries(_ context.Context, _ string, from, now time.Time, step time.Duration) (store.OnlineSeries, error) {
	f.mu.Lock()
	f.asked = append(f.asked, step)
	f.mu.Unlock()
	if f.series != nil {
		return f.series(from, now, step), nil
	}
	return store.OnlineSeries{From: from, Now: now, Step: step, Users: make([]int, int((now.Sub(from)+step-1)/step))}, nil
}

func (f *fakeHistory) RegistrationHistory(_ context.Context, _ string, q store.HistoryQuery) ([]store.Session, *store.HistoryCursor, error) {
	return f.sessions[q.User], nil, nil
}

func (f *fakeHistory) UserHistory(_ context.Context, _, user string, _ time.Time) (store.UserHistory, error) {
	return f.summary[user], nil
}

var _ History = (*store.DB)(nil)

func TestUserPage(t *testing.T) {
	hist := &fakeHistory{
		sessions: map[string][]store.Session{
			"alice": {
				{Name: "alice", Protocol: "udp", Proxy: "sip:203.0.113.1:5060", Started: t0.Add(-time.Hour)},
				{Name: "alice", Protocol: "udp", Proxy: "sip:203.0.113.1:4000", Started: t0.Add(-3 * time.Hour), Ended: t0.Add(-time.Hour), EndReason: store.EndReplaced},
				{Name: "alice", Protocol: "udp", Proxy: "sip:203.0.113.1:3000", Started: t0.Add(-50 * time.Hour), Ended: t0.Add(-49 * time.Hour), EndReason: store.EndExpired},
			},
		},
		summary: map[string]store.UserHistory{
			"alice": {LastSeen: t0.Add(-time.Minute), Open: true, Sessions24h: 2, Sessions1h: 8, NATChanges1h: 7},
			"zoe":   {LastSeen: t0.Add(-2 * time.Hour), Sessions24h: 1},
		},
	}
	e := newEnv(t, func(o *Options) { o.History = hist })
	tests := []struct {
		name, user      string
		status          string
		flapping        bool
		bars24h, bars7d int
		rows            int
		lastSeen        string
	}{
		{"registered and flapping", "alice", StatusOnline, true, 2, 3, 3, fmtDateTime(t0.Add(-time.Minute))},
		{"gone", "zoe", StatusOffline, false, 0, 0, 0, fmtDateTime(t0.Add(-2 * time.Hour))},
		{"never seen", "nobody", StatusOffline, false, 0, 0, 0, "never"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do(http.MethodGet, "/accounts/"+acctA+"/users/"+tc.user, nil, e.session("acct-key"))
			if w.Code != 200 {
				t.Fatalf("status %d, want 200: %s", w.Code, w.Body)
			}
			doc := parseHTML(t, w.Body.String())
			if got := attrVal(byTestID(doc, "user-status")[0], "data-status"); got != tc.status {
				t.Errorf("status %q, want %q", got, tc.status)
			}
			if got := len(byTestID(doc, "user-flapping")) == 1; got != tc.flapping {
				t.Errorf("flapping badge shown %v, want %v", got, tc.flapping)
			}
			day, week := byTestID(doc, "timeline-day")[0], byTestID(doc, "timeline-week")[0]
			if got := len(byTestID(day, "timeline-bar")); got != tc.bars24h {
				t.Errorf("24h timeline: %d bars, want %d", got, tc.bars24h)
			}
			if got := len(byTestID(week, "timeline-bar")); got != tc.bars7d {
				t.Errorf("7d timeline: %d bars, want %d", got, tc.bars7d)
			}
			if got := len(byTestID(doc, "session-row")); got != tc.rows {
				t.Errorf("%d session rows, want %d", got, tc.rows)
			}
			if got := strings.TrimSpace(textOf(byTestID(doc, "user-last-seen")[0])); got != tc.lastSeen {
				t.Errorf("last seen %q, want %q", got, tc.lastSeen)
			}
		})
	}
	// Authorization is the account page's.
	if w := e.do(http.MethodGet, "/accounts/"+acctB+"/users/alice", nil, e.session("acct-key")); w.Code != 403 {
		t.Errorf("another account's user: %d, want 403", w.Code)
	}
	if w := e.do(http.MethodGet, "/accounts/"+acctA+"/users/"+strings.Repeat("x", 300), nil, e.session("acct-key")); w.Code != 404 {
		t.Errorf("too long a name: %d, want 404", w.Code)
	}
	// History off: the page still answers, without timelines.
	off := newEnv(t)
	w := off.do(http.MethodGet, "/accounts/"+acctA+"/users/alice", nil, off.session("acct-key"))
	if w.Code != 200 || len(byTestID(parseHTML(t, w.Body.String()), "timeline-day")) != 0 {
		t.Errorf("history off: %d, want 200 and no timeline", w.Code)
	}
}

func TestBuildTimeline(t *testing.T) {
	now := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	sessions := []store.Session{
		{Started: now.Add(-time.Hour)}, // open: runs to now
		{Started: now.Add(-30 * time.Hour), Ended: now.Add(-20 * time.Hour), EndReason: store.EndExpired},      // clipped at the window's start
		{Started: now.Add(-50 * time.Hour), Ended: now.Add(-48 * time.Hour), EndReason: store.EndUnregistered}, // outside 24h
	}
	tl := BuildTimeline("day", sessions, now, 24*time.Hour, 6*time.Hour, "15:04")
	want := []TimelineBar{
		{X: 575, W: 25, Class: "bar-open"},
		{X: 0, W: 100, Class: "bar-expired"},
	}
	if len(tl.Bars) != len(want) {
		t.Fatalf("got %d bars %+v, want %d", len(tl.Bars), tl.Bars, len(want))
	}
	for i, w := range want {
		g := tl.Bars[i]
		if g.X != w.X || g.W != w.W || g.Class != w.Class {
			t.Errorf("bar %d: got x %.1f w %.1f %s, want x %.1f w %.1f %s", i, g.X, g.W, g.Class, w.X, w.W, w.Class)
		}
	}
	var labels []string
	for _, tk := range tl.Ticks {
		labels = append(labels, tk.Label)
	}
	if got := strings.Join(labels, " "); got != "18:00 00:00 06:00" {
		t.Errorf("ticks %q, want 18:00 00:00 06:00", got)
	}
}
