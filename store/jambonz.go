package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/presencehub/presencehub/hub"
	"golang.org/x/time/rate"
)

// Jambonz mirrors jambonz's tenants (service providers, accounts, API keys
// and SIP clients) from its MySQL database into presencehub's PostgreSQL,
// read-only on the MySQL side. Mirrored rows keep jambonz's sids, carry the
// mirrored marker (migrations/0002_jambonz_mirror.sql) and are the only rows
// a sync changes. API key tokens, which jambonz stores in plaintext, are
// stored as their SHA-256 like presencehub's own; client passwords are not
// copied.
//
// Because the mirror writes into PostgreSQL, its changes reach every running
// process through the same triggers and NOTIFY as any other write: caches
// are cleared and watchers reload.
type Jambonz struct {
	db   *DB
	my   *sql.DB
	opts JambonzOptions
	log  *slog.Logger

	limiter *rate.Limiter
	unknown *ttlCache[[32]byte, struct{}] // tokens MySQL did not know

	syncMu sync.Mutex // one sync at a time

	mu     sync.Mutex
	status JambonzStatus
}

// JambonzOptions configure OpenJambonz.
type JambonzOptions struct {
	// URL is jambonz's database: mysql://user:pass@host:3306/jambones, or
	// go-sql-driver's DSN user:pass@tcp(host:3306)/jambones.
	URL string
	// SyncInterval is the time between full re-syncs (default 10s).
	SyncInterval time.Duration
	// LookupRate bounds the direct MySQL look-ups of unknown bearer tokens,
	// per second (default 5; the burst is the same number).
	LookupRate float64
	Logger     *slog.Logger
}

// JambonzStatus says how fresh the mirror is.
type JambonzStatus struct {
	Synced     bool      // a sync has succeeded since start
	LastSync   time.Time // end of the last successful sync
	StaleSince time.Time // zero while fresh; else when syncs began to fail
	LastError  string    // of the last failed sync, while stale
}

// JambonzSyncResult counts what one sync changed.
type JambonzSyncResult struct {
	Inserted, Updated, Deleted int
	// Skipped counts source rows that could not be mirrored (malformed
	// sid, a name or realm taken by one of presencehub's own rows, …);
	// each is logged.
	Skipped int
}

// Changed reports whether the sync wrote anything.
func (r JambonzSyncResult) Changed() bool { return r.Inserted+r.Updated+r.Deleted > 0 }

// ParseJambonzURL turns a mysql:// URL or a go-sql-driver DSN into the
// driver's configuration, with the settings the mirror relies on: times
// parsed in UTC and bounded connect/read timeouts.
func ParseJambonzURL(s string) (*mysql.Config, error) {
	var cfg *mysql.Config
	if strings.HasPrefix(s, "mysql://") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("jambonz database url: %w", ErrInvalid)
		}
		cfg = mysql.NewConfig()
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
		host := u.Host
		if host == "" {
			return nil, fmt.Errorf("jambonz database url %q has no host: %w", redactMySQL(s), ErrInvalid)
		}
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "3306")
		}
		cfg.Net, cfg.Addr = "tcp", host
		cfg.DBName = strings.TrimPrefix(u.Path, "/")
		for k, v := range u.Query() {
			if len(v) > 0 {
				if err := cfg.Apply(mysqlParam(k, v[0])); err != nil {
					return nil, fmt.Errorf("jambonz database url parameter %s: %v: %w", k, err, ErrInvalid)
				}
			}
		}
	} else {
		var err error
		cfg, err = mysql.ParseDSN(s)
		if err != nil {
			return nil, fmt.Errorf("jambonz database url: want mysql://user:pass@host:3306/jambones or user:pass@tcp(host:3306)/jambones: %v: %w", err, ErrInvalid)
		}
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("jambonz database url names no database: %w", ErrInvalid)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// TIMESTAMP columns are converted to the session's time zone; UTC makes
	// expires_at mean the same instant whatever the server's zone.
	cfg.Params["time_zone"] = "'+00:00'"
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	return cfg, nil
}

