package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The Explain methods run EXPLAIN (ANALYZE, BUFFERS) of the exact queries
// behind the registration history's reads, with the arguments they would
// get, and return the plan as text ("presencehub-bench history" prints
// them; the README summarises them). They execute the query.

// ExplainRegistrationHistory explains RegistrationHistory(accountSID, q).
func (db *DB) ExplainRegistrationHistory(ctx context.Context, accountSID string, q HistoryQuery) (string, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return "", err
	}
	q.Limit = max(q.Limit, 1)
	query, args := historySQL(sid, q)
	return db.explain(ctx, "", query, args...)
}

// ExplainOnlineSeries explains OnlineSeries' bucket query.
func (db *DB) ExplainOnlineSeries(ctx context.Context, accountSID string, from, now time.Time, step time.Duration) (string, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return "", err
	}
	n := int((now.Sub(from) + step - 1) / step)
	return db.explain(ctx, chartSettings, sqlOnlineBuckets, sid, from, now, step.Seconds(), n)
}

// ExplainSessionCounts explains SessionCounts(accountSID, now).
func (db *DB) ExplainSessionCounts(ctx context.Context, accountSID string, now time.Time) (string, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return "", err
	}
	return db.explain(ctx, "", fmt.Sprintf(sqlSessionCounts, ""), sid, now.Add(-24*time.Hour), now.Add(-time.Hour))
}

// explain runs setup (the settings the query runs with, or "") and then
// EXPLAIN (ANALYZE, BUFFERS) of query in one transaction.
func (db *DB) explain(ctx context.Context, setup, query string, args ...any) (string, error) {
	var b strings.Builder
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if setup != "" {
			if _, err := tx.Exec(ctx, setup); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		return rows.Err()
	})
	return b.String(), mapError(err, "explain", "")
}
