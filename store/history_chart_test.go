package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// chartDB is a migrated database with one account (realm example.com) and
// another (other.com), and the daily partitions of the last 9 days.
func chartDB(t *testing.T, now time.Time) (*DB, Account, Account) {
	t.Helper()
	db, _ := openTestDB(t)
	sp := mustSP(t, db, "sp")
	acct := mustAccount(t, db, sp, "acct", "example.com")
	other := mustAccount(t, db, sp, "other", "other.com")
	h := NewHistory(db, HistoryOptions{Logger: quietLog()})
	if err := h.ensureDays(context.Background(), now.Add(-9*24*time.Hour), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return db, acct, other
}

// seedSession inserts one session; a zero end is an open session.
var seedSeq int64

func seedSession(t *testing.T, db *DB, a Account, user, proxy string, start, end time.Time) {
	t.Helper()
	seedSeq++
	var ended any = "infinity"
	var reason any
	if !end.IsZero() {
		ended, reason = end, EndExpired
	}
	sqlExec(t, db, `INSERT INTO registration_sessions (realm, account_sid, user_name, proxy, started_at, ended_at, end_reason,
		start_epoch, start_seq, last_epoch, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, 'e', $8, 'e', $8)`,
		a.SIPRealm, a.SID, user, proxy, start, ended, reason, seedSeq)
}

func seedRun(t *testing.T, db *DB, from, alive time.Time) {
	t.Helper()
	sqlExec(t, db, `INSERT INTO registration_history_runs (started_at, alive_at) VALUES ($1, $2)`, from, alive)
}

// TestOnlineSeriesBuckets: each bucket counts the distinct users with a
// session overlapping it.
func TestOnlineSeriesBuckets(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 30, 0, time.UTC) // 30 s into the last bucket
	from := now.Add(-5*time.Minute - 30*time.Second)      // 6 buckets of a minute: 11:55 … 12:00
	m := func(min, sec int) time.Time {
		return from.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second)
	}
	type sess struct {
		user       string
		start, end time.Time // end zero: open
	}
	tests := []struct {
		name     string
		sessions []sess
		other    []sess // sessions of the other account: never counted
		want     []int
	}{
		{"none", nil, nil, []int{0, 0, 0, 0, 0, 0}},
		{"inside one bucket", []sess{{"a", m(1, 10), m(1, 50)}}, nil, []int{0, 1, 0, 0, 0, 0}},
		{"crossing bucket edges", []sess{{"a", m(1, 30), m(3, 30)}}, nil, []int{0, 1, 1, 1, 0, 0}},
		{"ending on an edge is not in the next bucket", []sess{{"a", m(1, 30), m(3, 0)}}, nil, []int{0, 1, 1, 0, 0, 0}},
		{"starting on an edge", []sess{{"a", m(2, 0), m(2, 59)}}, nil, []int{0, 0, 1, 0, 0, 0}},
		{"open session runs to now", []sess{{"a", m(3, 15), time.Time{}}}, nil, []int{0, 0, 0, 1, 1, 1}},
		{"started before the chart", []sess{{"a", from.Add(-time.Hour), m(0, 20)}}, nil, []int{1, 0, 0, 0, 0, 0}},
		{"ended before the chart", []sess{{"a", from.Add(-time.Hour), from.Add(-time.Minute)}}, nil, []int{0, 0, 0, 0, 0, 0}},
		{"ended exactly at the chart's start", []sess{{"a", from.Add(-time.Hour), from}}, nil, []int{0, 0, 0, 0, 0, 0}},
		{"a replaced session and its successor count once", []sess{{"a", m(0, 10), m(1, 20)}, {"a", m(1, 20), time.Time{}}}, nil, []int{1, 1, 1, 1, 1, 1}},
		{"two users", []sess{{"a", m(0, 0), m(2, 30)}, {"b", m(2, 10), m(4, 1)}}, nil, []int{1, 1, 2, 1, 1, 0}},
		{"zero-length session", []sess{{"a", m(4, 10), m(4, 10)}}, nil, []int{0, 0, 0, 0, 1, 0}},
		{"other accounts' sessions", []sess{{"a", m(0, 0), m(0, 30)}}, []sess{{"a", m(0, 0), time.Time{}}, {"z", m(2, 0), time.Time{}}}, []int{1, 0, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, acct, other := chartDB(t, now)
			for _, s := range tc.sessions {
				seedSession(t, db, acct, s.user, "", s.start, s.end)
			}
			for _, s := range tc.other {
				seedSession(t, db, other, s.user, "", s.start, s.end)
			}
			got, err := db.OnlineSeries(context.Background(), acct.SID, from, now, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Users, tc.want) {
				t.Errorf("users per bucket = %v, want %v", got.Users, tc.want)
			}
		})
	}
}