// mysqlParam passes a URL query parameter to the driver as a DSN option.
func mysqlParam(k, v string) mysql.Option {
	return func(c *mysql.Config) error {
		dsn, err := mysql.ParseDSN("/x?" + url.Values{k: {v}}.Encode())
		if err != nil {
			return err
		}
		switch k {
		case "tls":
			c.TLSConfig, c.TLS = dsn.TLSConfig, dsn.TLS
		case "timeout":
			c.Timeout = dsn.Timeout
		case "readTimeout":
			c.ReadTimeout = dsn.ReadTimeout
		case "writeTimeout":
			c.WriteTimeout = dsn.WriteTimeout
		case "allowNativePasswords", "allowCleartextPasswords":
			c.AllowNativePasswords, c.AllowCleartextPasswords = dsn.AllowNativePasswords, dsn.AllowCleartextPasswords
		default:
			if c.Params == nil {
				c.Params = map[string]string{}
			}
			c.Params[k] = v
		}
		return nil
	}
}

// redactMySQL hides a password in a mysql:// URL for messages.
func redactMySQL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return s
}

// OpenJambonz prepares the mirror of jambonz's database into db. It does not
// connect yet: Run (or Sync) does, and keeps trying while MySQL is away. From
// now on a bearer token db does not know is looked up in jambonz's api_keys
// once (rate-limited, and remembered as unknown for one sync interval), so a
// key created in jambonz works on its first use.
func OpenJambonz(db *DB, opts JambonzOptions) (*Jambonz, error) {
	cfg, err := ParseJambonzURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 10 * time.Second
	}
	if opts.LookupRate <= 0 {
		opts.LookupRate = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	driverLogOnce.Do(func() {
		// The driver logs to stderr by default (every dropped connection
		// while MySQL is away); the sync reports failures itself.
		mysql.SetLogger(slogDriverLogger{opts.Logger})
	})
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("jambonz database: %v: %w", err, ErrInvalid)
	}
	my := sql.OpenDB(conn)
	my.SetMaxOpenConns(4)
	my.SetMaxIdleConns(2)
	my.SetConnMaxLifetime(5 * time.Minute)
	burst := max(1, int(opts.LookupRate))
	j := &Jambonz{
		db: db, my: my, opts: opts, log: opts.Logger,
		limiter: rate.NewLimiter(rate.Limit(opts.LookupRate), burst),
		unknown: newTTLCache[[32]byte, struct{}](opts.SyncInterval, authCacheMax),
	}
	f := j.lookupToken
	db.tokenFallback.Store(&f)
	return j, nil
}

// Close stops the token look-ups and closes the MySQL connections.
func (j *Jambonz) Close() {
	j.db.tokenFallback.Store(nil)
	j.my.Close()
}

// Status reports how fresh the mirror is.
func (j *Jambonz) Status() JambonzStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status
}

