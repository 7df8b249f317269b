package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// chartSettings are the OnlineSeries query's settings, for its transaction
// only. generate_series is estimated at 1,000 rows a session, so the
// planner thinks a few thousand sessions cost millions: it went parallel
// (the workers' start cost more than the query), JIT-compiled the plan
// (4.4 s of LLVM at 1,000,000 sessions, presencehub-bench history) and
// sized the hash aggregation to spill. The real rows are 1–2 a session.
const chartSettings = `SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true), set_config('work_mem', '32MB', true)`

// MaxChartBuckets bounds the buckets of one OnlineSeries.
const MaxChartBuckets = 2000

// Reasons an interval of a chart has no data.
const (
	NoDataBefore = "before" // before the registration history began
	NoDataDown   = "down"   // no history writer was running
	NoDataGap    = "gap"    // the writer dropped changes (registration_history_gaps)
)

// Interval is a stretch of time without data and why.
type Interval struct {
	From, To time.Time
	Reason   string // NoDataBefore, NoDataDown or NoDataGap
}

// OnlineSeries is the number of users of an account registered over time,
// from the registration history.
type OnlineSeries struct {
	From time.Time     // start of the first bucket
	Step time.Duration // bucket width
	Now  time.Time     // the series ends here (inside the last bucket)
	// Users[k] is the number of distinct users with a session running at
	// some time in [From+k·Step, From+(k+1)·Step).
	Users []int
	// NoData lists the intervals within [From, Now] where the history has
	// no data, in time order, not overlapping: time before the history
	// began, time no writer recorded, and recorded gaps.
	NoData []Interval
}

// Covered reports whether bucket k has data for at least part of its time.
func (s OnlineSeries) Covered(k int) bool {
	from := s.From.Add(time.Duration(k) * s.Step)
	to := min2(from.Add(s.Step), s.Now)
	for _, iv := range s.NoData {
		if !iv.From.After(from) && !iv.To.Before(to) {
			return false
		}
	}
	return true
}

func min2(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sqlOnlineBuckets counts, per bucket, the distinct users of account $1
// with a session overlapping it. $2 is the first bucket's start, $3 the
// end of the series, $4 the step in seconds, $5 the number of buckets.
// Only the sessions overlapping [$2, $3) are read: the partitions by
// ended_at prune the days ended before $2, and the account index bounds
// started_at; each session then yields the buckets it spans, and the
// distinct (bucket, user) pairs are counted per bucket (two hash
// aggregations rather than a sort for count(DISTINCT)).
const sqlOnlineBuckets = `SELECT k, count(*) FROM (SELECT DISTINCT k, user_name FROM (
	SELECT s.user_name, generate_series(
		GREATEST(0, floor(extract(epoch FROM s.started_at - $2::timestamptz) / $4::float8)::int),
		LEAST($5::int - 1, GREATEST(
			floor(extract(epoch FROM s.started_at - $2::timestamptz) / $4::float8)::int,
			ceil(extract(epoch FROM LEAST(s.ended_at, $3::timestamptz) - $2::timestamptz) / $4::float8)::int - 1))) AS k
	FROM registration_sessions s
	WHERE s.account_sid = $1 AND s.ended_at > $2::timestamptz AND s.started_at < $3::timestamptz
) b) d GROUP BY k`

// OnlineSeries returns the registered users of accountSID over [from, now]
// in buckets of step (from is the first bucket's start), with the
// intervals that have no data. At most MaxChartBuckets buckets.
func (db *DB) OnlineSeries(ctx context.Context, accountSID string, from, now time.Time, step time.Duration) (OnlineSeries, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return OnlineSeries{}, err
	}
	if step < time.Second || !now.After(from) {
		return OnlineSeries{}, fmt.Errorf("online series: step %v over %v–%v: %w", step, from, now, ErrInvalid)
	}
	n := int((now.Sub(from) + step - 1) / step)
	if n > MaxChartBuckets {
		return OnlineSeries{}, fmt.Errorf("online series: %d buckets (at most %d): %w", n, MaxChartBuckets, ErrInvalid)
	}
	s := OnlineSeries{From: from, Step: step, Now: now, Users: make([]int, n)}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, chartSettings); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sqlOnlineBuckets, sid, from, now, step.Seconds(), n)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k, c int
			if err := rows.Scan(&k, &c); err != nil {
				return err
			}
			if k >= 0 && k < n {
				s.Users[k] = c
			}
		}
		return rows.Err()
	})
	if err != nil {
		return s, mapError(err, "online series", "")
	}
	if s.NoData, err = db.historyNoData(ctx, from, now); err != nil {
		return s, err
	}
	return s, nil
}