// TestOnlineSeriesNoData: time before the first run, between runs and in
// recorded gaps has no data; a run with a recent heartbeat covers up to now.
func TestOnlineSeriesNoData(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	from := now.Add(-time.Hour)
	at := func(min int) time.Time { return from.Add(time.Duration(min) * time.Minute) }
	type run struct{ from, alive time.Time }
	type gap struct{ from, to time.Time }
	tests := []struct {
		name string
		runs []run
		gaps []gap
		want []Interval
	}{
		{"no history at all", nil, nil, []Interval{{at(0), now, NoDataBefore}}},
		{"history began 3 minutes ago", []run{{at(57), now}}, nil, []Interval{{at(0), at(57), NoDataBefore}}},
		{"began before the chart, alive", []run{{from.Add(-48 * time.Hour), now.Add(-20 * time.Second)}}, nil, nil},
		{"stopped 10 minutes ago", []run{{from.Add(-48 * time.Hour), at(50)}}, nil, []Interval{{at(50), now, NoDataDown}}},
		{"down between two runs", []run{{at(-10), at(20)}, {at(30), now}}, nil, []Interval{{at(20), at(30), NoDataDown}}},
		{"before, then down", []run{{at(10), at(20)}, {at(30), now}}, nil,
			[]Interval{{at(0), at(10), NoDataBefore}, {at(20), at(30), NoDataDown}}},
		{"a recorded gap", []run{{at(-10), now}}, []gap{{at(40), at(45)}}, []Interval{{at(40), at(45), NoDataGap}}},
		{"a gap before the chart", []run{{at(-10), now}}, []gap{{at(-5), at(-2)}}, nil},
		{"a gap across the chart's start", []run{{at(-10), now}}, []gap{{at(-5), at(2)}}, []Interval{{at(0), at(2), NoDataGap}}},
		{"a gap overlapping down time", []run{{at(-10), at(20)}, {at(30), now}}, []gap{{at(15), at(25)}},
			[]Interval{{at(15), at(20), NoDataGap}, {at(20), at(30), NoDataDown}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, acct, _ := chartDB(t, now)
			for _, r := range tc.runs {
				seedRun(t, db, r.from, r.alive)
			}
			for _, g := range tc.gaps {
				sqlExec(t, db, `INSERT INTO registration_history_gaps (from_ts, to_ts, dropped) VALUES ($1, $2, 1)`, g.from, g.to)
			}
			got, err := db.OnlineSeries(context.Background(), acct.SID, from, now, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.NoData) != fmt.Sprint(tc.want) {
				t.Errorf("no data = %v\nwant      %v", got.NoData, tc.want)
			}
			for k := range got.Users {
				b := from.Add(time.Duration(k) * time.Minute)
				inside := false
				for _, iv := range tc.want {
					inside = inside || (!iv.From.After(b) && !iv.To.Before(b.Add(time.Minute)))
				}
				if got.Covered(k) == inside {
					t.Errorf("bucket %d (%s): Covered = %v, but it lies in no-data %v", k, b.Format("15:04"), got.Covered(k), inside)
				}
			}
		})
	}
}

func TestOnlineSeriesBounds(t *testing.T) {
	now := time.Now()
	db, acct, _ := chartDB(t, now)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		from      time.Time
		step      time.Duration
		wantError bool
	}{
		{"7 days by the hour", now.Add(-7 * 24 * time.Hour), time.Hour, false},
		{"too many buckets", now.Add(-7 * 24 * time.Hour), time.Minute, true},
		{"step below a second", now.Add(-time.Minute), time.Millisecond, true},
		{"from after now", now.Add(time.Minute), time.Minute, true},
	} {
		_, err := db.OnlineSeries(ctx, acct.SID, tc.from, now, tc.step)
		if (err != nil) != tc.wantError {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.wantError)
		}
	}
	if _, err := db.OnlineSeries(ctx, "not-a-sid", now.Add(-time.Hour), now, time.Minute); err == nil {
		t.Errorf("a malformed sid: no error")
	}
}

