package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// constraintErrors gives the errors of named constraints, so that messages
// say what is wrong in the caller's terms.
var constraintErrors = map[string]error{
	"service_providers_name_key":         newError(KindConflict, "name", "a service provider with that name already exists"),
	"service_providers_root_domain_key":  newError(KindConflict, "root_domain", "the root_domain is already in use by another service provider"),
	"accounts_sip_realm_key":             newError(KindConflict, "sip_realm", "the sip_realm is already in use by another account"),
	"accounts_sip_realm_check":           newError(KindInvalid, "sip_realm", "the sip_realm is not a valid domain name"),
	"accounts_service_provider_sid_fkey": newError(KindInvalid, "service_provider_sid", "unknown service provider"),
	"api_keys_service_provider_sid_fkey": newError(KindInvalid, "service_provider_sid", "unknown service provider"),
	"api_keys_account_sid_fkey":          newError(KindInvalid, "account_sid", "unknown account"),
	"clients_account_sid_fkey":           newError(KindInvalid, "account_sid", "unknown account"),
	"clients_account_username_key":       newError(KindConflict, "username", "the client's username already exists"),
	"sessions_api_key_sid_fkey":          newError(KindInvalid, "", "unknown api key"),
}

// mapError translates a driver error into the store's vocabulary. what names
// the thing looked up, for ErrNotFound ("account 1234…"). Errors it does not
// know are wrapped with op and returned as unexpected.
func mapError(err error, op, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return newError(KindNotFound, "", "%s", what)
	}
	if se := (*Error)(nil); errors.As(err, &se) {
		return se // already in the caller's terms
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if e, ok := constraintErrors[pe.ConstraintName]; ok {
			return e
		}
		switch pe.Code {
		case "23505": // unique_violation
			return newError(KindConflict, "", "%s: already exists", op)
		case "23503": // foreign_key_violation
			return newError(KindInvalid, "", "%s: refers to something that does not exist", op)
		case "23514", "23502": // check_violation, not_null_violation
			return newError(KindInvalid, "", "%s: violates %s", op, pe.ConstraintName)
		case "22P02", "22001": // invalid_text_representation, string_data_right_truncation
			return newError(KindInvalid, "", "%s: malformed value", op)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}