// historyNoData returns the intervals within [from, now] without history:
// not covered by any writer run (a run whose heartbeat is recent counts as
// running until now), or inside a recorded gap.
func (db *DB) historyNoData(ctx context.Context, from, now time.Time) ([]Interval, error) {
	type span struct{ from, to time.Time }
	var runs []span
	var first *time.Time
	if err := db.pool.QueryRow(ctx, `SELECT min(started_at) FROM registration_history_runs`).Scan(&first); err != nil {
		return nil, mapError(err, "history runs", "")
	}
	rows, err := db.pool.Query(ctx, `SELECT started_at, CASE WHEN alive_at >= $3 THEN $2 ELSE alive_at END FROM registration_history_runs
		WHERE alive_at >= $1 AND started_at <= $2 ORDER BY started_at`, from, now, now.Add(-historyAliveWithin))
	if err != nil {
		return nil, mapError(err, "history runs", "")
	}
	for rows.Next() {
		var r span
		if err := rows.Scan(&r.from, &r.to); err != nil {
			rows.Close()
			return nil, fmt.Errorf("history runs: %w", err)
		}
		runs = append(runs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mapError(err, "history runs", "")
	}
	var out []Interval
	// The complement of the runs, in [from, now].
	at := from
	for _, r := range runs {
		if r.from.After(at) {
			reason := NoDataDown
			if first == nil || !r.from.After(*first) {
				reason = NoDataBefore
			}
			out = append(out, Interval{From: at, To: min2(r.from, now), Reason: reason})
		}
		if r.to.After(at) {
			at = r.to
		}
	}
	if at.Before(now) {
		reason := NoDataDown
		if first == nil || first.After(at) {
			reason = NoDataBefore
		}
		out = append(out, Interval{From: at, To: now, Reason: reason})
	}
	rows, err = db.pool.Query(ctx, `SELECT GREATEST(from_ts, $1), LEAST(to_ts, $2) FROM registration_history_gaps
		WHERE to_ts >= $1 AND from_ts <= $2 ORDER BY from_ts`, from, now)
	if err != nil {
		return nil, mapError(err, "history gaps", "")
	}
	defer rows.Close()
	for rows.Next() {
		var g Interval
		if err := rows.Scan(&g.From, &g.To); err != nil {
			return nil, fmt.Errorf("history gaps: %w", err)
		}
		g.Reason = NoDataGap
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, mapError(err, "history gaps", "")
	}
	return mergeNoData(out), nil
}

// mergeNoData returns ivs in time order without overlaps: time without a
// run (NoDataBefore, NoDataDown; these never overlap each other) keeps its
// reason, and recorded gaps keep what lies outside it, merged.
func mergeNoData(ivs []Interval) []Interval {
	var down, gaps, out []Interval
	for _, iv := range ivs {
		if iv.Reason == NoDataGap {
			gaps = append(gaps, iv)
		} else {
			down = append(down, iv)
		}
	}
	slices.SortFunc(gaps, func(a, b Interval) int { return a.From.Compare(b.From) })
	for _, g := range gaps {
		// Cut g by every down interval; what is left are pieces of gap.
		pieces := []Interval{g}
		for _, d := range down {
			var next []Interval
			for _, p := range pieces {
				if !d.From.Before(p.To) || !d.To.After(p.From) {
					next = append(next, p)
					continue
				}
				if p.From.Before(d.From) {
					next = append(next, Interval{p.From, d.From, NoDataGap})
				}
				if d.To.Before(p.To) {
					next = append(next, Interval{d.To, p.To, NoDataGap})
				}
			}
			pieces = next
		}
		for _, p := range pieces {
			if n := len(out); n > 0 && !p.From.After(out[n-1].To) {
				if p.To.After(out[n-1].To) {
					out[n-1].To = p.To
				}
				continue
			}
			out = append(out, p)
		}
	}
	out = append(out, down...)
	slices.SortStableFunc(out, func(a, b Interval) int { return a.From.Compare(b.From) })
	return out
}

// SessionCounts are one user's sessions over the last day, as Presence and
// the flapping filter count them.
type SessionCounts struct {
	Sessions24h  int // sessions running at some time in the last 24 hours
	Sessions1h   int // sessions running at some time in the last hour
	NATChanges1h int // sessions started in the last hour whose proxy differs from the session before
}

// Flapping reports whether there were more than n sessions or more than n
// NAT binding changes in the last hour.
func (c SessionCounts) Flapping(n int) bool { return c.Sessions1h > n || c.NATChanges1h > n }

// sqlSessionCounts counts, per user of account $1, the sessions running at
// some time since $2 (24 hours ago), those since $3 (an hour ago), and the
// sessions started since $3 whose proxy differs from the user's session
// before (within the 24 hours). %s is an extra condition on the sessions.
const sqlSessionCounts = `SELECT user_name, count(*), count(*) FILTER (WHERE ended_at >= $3),
	count(*) FILTER (WHERE started_at >= $3 AND prev IS NOT NULL AND prev <> proxy)
	FROM (SELECT user_name, started_at, ended_at, proxy,
		lag(proxy) OVER (PARTITION BY user_name ORDER BY started_at, id) AS prev
		FROM registration_sessions WHERE account_sid = $1 AND ended_at >= $2%s) s
	GROUP BY user_name`

// SessionCounts returns the counts of every user of accountSID with a
// session in the 24 hours before now, in one query (the account page's
// flapping filter).
func (db *DB) SessionCounts(ctx context.Context, accountSID string, now time.Time) (map[string]SessionCounts, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return nil, err
	}
	return db.sessionCounts(ctx, sid, "", now)
}

func (db *DB) sessionCounts(ctx context.Context, sid, user string, now time.Time) (map[string]SessionCounts, error) {
	q, args := fmt.Sprintf(sqlSessionCounts, ""), []any{sid, now.Add(-24 * time.Hour), now.Add(-time.Hour)}
	if user != "" {
		q, args = fmt.Sprintf(sqlSessionCounts, " AND user_name = $4"), append(args, user)
	}
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, mapError(err, "session counts", "")
	}
	defer rows.Close()
	out := map[string]SessionCounts{}
	for rows.Next() {
		var name string
		var c SessionCounts
		if err := rows.Scan(&name, &c.Sessions24h, &c.Sessions1h, &c.NATChanges1h); err != nil {
			return nil, fmt.Errorf("session counts: %w", err)
		}
		out[name] = c
	}
	return out, mapError(rows.Err(), "session counts", "")
}