// TestSessionCountsMatchUserHistory: the account-wide counts (one query,
// the flapping filter) are the per-user counts of the Presence endpoint.
func TestSessionCountsMatchUserHistory(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	db, acct, other := chartDB(t, now)
	ctx := context.Background()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	// flappy: 8 short sessions in the last hour, same proxy.
	for i := range 8 {
		seedSession(t, db, acct, "flappy", "sip:192.0.2.1:1", ago(time.Duration(50-5*i)*time.Minute), ago(time.Duration(48-5*i)*time.Minute))
	}
	// nat: 8 sessions in the last hour, each from a new NAT port, and one
	// earlier in the day.
	seedSession(t, db, acct, "nat", "sip:192.0.2.2:0", ago(10*time.Hour), ago(59*time.Minute+59*time.Second))
	for i := range 8 {
		seedSession(t, db, acct, "nat", fmt.Sprintf("sip:192.0.2.2:%d", i+1), ago(time.Duration(40-4*i)*time.Minute), ago(time.Duration(38-4*i)*time.Minute))
	}
	// steady: one open session since yesterday, one that ended 20 hours ago.
	seedSession(t, db, acct, "steady", "sip:192.0.2.3:1", ago(30*time.Hour), ago(20*time.Hour))
	seedSession(t, db, acct, "steady", "sip:192.0.2.3:1", ago(20*time.Hour), time.Time{})
	// old: only sessions before the last 24 hours.
	seedSession(t, db, acct, "old", "sip:192.0.2.4:1", ago(50*time.Hour), ago(25*time.Hour))
	// another account's flapper is not this account's.
	for i := range 9 {
		seedSession(t, db, other, "flappy", "sip:192.0.2.9:1", ago(time.Duration(50-5*i)*time.Minute), ago(time.Duration(49-5*i)*time.Minute))
	}

	all, err := db.SessionCounts(ctx, acct.SID, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]SessionCounts{
		"flappy": {Sessions24h: 8, Sessions1h: 8, NATChanges1h: 0},
		"nat":    {Sessions24h: 9, Sessions1h: 9, NATChanges1h: 8},
		"steady": {Sessions24h: 2, Sessions1h: 1, NATChanges1h: 0},
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("SessionCounts = %v\nwant %v", all, want)
	}
	for _, tc := range []struct {
		user     string
		flapping bool
	}{{"flappy", true}, {"nat", true}, {"steady", false}, {"old", false}, {"nobody", false}} {
		u, err := db.UserHistory(ctx, acct.SID, tc.user, now)
		if err != nil {
			t.Fatal(err)
		}
		c := all[tc.user]
		if u.Sessions24h != c.Sessions24h || u.Sessions1h != c.Sessions1h || u.NATChanges1h != c.NATChanges1h {
			t.Errorf("%s: UserHistory counts %d/%d/%d, SessionCounts %+v: they must agree", tc.user, u.Sessions24h, u.Sessions1h, u.NATChanges1h, c)
		}
		if u.Flapping(6) != tc.flapping || c.Flapping(6) != tc.flapping {
			t.Errorf("%s: flapping (UserHistory %v, SessionCounts %v), want %v", tc.user, u.Flapping(6), c.Flapping(6), tc.flapping)
		}
	}
}

// TestHistoryRuns: the writer records its run after the first
// reconciliation and extends it with every heartbeat.
func TestHistoryRuns(t *testing.T) {
	db, _ := openTestDB(t)
	clk := &testClock{t: time.Now().Truncate(time.Millisecond)}
	start := clk.Now()
	rig := startHistory(t, db, clk, HistoryOptions{Linger: time.Millisecond, Heartbeat: time.Second})
	var n int
	var from, alive time.Time
	read := func() {
		if err := db.pool.QueryRow(context.Background(), `SELECT count(*), min(started_at), max(alive_at) FROM registration_history_runs`).Scan(&n, &from, &alive); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "a run row", func() bool { read(); return n == 1 })
	if !from.Equal(start) {
		t.Errorf("run starts at %v, want the first reconciliation's time %v", from, start)
	}
	clk.Add(10 * time.Second)
	eventually(t, "the heartbeat to extend the run", func() bool { read(); return alive.Equal(start.Add(10 * time.Second)) })
	rig.stop()
	if read(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

// TestHistoryExplain: the plans of the history's reads come back as text
// (presencehub-bench history prints them).
func TestHistoryExplain(t *testing.T) {
	now := time.Now()
	db, acct, _ := chartDB(t, now)
	seedSession(t, db, acct, "a", "", now.Add(-time.Hour), now.Add(-time.Minute))
	ctx := context.Background()
	for name, f := range map[string]func() (string, error){
		"RegistrationHistory": func() (string, error) {
			return db.ExplainRegistrationHistory(ctx, acct.SID, HistoryQuery{User: "a", Limit: 10})
		},
		"OnlineSeries": func() (string, error) {
			return db.ExplainOnlineSeries(ctx, acct.SID, now.Add(-time.Hour), now, time.Minute)
		},
		"SessionCounts": func() (string, error) { return db.ExplainSessionCounts(ctx, acct.SID, now) },
	} {
		plan, err := f()
		if err != nil || !strings.Contains(plan, "Execution Time") || !strings.Contains(plan, "registration_sessions") {
			t.Errorf("%s: plan %q, err %v", name, plan, err)
		}
	}
}
