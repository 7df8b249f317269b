package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateSession starts a dashboard session acting as p's API key for ttl and
// returns its token. The database keeps the token's SHA-256. The key must
// exist (ErrInvalid) and not be expired (ErrUnauthorized).
func (db *DB) CreateSession(ctx context.Context, p Principal, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", newError(KindInvalid, "", "session lifetime must be positive")
	}
	keySID, err := checkSID(p.KeySID)
	if err != nil {
		return "", newError(KindInvalid, "", "unknown api key")
	}
	token := newToken(sessionPrefix)
	h := tokenHash(token)
	// One statement: insert only if the key exists and is not expired, and
	// sweep expired sessions on the way (logins are rare enough to pay for it).
	var inserted, keyExists bool
	err = db.pool.QueryRow(ctx, `WITH sweep AS (
			DELETE FROM sessions WHERE expires_at < now()
		), key AS (
			SELECT api_key_sid, expires_at FROM api_keys WHERE api_key_sid = $2
		), ins AS (
			INSERT INTO sessions (token_hash, api_key_sid, expires_at)
			SELECT $1, api_key_sid, now() + $3::interval FROM key
			WHERE expires_at IS NULL OR expires_at > now()
			RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM ins), EXISTS (SELECT 1 FROM key)`,
		h[:], keySID, ttl).Scan(&inserted, &keyExists)
	switch {
	case err != nil:
		return "", mapError(err, "create session", "")
	case !keyExists:
		return "", newError(KindInvalid, "", "unknown api key")
	case !inserted:
		return "", newError(KindUnauthorized, "", "api key expired")
	}
	return token, nil
}

// Session returns the principal of a dashboard session: its key's scope,
// expiring at the earlier of the session's and the key's expiry. Unknown or
// expired sessions, and sessions whose key was deleted or has expired, give
// ErrUnauthorized. Results are cached briefly, like Authenticate's.
func (db *DB) Session(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, newError(KindUnauthorized, "", "missing session")
	}
	h := tokenHash(token)
	now := time.Now()
	e, ok := db.sessions.get(h, now)
	if !ok {
		gen := db.sessions.generation()
		var p Principal
		var sessionExpires time.Time
		err := db.pool.QueryRow(ctx, `SELECT k.api_key_sid::text,
				CASE WHEN k.account_sid IS NOT NULL THEN 'account'
				     WHEN k.service_provider_sid IS NOT NULL THEN 'service_provider'
				     ELSE 'admin' END,
				coalesce(coalesce(k.service_provider_sid, a.service_provider_sid)::text, ''),
				coalesce(k.account_sid::text, ''),
				k.expires_at, s.expires_at
			FROM sessions s
			JOIN api_keys k ON k.api_key_sid = s.api_key_sid
			LEFT JOIN accounts a ON a.account_sid = k.account_sid
			WHERE s.token_hash = $1`, h[:]).
			Scan(&p.KeySID, &p.Scope, &p.ServiceProviderSID, &p.AccountSID, &p.ExpiresAt, &sessionExpires)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			e = authEntry{}
		case err != nil:
			return Principal{}, fmt.Errorf("session: %w", err)
		default:
			if p.ExpiresAt == nil || sessionExpires.Before(*p.ExpiresAt) {
				p.ExpiresAt = &sessionExpires
			}
			e = authEntry{p: p, ok: true}
		}
		db.sessions.put(h, e, gen, now)
	}
	return db.admit(e, now, "session")
}

// DeleteSession ends a dashboard session. Ending an unknown or already
// ended session is not an error, so logging out twice is harmless.
func (db *DB) DeleteSession(ctx context.Context, token string) error {
	h := tokenHash(token)
	_, err := db.pool.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1`, h[:])
	db.sessions.remove(h)
	db.signalAuthChanged() // its stream connections end now, not at the notification
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
