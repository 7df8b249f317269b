package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ClientFilter selects SIP clients; an empty field does not filter.
type ClientFilter struct {
	AccountSID         string
	ServiceProviderSID string
}

// ClientUpdate lists the fields of a SIP client to change; nil leaves a
// field as it is.
type ClientUpdate struct {
	Username, Password                                                               *string
	IsActive, AllowDirectAppCalling, AllowDirectQueueCalling, AllowDirectUserCalling *bool
}

// maxPasswordBytes matches jambonz's VARCHAR(1024) password column.
const maxPasswordBytes = 1024

func checkPassword(pw string) error {
	if len(pw) > maxPasswordBytes {
		return newError(KindInvalid, "password", "password is longer than %d bytes", maxPasswordBytes)
	}
	return nil
}

// passwordAAD binds a client's encrypted password to the client.
func passwordAAD(clientSID string) string { return "presencehub client password " + clientSID }

const clientSelect = `SELECT c.client_sid::text, c.account_sid::text, c.username, c.password, c.is_active,
	c.allow_direct_app_calling, c.allow_direct_queue_calling, c.allow_direct_user_calling
FROM clients c`

// scanClient reads a client and masks its password.
func (db *DB) scanClient(r pgx.Row) (Client, error) {
	var c Client
	var sealed []byte
	err := r.Scan(&c.SID, &c.AccountSID, &c.Username, &sealed, &c.IsActive,
		&c.AllowDirectAppCalling, &c.AllowDirectQueueCalling, &c.AllowDirectUserCalling)
	if err != nil {
		return Client{}, err
	}
	pw, _, err := db.sealer.open(sealed, passwordAAD(c.SID))
	if err != nil {
		// One bad row must not take the list down: the client is shown
		// without its password, and the operator told once.
		c.DecryptFailed = true
		db.decryptFailures.Add(1)
		if _, seen := db.undecryptable.LoadOrStore(c.SID, true); !seen {
			db.log.Error("a SIP client's password does not decrypt: it is shown without it; "+
				"set the key it was written with as --encryption-key-previous (or --encryption-key-legacy), or set a new password",
				"client_sid", c.SID, "key_id", storedKeyID(sealed), "err", err)
		}
		return c, nil
	}
	c.Password = maskPassword(pw)
	return c, nil
}

// CreateClient stores a SIP client of an existing account (ErrInvalid
// otherwise) with its password encrypted, generating its sid when empty.
// Usernames are unique per account regardless of case (ErrConflict). The
// returned client's password is masked.
func (db *DB) CreateClient(ctx context.Context, c Client, password string) (Client, error) {
	var err error
	if c.SID, err = sidOrNew(c.SID); err != nil {
		return Client{}, err
	}
	if c.AccountSID == "" {
		return Client{}, newError(KindInvalid, "account_sid", "missing field account_sid")
	}
	if c.AccountSID, err = checkSID(c.AccountSID); err != nil {
		return Client{}, newError(KindInvalid, "account_sid", "unknown account")
	}
	if err := checkUsername(c.Username); err != nil {
		return Client{}, err
	}
	if err := checkPassword(password); err != nil {
		return Client{}, err
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO clients (client_sid, account_sid, username, password, is_active,
			allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		c.SID, c.AccountSID, c.Username, db.sealer.seal(password, passwordAAD(c.SID)), c.IsActive,
		c.AllowDirectAppCalling, c.AllowDirectQueueCalling, c.AllowDirectUserCalling)
	if err != nil {
		return Client{}, mapError(err, "create client", "")
	}
	c.Password = maskPassword(password)
	return c, nil
}

// Client returns the SIP client with the given sid, its password masked.
func (db *DB) Client(ctx context.Context, sid string) (Client, error) {
	sid, err := checkSID(sid)
	if err != nil {
		return Client{}, err
	}
	c, err := db.scanClient(db.pool.QueryRow(ctx, clientSelect+` WHERE c.client_sid = $1`, sid))
	if err != nil {
		return Client{}, mapError(err, "get client", "client "+sid)
	}
	return c, nil
}

// Clients returns the SIP clients matching f, sorted by lower-cased
// username, their passwords masked.
func (db *DB) Clients(ctx context.Context, f ClientFilter) ([]Client, error) {
	account, err := checkOptionalSID(f.AccountSID)
	if err != nil {
		return nil, err
	}
	sp, err := checkOptionalSID(f.ServiceProviderSID)
	if err != nil {
		return nil, err
	}
	rows, _ := db.pool.Query(ctx, clientSelect+` JOIN accounts a ON a.account_sid = c.account_sid
		WHERE ($1::uuid IS NULL OR c.account_sid = $1)
		  AND ($2::uuid IS NULL OR a.service_provider_sid = $2)
		ORDER BY fold_username(c.username), c.username, c.account_sid`, nullIfEmpty(account), nullIfEmpty(sp))
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Client, error) { return db.scanClient(r) })
	if err != nil {
		return nil, mapError(err, "list clients", "")
	}
	return cs, nil
}