// Run syncs at once and then every SyncInterval until ctx is done. A failed
// sync (MySQL away, a query failing) leaves the last mirror in force, marks
// it stale and is retried at the next interval; Run returns only ctx.Err().
func (j *Jambonz) Run(ctx context.Context) error {
	t := time.NewTicker(j.opts.SyncInterval)
	defer t.Stop()
	for {
		c, cancel := context.WithTimeout(ctx, max(j.opts.SyncInterval, 30*time.Second))
		res, err := j.Sync(c)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			// Logged by Sync.
		case res.Changed():
			j.log.Info("jambonz mirror synced", "inserted", res.Inserted, "updated", res.Updated, "deleted", res.Deleted, "skipped", res.Skipped)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sync reads jambonz's four tables and applies the differences to the
// mirrored rows in one PostgreSQL transaction.
func (j *Jambonz) Sync(ctx context.Context) (JambonzSyncResult, error) {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	res, err := j.sync(ctx)
	now := time.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		if j.status.StaleSince.IsZero() {
			j.status.StaleSince = now
			j.log.Warn("jambonz mirror is stale: serving the last mirror until the sync succeeds again", "err", err)
		}
		j.status.LastError = err.Error()
		return res, err
	}
	if !j.status.StaleSince.IsZero() {
		j.log.Info("jambonz mirror fresh again", "stale_for", now.Sub(j.status.StaleSince).Round(time.Millisecond).String())
	}
	j.status = JambonzStatus{Synced: true, LastSync: now}
	return res, nil
}

// Rows as read from jambonz, normalised.
type (
	jzSP      struct{ sid, name, rootDomain string }
	jzAccount struct {
		sid, name, realm, spSID string
	}
	jzKey struct {
		sid, spSID, accountSID string
		hash                   [32]byte
		expiresAt              *time.Time
	}
	jzClient struct {
		sid, accountSID, username string
		active, app, queue, user  bool
	}
	jzTenants struct {
		sps      map[string]jzSP
		accounts map[string]jzAccount
		keys     map[string]jzKey
		clients  map[string]jzClient
	}
)

func (j *Jambonz) sync(ctx context.Context) (JambonzSyncResult, error) {
	var res JambonzSyncResult
	src, skipped, err := j.readSource(ctx)
	if err != nil {
		return res, fmt.Errorf("read jambonz database: %w", err)
	}
	res.Skipped = skipped
	err = pgx.BeginFunc(ctx, j.db.pool, func(tx pgx.Tx) error {
		dst, err := readMirror(ctx, tx)
		if err != nil {
			return err
		}
		return j.apply(ctx, tx, src, dst, &res)
	})
	if err != nil {
		return JambonzSyncResult{Skipped: res.Skipped}, fmt.Errorf("write mirror to postgres: %w", err)
	}
	if res.Changed() {
		// Other processes hear it from the triggers' NOTIFY; this one
		// forgets at once.
		j.db.invalidateAuth()
		j.db.accounts.clear()
	}
	return res, nil
}

// readSource reads jambonz's tables in one consistent snapshot and keeps
// what can be mirrored: active accounts of known providers, keys and clients
// of mirrored owners. Rows that cannot be mirrored are logged and counted.
func (j *Jambonz) readSource(ctx context.Context) (jzTenants, int, error) {
	t := jzTenants{map[string]jzSP{}, map[string]jzAccount{}, map[string]jzKey{}, map[string]jzClient{}}
	skipped := 0
	skip := func(what, sid, why string) {
		skipped++
		j.log.Warn("jambonz mirror: row not mirrored", "table", what, "sid", sid, "why", why)
	}
	// optional is a column the row can be mirrored without: a value that
	// does not pass norm is logged and left out, the row is not skipped.
	optional := func(table, sid, what, v string, norm func(string) (string, error)) string {
		n, err := norm(v)
		if err != nil {
			j.log.Warn("jambonz mirror: row not mirrored", "table", table, "sid", sid, "why", err.Error()+" (mirrored without "+what+")")
			return ""
		}
		return n
	}
	mirror := func(table, raw string) (string, bool) {
		sid, ok := mirrorSID(raw)
		if !ok {
			skip(table, raw, "sid is not a UUID")
		}
		return sid, ok
	}
	tx, err := j.my.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return t, 0, err
	}
	defer tx.Rollback()

	seen := map[[2]string]bool{} // account, folded username
	// Owners before what they own: a row whose owner is not mirrored is not.
	for _, tbl := range []struct {
		query string
		row   func(scan func(...any) error) error
	}{
		{`SELECT service_provider_sid, name, root_domain FROM service_providers`, func(scan func(...any) error) error {
			var sp jzSP
			var root sql.NullString
			if err := scan(&sp.sid, &sp.name, &root); err != nil {
				return err
			}
			sid, ok := mirror("service_providers", sp.sid)
			if !ok {
				return nil
			}
			sp.sid, sp.name = sid, strings.TrimSpace(sp.name)
			if sp.name == "" {
				skip("service_providers", sid, "empty name")
				return nil
			}
			sp.rootDomain = optional("service_providers", sid, "a root_domain", root.String, normalizeRootDomain)
			t.sps[sid] = sp
			return nil
		}},
		{`SELECT account_sid, name, sip_realm, service_provider_sid, is_active FROM accounts`, func(scan func(...any) error) error {
			var a jzAccount
			var realm sql.NullString
			var active bool
			if err := scan(&a.sid, &a.name, &realm, &a.spSID, &active); err != nil {
				return err
			}
			sid, ok := mirror("accounts", a.sid)
			if !ok {
				return nil
			}
			a.sid = sid
			if !active {
				return nil // refused like an unknown account: not mirrored at all
			}
			a.spSID, _ = mirrorSID(a.spSID)
			if _, ok := t.sps[a.spSID]; !ok {
				skip("accounts", sid, "its service provider is not mirrored")
				return nil
			}
			if a.name = strings.TrimSpace(a.name); a.name == "" {
				a.name = sid // jambonz requires a name; keep the account usable
			}
			a.realm = optional("accounts", sid, "a realm", realm.String, normalizeRealm)
			t.accounts[sid] = a
			return nil
		}},
		{`SELECT api_key_sid, token, account_sid, service_provider_sid, expires_at FROM api_keys`, func(scan func(...any) error) error {
			var k jzKey
			var token string
			var acct, sp sql.NullString
			var exp sql.NullTime
			if err := scan(&k.sid, &token, &acct, &sp, &exp); err != nil {
				return err
			}
			sid, ok := mirror("api_keys", k.sid)
			if !ok {
				return nil
			}
			k.sid, k.hash = sid, tokenHash(token)
			if exp.Valid {
				e := exp.Time.UTC()
				k.expiresAt = &e
			}
			// jambonz's scope rule: service_provider_sid set → service
			// provider (even when account_sid is set too), else account_sid
			// set → account, else admin.
			switch {
			case sp.Valid && sp.String != "":
				k.spSID, _ = mirrorSID(sp.String)
				if _, ok := t.sps[k.spSID]; !ok {
					skip("api_keys", sid, "its service provider is not mirrored")
					return nil
				}
			case acct.Valid && acct.String != "":
				k.accountSID, _ = mirrorSID(acct.String)
				if _, ok := t.accounts[k.accountSID]; !ok {
					return nil // of an inactive or unknown account: refused
				}
			}
			t.keys[sid] = k
			return nil
		}},
		{`SELECT client_sid, account_sid, username, is_active,
			allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling FROM clients`, func(scan func(...any) error) error {
			var c jzClient
			var username sql.NullString // nullable in jambonz's schema
			if err := scan(&c.sid, &c.accountSID, &username, &c.active, &c.app, &c.queue, &c.user); err != nil {
				return err
			}
			c.username = username.String
			sid, ok := mirror("clients", c.sid)
			if !ok {
				return nil
			}
			c.sid = sid
			c.accountSID, _ = mirrorSID(c.accountSID)
			if _, ok := t.accounts[c.accountSID]; !ok {
				return nil // of an inactive or unknown account
			}
			if err := checkUsername(c.username); err != nil {
				skip("clients", sid, err.Error())
				return nil
			}
			key := [2]string{c.accountSID, hub.Fold(c.username)} // the unique index's rule
			if seen[key] {
				skip("clients", sid, "another client of the account has the same username")
				return nil
			}
			seen[key] = true
			t.clients[sid] = c
			return nil
		}},
	} {
		if err := eachRow(ctx, tx, tbl.query, tbl.row); err != nil {
			return t, 0, err
		}
	}
	return t, skipped, tx.Commit()
}

