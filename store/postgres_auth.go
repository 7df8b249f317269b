package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Token prefixes make a leaked secret recognisable (secret scanners, logs)
// and tell API keys and dashboard sessions apart at a glance.
const (
	apiKeyPrefix  = "ph_"
	sessionPrefix = "phs_"
)

// keySelect reads API keys with their derived scope. An account key's
// provider comes from its account by a join, so it cannot go stale when the
// account moves to another provider.
const keySelect = `SELECT k.api_key_sid::text,
	CASE WHEN k.account_sid IS NOT NULL THEN 'account'
	     WHEN k.service_provider_sid IS NOT NULL THEN 'service_provider'
	     ELSE 'admin' END,
	coalesce(coalesce(k.service_provider_sid, a.service_provider_sid)::text, ''),
	coalesce(k.account_sid::text, ''),
	k.expires_at, k.last_used, k.created_at, coalesce(k.parent_key_sid::text, '')
FROM api_keys k LEFT JOIN accounts a ON a.account_sid = k.account_sid`

func scanAPIKey(r pgx.Row) (APIKey, error) {
	var k APIKey
	err := r.Scan(&k.SID, &k.Scope, &k.ServiceProviderSID, &k.AccountSID, &k.ExpiresAt, &k.LastUsed, &k.CreatedAt, &k.ParentSID)
	return k, err
}

// CreateAPIKey stores a new key and returns it with its token. The token is
// returned only here: the database keeps its SHA-256. The scope follows from
// the sids set: AccountSID → account (ServiceProviderSID, if given, must be
// the account's), ServiceProviderSID → service_provider, neither → admin.
// The sids must exist and ExpiresAt, if set, must be in the future
// (ErrInvalid).
func (db *DB) CreateAPIKey(ctx context.Context, k APIKey) (APIKey, string, error) {
	var err error
	if k.SID, err = sidOrNew(k.SID); err != nil {
		return APIKey{}, "", err
	}
	if k.AccountSID, err = checkOptionalSID(k.AccountSID); err != nil {
		return APIKey{}, "", newError(KindInvalid, "account_sid", "unknown account")
	}
	if k.ServiceProviderSID, err = checkOptionalSID(k.ServiceProviderSID); err != nil {
		return APIKey{}, "", newError(KindInvalid, "service_provider_sid", "unknown service provider")
	}
	if k.ParentSID, err = checkOptionalSID(k.ParentSID); err != nil {
		return APIKey{}, "", newError(KindInvalid, "parent_key_sid", "unknown parent key")
	}
	if k.ExpiresAt != nil && !k.ExpiresAt.After(time.Now()) {
		return APIKey{}, "", newError(KindInvalid, "expires_at", "expires_at is in the past")
	}
	spColumn := k.ServiceProviderSID // what the row stores
	switch {
	case k.AccountSID != "":
		a, err := db.Account(ctx, k.AccountSID)
		if errors.Is(err, ErrNotFound) {
			return APIKey{}, "", newError(KindInvalid, "account_sid", "unknown account")
		} else if err != nil {
			return APIKey{}, "", err
		}
		if k.ServiceProviderSID != "" && k.ServiceProviderSID != a.ServiceProviderSID {
			return APIKey{}, "", newError(KindInvalid, "account_sid", "the account does not belong to that service provider")
		}
		k.Scope, k.ServiceProviderSID, spColumn = ScopeAccount, a.ServiceProviderSID, ""
	case k.ServiceProviderSID != "":
		k.Scope = ScopeServiceProvider
	default:
		k.Scope = ScopeAdmin
	}
	token := newToken(apiKeyPrefix)
	h := tokenHash(token)
	// The account (or the parent key) may vanish between the check above
	// and this insert; the foreign key then reports it.
	err = db.pool.QueryRow(ctx, `INSERT INTO api_keys (api_key_sid, token_hash, service_provider_sid, account_sid, expires_at, parent_key_sid)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`,
		k.SID, h[:], nullIfEmpty(spColumn), nullIfEmpty(k.AccountSID), k.ExpiresAt, nullIfEmpty(k.ParentSID)).Scan(&k.CreatedAt)
	if err != nil {
		return APIKey{}, "", mapError(err, "create api key", "")
	}
	k.LastUsed = nil
	return k, token, nil
}

// APIKey returns the key with the given sid (never its token).
func (db *DB) APIKey(ctx context.Context, sid string) (APIKey, error) {
	sid, err := checkSID(sid)
	if err != nil {
		return APIKey{}, err
	}
	k, err := scanAPIKey(db.pool.QueryRow(ctx, keySelect+` WHERE k.api_key_sid = $1`, sid))
	if err != nil {
		return APIKey{}, mapError(err, "get api key", "api key "+sid)
	}
	return k, nil
}