// UpdateClient changes the fields of u that are set, validated as in
// CreateClient.
func (db *DB) UpdateClient(ctx context.Context, sid string, u ClientUpdate) error {
	sid, err := checkSID(sid)
	if err != nil {
		return err
	}
	if u.Username != nil {
		if err := checkUsername(*u.Username); err != nil {
			return err
		}
	}
	var sealed []byte // nil: keep the stored password
	if u.Password != nil {
		if err := checkPassword(*u.Password); err != nil {
			return err
		}
		sealed = db.sealer.seal(*u.Password, passwordAAD(sid))
	}
	tag, err := db.pool.Exec(ctx, `UPDATE clients SET
			username = coalesce($2, username),
			password = coalesce($3, password),
			is_active = coalesce($4, is_active),
			allow_direct_app_calling = coalesce($5, allow_direct_app_calling),
			allow_direct_queue_calling = coalesce($6, allow_direct_queue_calling),
			allow_direct_user_calling = coalesce($7, allow_direct_user_calling)
		WHERE client_sid = $1`,
		sid, u.Username, sealed, u.IsActive, u.AllowDirectAppCalling, u.AllowDirectQueueCalling, u.AllowDirectUserCalling)
	return rowsAffected(tag, err, "update client", "client "+sid)
}

// DeleteClient deletes a SIP client.
func (db *DB) DeleteClient(ctx context.Context, sid string) error {
	sid, err := checkSID(sid)
	if err != nil {
		return err
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM clients WHERE client_sid = $1`, sid)
	return rowsAffected(tag, err, "delete client", "client "+sid)
}

// ReencryptResult counts what Reencrypt did with the stored passwords.
type ReencryptResult struct {
	Scanned     int // rows read
	Reencrypted int // rewritten with the current key
	Current     int // already written with the current key: left alone
	Failed      int // did not decrypt with any configured key: left alone
	Changed     int // changed by someone else while being re-encrypted: left alone (a new value is written with the current key)
}

// Reencrypt rewrites every SIP client password not written with the
// current key (the previous key's, the legacy format) with the current key,
// batch rows at a time, each batch in its own transaction. It is
// idempotent: a second run finds every readable row current. A row is only
// replaced if it still holds the value that was read, so a concurrent
// update wins. Rows that do not decrypt are counted and left as they are.
func (db *DB) Reencrypt(ctx context.Context, batch int) (ReencryptResult, error) {
	var res ReencryptResult
	if batch < 1 {
		return res, newError(KindInvalid, "batch", "batch must be at least 1")
	}
	after := "00000000-0000-0000-0000-000000000000"
	for {
		type row struct {
			sid    string
			sealed []byte
		}
		rows, _ := db.pool.Query(ctx, `SELECT client_sid::text, password FROM clients WHERE client_sid > $1 ORDER BY client_sid LIMIT $2`, after, batch)
		rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.sid, &x.sealed)
			return x, err
		})
		if err != nil {
			return res, mapError(err, "reencrypt: read clients", "")
		}
		if len(rs) == 0 {
			return res, nil
		}
		after = rs[len(rs)-1].sid
		res.Scanned += len(rs)
		var b pgx.Batch
		for _, x := range rs {
			pw, current, err := db.sealer.open(x.sealed, passwordAAD(x.sid))
			switch {
			case err != nil:
				res.Failed++
				db.log.Error("reencrypt: a SIP client's password does not decrypt with the configured keys; left as it is",
					"client_sid", x.sid, "key_id", storedKeyID(x.sealed))
			case current:
				res.Current++
			default:
				b.Queue(`UPDATE clients SET password = $2 WHERE client_sid = $1 AND password = $3`,
					x.sid, db.sealer.seal(pw, passwordAAD(x.sid)), x.sealed).Exec(func(tag pgconn.CommandTag) error {
					if tag.RowsAffected() == 1 {
						res.Reencrypted++
					} else {
						res.Changed++
					}
					return nil
				})
			}
		}
		if b.Len() > 0 {
			if err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &b).Close() }); err != nil {
				return res, mapError(err, "reencrypt: write clients", "")
			}
		}
	}
}
