package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session is one registration session: from registered to unregistered,
// expired or replaced. Ended is zero and EndReason "" while it is open.
type Session struct {
	ID          int64
	Name        string
	Contact     string
	Protocol    string
	Proxy       string
	Started     time.Time
	Ended       time.Time
	EndReason   string
	Refreshes   int
	LastRefresh time.Time
}

// HistoryQuery selects sessions of one account, newest first.
type HistoryQuery struct {
	User  string    // "" for every user
	Since time.Time // sessions still running at or after Since (zero: no bound)
	Until time.Time // sessions started at or before Until (zero: no bound)
	Limit int       // at most this many (1 or more)
	// After continues a listing: only sessions older than this cursor.
	After *HistoryCursor
}

// HistoryCursor is the position after the last session of a page.
type HistoryCursor struct {
	Started time.Time
	ID      int64
}

// String encodes the cursor for a URL.
func (c HistoryCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.Started.UnixMicro(), 10) + "." + strconv.FormatInt(c.ID, 10)))
}

// ParseHistoryCursor decodes what HistoryCursor.String made; any other
// input is ErrInvalid.
func ParseHistoryCursor(s string) (HistoryCursor, error) {
	bad := fmt.Errorf("malformed cursor: %w", ErrInvalid)
	if len(s) > 64 {
		return HistoryCursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return HistoryCursor{}, bad
	}
	us, id, ok := strings.Cut(string(b), ".")
	if !ok {
		return HistoryCursor{}, bad
	}
	u, err1 := strconv.ParseInt(us, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if err1 != nil || err2 != nil || n < 0 || u < 0 {
		return HistoryCursor{}, bad
	}
	return HistoryCursor{Started: time.UnixMicro(u), ID: n}, nil
}

// RegistrationHistory returns up to q.Limit sessions of accountSID, newest
// (by start) first, and the cursor of the next page (nil on the last).
func (db *DB) RegistrationHistory(ctx context.Context, accountSID string, q HistoryQuery) ([]Session, *HistoryCursor, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return nil, nil, err
	}
	if q.Limit < 1 {
		q.Limit = 1
	}
	query, args := historySQL(sid, q)
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, nil, mapError(err, "registration history", "")
	}
	defer rows.Close()
	out := make([]Session, 0, min(q.Limit, 256))
	for rows.Next() {
		var s Session
		var ended, last *time.Time
		if err := rows.Scan(&s.ID, &s.Name, &s.Contact, &s.Protocol, &s.Proxy, &s.Started, &ended, &s.EndReason, &s.Refreshes, &last); err != nil {
			return nil, nil, fmt.Errorf("registration history: %w", err)
		}
		if ended != nil {
			s.Ended = *ended
		}
		if last != nil {
			s.LastRefresh = *last
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, mapError(err, "registration history", "")
	}
	if len(out) <= q.Limit {
		return out, nil, nil
	}
	out = out[:q.Limit]
	last := out[len(out)-1]
	return out, &HistoryCursor{Started: last.Started, ID: last.ID}, nil
}

// historySQL is RegistrationHistory's query: one more row than q.Limit,
// newest first.
func historySQL(sid string, q HistoryQuery) (string, []any) {
	var sb strings.Builder
	sb.WriteString(`SELECT id, user_name, contact, protocol, proxy, started_at,
		CASE WHEN ended_at = 'infinity' THEN NULL ELSE ended_at END, COALESCE(end_reason, ''), refreshes, last_refresh
		FROM registration_sessions WHERE account_sid = $1`)
	args := []any{sid}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.User != "" {
		sb.WriteString(" AND user_name = " + arg(q.User))
	}
	if !q.Since.IsZero() {
		sb.WriteString(" AND ended_at >= " + arg(q.Since))
	}
	if !q.Until.IsZero() {
		sb.WriteString(" AND started_at <= " + arg(q.Until))
	}
	if q.After != nil {
		sb.WriteString(" AND (started_at, id) < (" + arg(q.After.Started) + "::timestamptz, " + arg(q.After.ID) + "::bigint)")
	}
	sb.WriteString(" ORDER BY started_at DESC, id DESC LIMIT " + arg(q.Limit+1))
	return sb.String(), args
}

// UserHistory sums up one user's sessions as of now.
type UserHistory struct {
	// LastSeen is the end of the last ended session, or the last
	// registration or refresh of an open one; zero if never seen.
	LastSeen    time.Time
	Open        bool // the newest session is still open
	Sessions24h int  // sessions running at some time in the last 24 hours
	Sessions1h  int  // sessions running at some time in the last hour
	// NATChanges1h counts the sessions of the last hour whose proxy (NAT
	// address) differs from the session before it.
	NATChanges1h int
}

// Flapping reports whether the user had more than n sessions or more than
// n NAT binding changes in the last hour.
func (u UserHistory) Flapping(n int) bool {
	return SessionCounts{u.Sessions24h, u.Sessions1h, u.NATChanges1h}.Flapping(n)
}

// UserHistory returns the summary of user in accountSID at now.
func (db *DB) UserHistory(ctx context.Context, accountSID, user string, now time.Time) (UserHistory, error) {
	sid, err := checkSID(accountSID)
	if err != nil {
		return UserHistory{}, err
	}
	var u UserHistory
	var started time.Time
	var ended, last *time.Time
	err = db.pool.QueryRow(ctx, `SELECT started_at, CASE WHEN ended_at = 'infinity' THEN NULL ELSE ended_at END, last_refresh FROM registration_sessions
		WHERE account_sid = $1 AND user_name = $2 ORDER BY started_at DESC, id DESC LIMIT 1`, sid, user).Scan(&started, &ended, &last)
	switch {
	case err == nil:
		u.Open = ended == nil
		switch {
		case !u.Open:
			u.LastSeen = *ended
		case last != nil && last.After(started):
			u.LastSeen = *last
		default:
			u.LastSeen = started
		}
	case errors.Is(err, pgx.ErrNoRows):
		return u, nil
	default:
		return u, mapError(err, "user history", "")
	}
	counts, err := db.sessionCounts(ctx, sid, user, now)
	if err != nil {
		return u, err
	}
	c := counts[user]
	u.Sessions24h, u.Sessions1h, u.NATChanges1h = c.Sessions24h, c.Sessions1h, c.NATChanges1h
	return u, nil
}