// eachRow runs query in tx and calls row with each row's Scan until row
// fails; it closes the rows.
func eachRow(ctx context.Context, tx *sql.Tx, query string, row func(scan func(dest ...any) error) error) error {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			rows.Close()
			return err
		}
	}
	return closeRows(rows)
}

func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

// mirrorSID checks and lower-cases a jambonz sid.
func mirrorSID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if !ValidSID(s) {
		return s, false
	}
	return strings.ToLower(s), true
}

// readMirror reads the mirrored rows as they are in PostgreSQL.
func readMirror(ctx context.Context, tx pgx.Tx) (jzTenants, error) {
	t := jzTenants{map[string]jzSP{}, map[string]jzAccount{}, map[string]jzKey{}, map[string]jzClient{}}
	rows, _ := tx.Query(ctx, `SELECT service_provider_sid::text, name, coalesce(root_domain, '') FROM service_providers WHERE mirrored`)
	var sp jzSP
	_, err := pgx.ForEachRow(rows, []any{&sp.sid, &sp.name, &sp.rootDomain}, func() error { t.sps[sp.sid] = sp; return nil })
	if err != nil {
		return t, err
	}
	rows, _ = tx.Query(ctx, `SELECT account_sid::text, name, coalesce(sip_realm, ''), service_provider_sid::text FROM accounts WHERE mirrored`)
	var a jzAccount
	_, err = pgx.ForEachRow(rows, []any{&a.sid, &a.name, &a.realm, &a.spSID}, func() error { t.accounts[a.sid] = a; return nil })
	if err != nil {
		return t, err
	}
	rows, _ = tx.Query(ctx, `SELECT api_key_sid::text, token_hash, coalesce(service_provider_sid::text, ''), coalesce(account_sid::text, ''), expires_at FROM api_keys WHERE mirrored`)
	var k jzKey
	var h []byte
	_, err = pgx.ForEachRow(rows, []any{&k.sid, &h, &k.spSID, &k.accountSID, &k.expiresAt}, func() error {
		kk := k
		copy(kk.hash[:], h)
		if kk.expiresAt != nil {
			e := kk.expiresAt.UTC()
			kk.expiresAt = &e
		}
		t.keys[k.sid] = kk
		return nil
	})
	if err != nil {
		return t, err
	}
	rows, _ = tx.Query(ctx, `SELECT client_sid::text, account_sid::text, username, is_active,
		allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling FROM clients WHERE mirrored`)
	var c jzClient
	_, err = pgx.ForEachRow(rows, []any{&c.sid, &c.accountSID, &c.username, &c.active, &c.app, &c.queue, &c.user},
		func() error { t.clients[c.sid] = c; return nil })
	return t, err
}