// APIKeys returns the keys p may see, oldest first: admin sees all, a
// service-provider principal the keys of its provider and of its provider's
// accounts, an account principal the keys of its account.
func (db *DB) APIKeys(ctx context.Context, p Principal) ([]APIKey, error) {
	var where string
	var arg any
	switch p.Scope {
	case ScopeAdmin:
		where = `WHERE $1::uuid IS NULL`
	case ScopeServiceProvider:
		where, arg = `WHERE coalesce(k.service_provider_sid, a.service_provider_sid) = $1`, p.ServiceProviderSID
	case ScopeAccount:
		where, arg = `WHERE k.account_sid = $1`, p.AccountSID
	default:
		return nil, newError(KindInvalid, "scope", "unknown scope %q", p.Scope)
	}
	if arg != nil && !ValidSID(arg.(string)) {
		return nil, errMalformedSID
	}
	rows, _ := db.pool.Query(ctx, keySelect+` `+where+` ORDER BY k.created_at, k.api_key_sid`, arg)
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) { return scanAPIKey(r) })
	if err != nil {
		return nil, mapError(err, "list api keys", "")
	}
	return keys, nil
}

// DeleteAPIKey deletes a key, the keys it minted (and theirs), and the
// dashboard sessions of all of them.
// Requests using it fail from now on in this process, and in others once
// they get the notification (or their cache entry expires).
func (db *DB) DeleteAPIKey(ctx context.Context, sid string) error {
	sid, err := checkSID(sid)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM api_keys WHERE api_key_sid = $1`, sid)
	db.invalidateAuth()
	db.touched.Delete(sid)
	return rowsAffected(tag, err, "delete api key", "api key "+sid)
}

// authEntry is a cached authentication result; ok false caches "unknown",
// which spares the database when a client keeps sending a bad token.
type authEntry struct {
	p  Principal
	ok bool
}

// principalSelect reads what a key may do, keyed by token hash.
const principalSelect = `SELECT k.api_key_sid::text,
	CASE WHEN k.account_sid IS NOT NULL THEN 'account'
	     WHEN k.service_provider_sid IS NOT NULL THEN 'service_provider'
	     ELSE 'admin' END,
	coalesce(coalesce(k.service_provider_sid, a.service_provider_sid)::text, ''),
	coalesce(k.account_sid::text, ''),
	k.expires_at
FROM api_keys k LEFT JOIN accounts a ON a.account_sid = k.account_sid`

// Authenticate returns the principal of an API key token, or ErrUnauthorized
// when the token is unknown or its key has expired. Results are cached for a
// few seconds by token hash; expiry is checked on every call all the same.
// It records last_used in the background, at most once a minute per key.
func (db *DB) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, newError(KindUnauthorized, "", "missing token")
	}
	h := tokenHash(token)
	now := time.Now()
	e, ok := db.keys.get(h, now)
	if !ok {
		gen := db.keys.generation()
		var p Principal
		read := func() error {
			return db.pool.QueryRow(ctx, principalSelect+` WHERE k.token_hash = $1`, h[:]).
				Scan(&p.KeySID, &p.Scope, &p.ServiceProviderSID, &p.AccountSID, &p.ExpiresAt)
		}
		err := read()
		if f := db.tokenFallback.Load(); errors.Is(err, pgx.ErrNoRows) && f != nil && (*f)(ctx, token) {
			// Mirrored just now (a key new in jambonz): read it back.
			gen = db.keys.generation()
			err = read()
		}
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			e = authEntry{}
		case err != nil:
			return Principal{}, fmt.Errorf("authenticate: %w", err)
		default:
			e = authEntry{p: p, ok: true}
		}
		db.keys.put(h, e, gen, now)
	}
	return db.admit(e, now, "api key")
}

// admit turns a cached entry into the answer for this instant.
func (db *DB) admit(e authEntry, now time.Time, what string) (Principal, error) {
	if !e.ok {
		return Principal{}, newError(KindUnauthorized, "", "unknown %s", what)
	}
	if e.p.ExpiresAt != nil && !now.Before(*e.p.ExpiresAt) {
		return Principal{}, newError(KindUnauthorized, "", "%s expired", what)
	}
	db.touch(e.p.KeySID, now)
	p := e.p
	if p.ExpiresAt != nil {
		t := *p.ExpiresAt // the cached value must not be shared with callers
		p.ExpiresAt = &t
	}
	return p, nil
}

// touch schedules a last_used update for a key unless one was scheduled in
// the last minute. It never blocks: when the queue is full the update is
// dropped, since last_used is informational.
func (db *DB) touch(keySID string, now time.Time) {
	v, ok := db.touched.Load(keySID)
	if !ok {
		v, _ = db.touched.LoadOrStore(keySID, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	prev := last.Load()
	if prev != 0 && now.UnixNano()-prev < int64(touchInterval) {
		return
	}
	if !last.CompareAndSwap(prev, now.UnixNano()) {
		return // another request just scheduled it
	}
	select {
	case db.touchCh <- keySID:
	default:
	}
}

// touchLoop writes last_used for the keys touch schedules, until Close.
func (db *DB) touchLoop(ctx context.Context) {
	defer close(db.done)
	for {
		select {
		case <-ctx.Done():
			return
		case sid := <-db.touchCh:
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			// The condition keeps several processes from each writing it
			// every minute. Errors are ignored: a missed last_used is
			// harmless and the next use retries.
			_, _ = db.pool.Exec(c, `UPDATE api_keys SET last_used = now()
				WHERE api_key_sid = $1 AND (last_used IS NULL OR last_used < now() - interval '1 minute')`, sid)
			cancel()
		}
	}
}
