package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const accountColumns = `account_sid::text, name, service_provider_sid::text, coalesce(sip_realm, '')`

func scanAccount(r pgx.Row) (Account, error) {
	var a Account
	err := r.Scan(&a.SID, &a.Name, &a.ServiceProviderSID, &a.SIPRealm)
	return a, err
}

// checkAccount validates and normalizes a in place.
func checkAccount(a *Account) error {
	a.Name = strings.TrimSpace(a.Name)
	if a.Name == "" {
		return newError(KindInvalid, "name", "missing field name")
	}
	if err := checkText("name", a.Name, MaxNameLen, false); err != nil {
		return err
	}
	if a.ServiceProviderSID == "" {
		return newError(KindInvalid, "service_provider_sid", "missing field service_provider_sid")
	}
	if !ValidSID(a.ServiceProviderSID) {
		return newError(KindInvalid, "service_provider_sid", "unknown service provider")
	}
	a.ServiceProviderSID = strings.ToLower(a.ServiceProviderSID)
	var err error
	a.SIPRealm, err = normalizeRealm(a.SIPRealm)
	return err
}

// CreateAccount stores a, generating its sid when empty, and returns it as
// stored. The name and an existing service provider are required; the SIP
// realm is optional, lower-cased, and unique (ErrConflict).
func (db *DB) CreateAccount(ctx context.Context, a Account) (Account, error) {
	var err error
	if a.SID, err = sidOrNew(a.SID); err != nil {
		return Account{}, err
	}
	if err := checkAccount(&a); err != nil {
		return Account{}, err
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO accounts (account_sid, name, service_provider_sid, sip_realm) VALUES ($1, $2, $3, $4)`,
		a.SID, a.Name, a.ServiceProviderSID, nullIfEmpty(a.SIPRealm))
	if err != nil {
		return Account{}, mapError(err, "create account", "")
	}
	return a, nil
}

// Account returns the account with the given sid. It is read on every REST
// request, so it is cached for a few seconds (see DB).
func (db *DB) Account(ctx context.Context, sid string) (Account, error) {
	sid, err := checkSID(sid)
	if err != nil {
		return Account{}, err
	}
	now := time.Now()
	if a, ok := db.accounts.get(sid, now); ok {
		return a, nil
	}
	gen := db.accounts.generation()
	a, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE account_sid = $1`, sid))
	if err != nil {
		return Account{}, mapError(err, "get account", "account "+sid)
	}
	db.accounts.put(sid, a, gen, now)
	return a, nil
}

// Accounts returns the accounts of a service provider, or every account when
// serviceProviderSID is empty, sorted by name.
func (db *DB) Accounts(ctx context.Context, serviceProviderSID string) ([]Account, error) {
	sp, err := checkOptionalSID(serviceProviderSID)
	if err != nil {
		return nil, err
	}
	rows, _ := db.pool.Query(ctx, `SELECT `+accountColumns+` FROM accounts
		WHERE $1::uuid IS NULL OR service_provider_sid = $1
		ORDER BY name, account_sid`, nullIfEmpty(sp))
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) { return scanAccount(r) })
	if err != nil {
		return nil, mapError(err, "list accounts", "")
	}
	return as, nil
}

// AccountByRealm returns the account whose SIP realm is realm (compared
// lower-cased).
func (db *DB) AccountByRealm(ctx context.Context, realm string) (Account, error) {
	norm, err := normalizeRealm(realm)
	if err != nil || norm == "" {
		// No account can have such a realm.
		return Account{}, newError(KindNotFound, "", "account with sip_realm %q", realm)
	}
	a, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE sip_realm = $1`, norm))
	if err != nil {
		return Account{}, mapError(err, "get account by realm", fmt.Sprintf("account with sip_realm %q", norm))
	}
	return a, nil
}

// UpdateAccount replaces the name, service provider and SIP realm of a.SID,
// validated as in CreateAccount.
func (db *DB) UpdateAccount(ctx context.Context, a Account) error {
	var err error
	if a.SID, err = checkSID(a.SID); err != nil {
		return err
	}
	if err := checkAccount(&a); err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `UPDATE accounts SET name = $2, service_provider_sid = $3, sip_realm = $4 WHERE account_sid = $1`,
		a.SID, a.Name, a.ServiceProviderSID, nullIfEmpty(a.SIPRealm))
	db.accounts.remove(a.SID)
	// Account-scoped principals carry the account's provider.
	db.invalidateAuth()
	return rowsAffected(tag, err, "update account", "account "+a.SID)
}

// DeleteAccount deletes an account with its SIP clients and API keys (and
// the sessions of those keys).
func (db *DB) DeleteAccount(ctx context.Context, sid string) error {
	sid, err := checkSID(sid)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM accounts WHERE account_sid = $1`, sid)
	db.accounts.remove(sid)
	db.invalidateAuth()
	return rowsAffected(tag, err, "delete account", "account "+sid)
}

// rowsAffected maps the result of an UPDATE or DELETE by primary key: no row
// means the sid does not exist.
func rowsAffected(tag pgconn.CommandTag, err error, op, what string) error {
	if err != nil {
		return mapError(err, op, what)
	}
	if tag.RowsAffected() == 0 {
		return newError(KindNotFound, "", "%s", what)
	}
	return nil
}