// apply writes the differences between src (jambonz) and dst (the mirror).
// Every write runs in a savepoint: a row that cannot be written (its name or
// realm is taken by one of presencehub's own rows, say) is logged and
// skipped instead of failing the whole sync.
func (j *Jambonz) apply(ctx context.Context, tx pgx.Tx, src, dst jzTenants, res *JambonzSyncResult) error {
	write := func(what, sid string, counter *int, sql string, args ...any) error {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		tag, err := sp.Exec(ctx, sql, args...)
		if err != nil {
			sp.Rollback(ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Skipped++
			j.log.Warn("jambonz mirror: row not mirrored", "table", what, "sid", sid, "why", mapError(err, "write", what).Error())
			return nil
		}
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// ON CONFLICT … WHERE mirrored matched one of presencehub's
			// own rows with the same sid: left alone.
			res.Skipped++
			j.log.Warn("jambonz mirror: row not mirrored", "table", what, "sid", sid, "why", "presencehub has a row of its own with that sid")
			return nil
		}
		*counter++
		return nil
	}

	// Deletions first, dependents before owners (accounts → providers is
	// ON DELETE RESTRICT).
	for _, d := range []struct {
		table, column string
		sids          []string
	}{
		{"clients", "client_sid", missing(dst.clients, src.clients)},
		{"api_keys", "api_key_sid", missing(dst.keys, src.keys)},
		{"accounts", "account_sid", missing(dst.accounts, src.accounts)},
		{"service_providers", "service_provider_sid", missing(dst.sps, src.sps)},
	} {
		for _, sid := range d.sids {
			if err := write(d.table, sid, &res.Deleted, `DELETE FROM `+d.table+` WHERE `+d.column+` = $1 AND mirrored`, sid); err != nil {
				return err
			}
		}
	}
	// A root domain or a realm that moves from one mirrored row to another
	// (or a swap) must be let go by the first before the second can take
	// it (UNIQUE).
	releasedRoot, err := release(ctx, tx, dst.sps, src.sps, func(sp *jzSP) *string { return &sp.rootDomain },
		`UPDATE service_providers SET root_domain = NULL WHERE service_provider_sid = $1 AND mirrored`)
	if err != nil {
		return err
	}
	released, err := release(ctx, tx, dst.accounts, src.accounts, func(a *jzAccount) *string { return &a.realm },
		`UPDATE accounts SET sip_realm = NULL WHERE account_sid = $1 AND mirrored`)
	if err != nil {
		return err
	}

	// Inserts and updates, owners before dependents.
	err = upsert(src.sps, dst.sps, equal, releasedRoot, res, func(sid string, sp jzSP, counter *int) error {
		return write("service_providers", sid, counter, `INSERT INTO service_providers (service_provider_sid, name, root_domain, mirrored)
			VALUES ($1, $2, $3, true)
			ON CONFLICT (service_provider_sid) DO UPDATE SET name = EXCLUDED.name, root_domain = EXCLUDED.root_domain
			WHERE service_providers.mirrored`, sid, sp.name, nullIfEmpty(sp.rootDomain))
	})
	if err != nil {
		return err
	}
	err = upsert(src.accounts, dst.accounts, equal, released, res, func(sid string, a jzAccount, counter *int) error {
		return write("accounts", sid, counter, `INSERT INTO accounts (account_sid, service_provider_sid, name, sip_realm, mirrored)
			VALUES ($1, $2, $3, $4, true)
			ON CONFLICT (account_sid) DO UPDATE SET service_provider_sid = EXCLUDED.service_provider_sid,
				name = EXCLUDED.name, sip_realm = EXCLUDED.sip_realm WHERE accounts.mirrored`,
			sid, a.spSID, a.name, nullIfEmpty(a.realm))
	})
	if err != nil {
		return err
	}
	sameKey := func(old, k jzKey) bool {
		return old.hash == k.hash && old.spSID == k.spSID && old.accountSID == k.accountSID && sameTime(old.expiresAt, k.expiresAt)
	}
	err = upsert(src.keys, dst.keys, sameKey, nil, res, func(sid string, k jzKey, counter *int) error {
		return write("api_keys", sid, counter, `INSERT INTO api_keys (api_key_sid, token_hash, service_provider_sid, account_sid, expires_at, mirrored)
			VALUES ($1, $2, $3, $4, $5, true)
			ON CONFLICT (api_key_sid) DO UPDATE SET token_hash = EXCLUDED.token_hash,
				service_provider_sid = EXCLUDED.service_provider_sid, account_sid = EXCLUDED.account_sid,
				expires_at = EXCLUDED.expires_at WHERE api_keys.mirrored`,
			sid, k.hash[:], nullIfEmpty(k.spSID), nullIfEmpty(k.accountSID), k.expiresAt)
	})
	if err != nil {
		return err
	}
	return upsert(src.clients, dst.clients, equal, nil, res, func(sid string, c jzClient, counter *int) error {
		// jambonz's passwords are not copied: the column holds an
		// encrypted empty string, so reads show an empty (masked) password.
		return write("clients", sid, counter, `INSERT INTO clients (client_sid, account_sid, username, password, is_active,
				allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling, mirrored)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true)
			ON CONFLICT (client_sid) DO UPDATE SET account_sid = EXCLUDED.account_sid, username = EXCLUDED.username,
				is_active = EXCLUDED.is_active, allow_direct_app_calling = EXCLUDED.allow_direct_app_calling,
				allow_direct_queue_calling = EXCLUDED.allow_direct_queue_calling,
				allow_direct_user_calling = EXCLUDED.allow_direct_user_calling WHERE clients.mirrored`,
			sid, c.accountSID, c.username, j.db.sealer.seal("", passwordAAD(sid)), c.active, c.app, c.queue, c.user)
	})
}

