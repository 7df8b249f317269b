package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const partitionPrefix = "registration_sessions_"

func dayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func partitionName(day time.Time) string { return partitionPrefix + day.Format("20060102") }

// cutoff is the start of the oldest day still kept.
func (h *History) cutoff(now time.Time) time.Time {
	return dayStart(now.Add(-h.opts.Retention))
}

// ensureDay creates the partition of t's day if it is not known to exist.
func (h *History) ensureDay(ctx context.Context, t time.Time) error {
	day := dayStart(t)
	if day.Equal(h.lastDay) {
		return nil // the day of the last change, known to exist
	}
	name := partitionName(day)
	if h.days[name] {
		h.lastDay = day
		return nil
	}
	_, err := h.db.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF registration_sessions FOR VALUES FROM ('%s') TO ('%s')`,
		name, day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339)))
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P07" || pe.Code == "23505") {
		err = nil // another process created it at the same moment
	}
	if err != nil {
		return fmt.Errorf("create partition %s: %w", name, err)
	}
	h.days[name] = true
	h.lastDay = day
	return nil
}

// ensureDays creates the partitions of every day from from to to.
func (h *History) ensureDays(ctx context.Context, from, to time.Time) error {
	for d := dayStart(from); !d.After(to); d = d.AddDate(0, 0, 1) {
		if err := h.ensureDay(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// maintain creates the partitions from the retention's first day to two
// days ahead and drops the partitions of days entirely before it.
func (h *History) maintain(ctx context.Context, now time.Time) error {
	cutoff := h.cutoff(now)
	if err := h.ensureDays(ctx, cutoff, now.AddDate(0, 0, 2)); err != nil {
		return err
	}
	names, err := h.db.historyPartitions(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		day, err := time.Parse("20060102", strings.TrimPrefix(name, partitionPrefix))
		if err != nil || day.AddDate(0, 0, 1).After(cutoff) {
			continue
		}
		if _, err := h.db.pool.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("drop partition %s: %w", name, err)
		}
		delete(h.days, name)
		h.lastDay = time.Time{}
		h.log.Info("registration history: dropped partition past the retention", "partition", name)
	}
	if _, err = h.db.pool.Exec(ctx, `DELETE FROM registration_history_gaps WHERE to_ts < $1`, cutoff); err != nil {
		return err
	}
	_, err = h.db.pool.Exec(ctx, `DELETE FROM registration_history_runs WHERE alive_at < $1`, cutoff)
	return err
}

// historyPartitions returns the names of the daily partitions, oldest first.
func (db *DB) historyPartitions(ctx context.Context) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'registration_sessions'::regclass AND c.relname ~ '^registration_sessions_[0-9]{8}$'`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	sort.Strings(names)
	return names, err
}
