package store

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const spColumns = `service_provider_sid::text, name, description, coalesce(root_domain, '')`

func checkServiceProvider(sp *ServiceProvider) error {
	sp.Name = strings.TrimSpace(sp.Name)
	if sp.Name == "" {
		return newError(KindInvalid, "name", "missing field name")
	}
	if err := checkText("name", sp.Name, MaxNameLen, false); err != nil {
		return err
	}
	if err := checkText("description", sp.Description, MaxDescriptionLen, true); err != nil {
		return err
	}
	var err error
	sp.RootDomain, err = normalizeRootDomain(sp.RootDomain)
	return err
}

// rootDomainLock is the advisory lock key that serializes the overlap check
// of root domains ("phroot" in ASCII).
const rootDomainLock = 0x7068726f6f74

// writeServiceProvider runs write (the INSERT or UPDATE of sp) after
// checking, under a lock, that sp's root domain neither equals nor nests
// with another provider's: a provider whose root domain lay under another's
// would share realms with it, and the realm rule would mean nothing.
func (db *DB) writeServiceProvider(ctx context.Context, sp ServiceProvider, write func(pgx.Tx) (pgconn.CommandTag, error)) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if sp.RootDomain != "" {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(rootDomainLock)); err != nil {
				return err
			}
			var other, otherSID string
			err := tx.QueryRow(ctx, `SELECT root_domain, service_provider_sid::text FROM service_providers
				WHERE service_provider_sid <> $1 AND (root_domain = $2
					OR right($2, length(root_domain) + 1) = '.' || root_domain
					OR right(root_domain, length($2) + 1) = '.' || $2)
				LIMIT 1`, sp.SID, sp.RootDomain).Scan(&other, &otherSID)
			switch {
			case err == nil:
				return newError(KindConflict, "root_domain", "root_domain %q overlaps root_domain %q of service provider %s", sp.RootDomain, other, otherSID)
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		var err error
		tag, err = write(tx)
		return err
	})
	return tag, err
}

// CreateServiceProvider stores sp, generating its sid when empty, and returns
// it as stored. The name is required and unique (ErrConflict); the root
// domain is optional, lower-cased, and may neither equal nor nest with
// another provider's (ErrConflict).
func (db *DB) CreateServiceProvider(ctx context.Context, sp ServiceProvider) (ServiceProvider, error) {
	var err error
	if sp.SID, err = sidOrNew(sp.SID); err != nil {
		return ServiceProvider{}, err
	}
	if err := checkServiceProvider(&sp); err != nil {
		return ServiceProvider{}, err
	}
	_, err = db.writeServiceProvider(ctx, sp, func(tx pgx.Tx) (pgconn.CommandTag, error) {
		return tx.Exec(ctx, `INSERT INTO service_providers (service_provider_sid, name, description, root_domain) VALUES ($1, $2, $3, $4)`,
			sp.SID, sp.Name, sp.Description, nullIfEmpty(sp.RootDomain))
	})
	if err != nil {
		return ServiceProvider{}, mapError(err, "create service provider", "")
	}
	return sp, nil
}

// ServiceProvider returns the service provider with the given sid.
func (db *DB) ServiceProvider(ctx context.Context, sid string) (ServiceProvider, error) {
	sid, err := checkSID(sid)
	if err != nil {
		return ServiceProvider{}, err
	}
	var sp ServiceProvider
	err = db.pool.QueryRow(ctx, `SELECT `+spColumns+` FROM service_providers WHERE service_provider_sid = $1`, sid).
		Scan(&sp.SID, &sp.Name, &sp.Description, &sp.RootDomain)
	if err != nil {
		return ServiceProvider{}, mapError(err, "get service provider", "service provider "+sid)
	}
	return sp, nil
}

// ServiceProviders returns every service provider, sorted by name.
func (db *DB) ServiceProviders(ctx context.Context) ([]ServiceProvider, error) {
	rows, _ := db.pool.Query(ctx, `SELECT `+spColumns+` FROM service_providers ORDER BY name, service_provider_sid`)
	sps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ServiceProvider, error) {
		var sp ServiceProvider
		err := r.Scan(&sp.SID, &sp.Name, &sp.Description, &sp.RootDomain)
		return sp, err
	})
	if err != nil {
		return nil, mapError(err, "list service providers", "")
	}
	return sps, nil
}

// UpdateServiceProvider replaces the name, description and root domain of
// sp.SID (ErrConflict when the root domain overlaps another provider's).
func (db *DB) UpdateServiceProvider(ctx context.Context, sp ServiceProvider) error {
	var err error
	if sp.SID, err = checkSID(sp.SID); err != nil {
		return err
	}
	if err := checkServiceProvider(&sp); err != nil {
		return err
	}
	tag, err := db.writeServiceProvider(ctx, sp, func(tx pgx.Tx) (pgconn.CommandTag, error) {
		return tx.Exec(ctx, `UPDATE service_providers SET name = $2, description = $3, root_domain = $4 WHERE service_provider_sid = $1`,
			sp.SID, sp.Name, sp.Description, nullIfEmpty(sp.RootDomain))
	})
	return rowsAffected(tag, err, "update service provider", "service provider "+sp.SID)
}

// DeleteServiceProvider deletes a service provider and its provider-scoped
// API keys. It fails with ErrConflict while the provider still has accounts:
// deleting those is a decision to make one account at a time.
func (db *DB) DeleteServiceProvider(ctx context.Context, sid string) error {
	sid, err := checkSID(sid)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM service_providers WHERE service_provider_sid = $1`, sid)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return newError(KindConflict, "", "service provider %s still has accounts", sid)
	}
	if err == nil {
		db.invalidateAuth() // its keys and their sessions are gone
	}
	return rowsAffected(tag, err, "delete service provider", "service provider "+sid)
}