// missing lists the sids the mirror has and jambonz no longer has.
func missing[T any](dst, src map[string]T) []string {
	var sids []string
	for sid := range dst {
		if _, ok := src[sid]; !ok {
			sids = append(sids, sid)
		}
	}
	return sids
}

// release sets the unique column of query to NULL on every mirrored row
// whose value (field) is about to change, and clears it in dst too; it
// returns the sids it released.
func release[T any](ctx context.Context, tx pgx.Tx, dst, src map[string]T, field func(*T) *string, query string) (map[string]bool, error) {
	released := map[string]bool{}
	for sid, old := range dst {
		n, ok := src[sid]
		if v := *field(&old); !ok || v == "" || v == *field(&n) {
			continue
		}
		if _, err := tx.Exec(ctx, query, sid); err != nil {
			return nil, err
		}
		*field(&old) = ""
		dst[sid] = old
		released[sid] = true
	}
	return released, nil
}

// upsert writes every row of src that dst lacks (counted as inserted) or
// holds otherwise (updated). A row whose only change was its release
// counts as updated.
func upsert[T any](src, dst map[string]T, same func(old, n T) bool, released map[string]bool, res *JambonzSyncResult, write func(sid string, n T, counter *int) error) error {
	for sid, n := range src {
		old, ok := dst[sid]
		if ok && same(old, n) {
			if released[sid] {
				res.Updated++ // the release was the whole change
			}
			continue
		}
		counter := &res.Inserted
		if ok {
			counter = &res.Updated
		}
		if err := write(sid, n, counter); err != nil {
			return err
		}
	}
	return nil
}

func equal[T comparable](a, b T) bool { return a == b }

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// lookupToken is db's fallback for a bearer token it does not know: one
// query of jambonz's api_keys, and when the token is there, a sync, so that
// the key (and its account, if new too) is mirrored before the caller reads
// again. Look-ups are rate-limited; a token MySQL does not know is
// remembered for one sync interval (the next sync would mirror it anyway).
// It reports whether the token is now mirrored.
func (j *Jambonz) lookupToken(ctx context.Context, token string) bool {
	if len(token) > 255 {
		return false // jambonz's tokens are CHAR(36)
	}
	h := tokenHash(token)
	now := time.Now()
	if _, ok := j.unknown.get(h, now); ok {
		return false
	}
	if !j.limiter.Allow() {
		return false
	}
	gen := j.unknown.generation()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	err := j.my.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE token = ?`, token).Scan(&n)
	if err != nil {
		j.log.Warn("jambonz mirror: token look-up failed", "err", err)
		return false
	}
	if n == 0 {
		j.unknown.put(h, struct{}{}, gen, now)
		return false
	}
	if _, err := j.Sync(ctx); err != nil {
		return false
	}
	return true
}

var driverLogOnce sync.Once

// slogDriverLogger routes go-sql-driver/mysql's log lines to debug level.
type slogDriverLogger struct{ log *slog.Logger }

func (l slogDriverLogger) Print(v ...any) { l.log.Debug("mysql driver: " + fmt.Sprint(v...)) }
