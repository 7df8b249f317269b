package store

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store/storetest"
)

// jz inserts rows into a jambonz database the way jambonz's api-server does:
// sids and tokens are UUID v4 strings made by the application, tokens are
// stored in plaintext, booleans as 0/1.
type jz struct {
	t  *testing.T
	db *sql.DB
}

func (j jz) exec(q string, args ...any) {
	j.t.Helper()
	if _, err := j.db.Exec(q, args...); err != nil {
		j.t.Fatalf("mysql %s: %v", q, err)
	}
}

func (j jz) sp(name string) string {
	j.t.Helper()
	sid := newSID()
	j.exec(`INSERT INTO service_providers (service_provider_sid, name, root_domain) VALUES (?, ?, ?)`, sid, name, name+".example.com")
	return sid
}

func (j jz) account(spSID, name, realm string) string {
	j.t.Helper()
	sid := newSID()
	j.exec(`INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, webhook_secret) VALUES (?, ?, ?, ?, ?)`,
		sid, name, nullIfEmpty(realm), spSID, "wh_secret_"+sid[:8])
	return sid
}

func (j jz) key(accountSID, spSID string, expiresAt *time.Time) (sid, token string) {
	j.t.Helper()
	sid, token = newSID(), newSID()
	j.exec(`INSERT INTO api_keys (api_key_sid, token, account_sid, service_provider_sid, expires_at) VALUES (?, ?, ?, ?, ?)`,
		sid, token, nullIfEmpty(accountSID), nullIfEmpty(spSID), expiresAt)
	return sid, token
}

func (j jz) client(accountSID, username string) string {
	j.t.Helper()
	sid := newSID()
	j.exec(`INSERT INTO clients (client_sid, account_sid, username, password, is_active) VALUES (?, ?, ?, ?, 1)`,
		sid, accountSID, username, `{"iv":"00","content":"11"}`)
	return sid
}

// openJambonz returns a mirror of a fresh jambonz database into a fresh
// PostgreSQL database.
func openJambonz(t *testing.T, interval time.Duration) (*DB, *Jambonz, jz, string) {
	t.Helper()
	dsn, my := storetest.NewJambonzDatabase(t)
	db, _ := openTestDB(t)
	m, err := OpenJambonz(db, JambonzOptions{URL: dsn, SyncInterval: interval, LookupRate: 100})
	if err != nil {
		t.Fatalf("OpenJambonz: %v", err)
	}
	t.Cleanup(m.Close)
	return db, m, jz{t, my}, dsn
}

func mustSync(t *testing.T, m *Jambonz) JambonzSyncResult {
	t.Helper()
	res, err := m.Sync(context.Background())
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return res
}

func TestParseJambonzURL(t *testing.T) {
	tests := []struct {
		in                     string
		user, pass, addr, name string
		wantErr                bool
	}{
		{in: "mysql://jambones:p%40ss@db.local:3307/jambones", user: "jambones", pass: "p@ss", addr: "db.local:3307", name: "jambones"},
		{in: "mysql://root@10.0.0.5/jambones", user: "root", addr: "10.0.0.5:3306", name: "jambones"},
		{in: "jambones:secret@tcp(db:3306)/jambones", user: "jambones", pass: "secret", addr: "db:3306", name: "jambones"},
		{in: "mysql://root@db:3306/", wantErr: true},
		{in: "mysql:///jambones", wantErr: true},
		{in: "not a dsn", wantErr: true},
	}
	for _, tt := range tests {
		cfg, err := ParseJambonzURL(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseJambonzURL(%q) error = %v, want ErrInvalid", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseJambonzURL(%q): %v", tt.in, err)
			continue
		}
		if cfg.User != tt.user || cfg.Passwd != tt.pass || cfg.Addr != tt.addr || cfg.DBName != tt.name {
			t.Errorf("ParseJambonzURL(%q) = user %q pass %q addr %q db %q, want %q %q %q %q",
				tt.in, cfg.User, cfg.Passwd, cfg.Addr, cfg.DBName, tt.user, tt.pass, tt.addr, tt.name)
		}
		if !cfg.ParseTime || cfg.Loc != time.UTC || cfg.Params["time_zone"] != "'+00:00'" {
			t.Errorf("ParseJambonzURL(%q): times not read as UTC: parseTime %v loc %v params %v", tt.in, cfg.ParseTime, cfg.Loc, cfg.Params)
		}
	}
}

func TestJambonzMirror(t *testing.T) {
	ctx := context.Background()
	db, m, j, _ := openJambonz(t, time.Hour)

	spSID := j.sp("carrier")
	acct := j.account(spSID, "acme", "Acme.SIP.example.com")
	other := j.account(spSID, "globex", "globex.sip.example.com")
	inactive := j.account(spSID, "dormant", "dormant.sip.example.com")
	j.exec(`UPDATE accounts SET is_active = 0 WHERE account_sid = ?`, inactive)
	_, acctToken := j.key(acct, "", nil)
	_, spToken := j.key("", spSID, nil)
	_, adminToken := j.key("", "", nil)
	_, bothToken := j.key(acct, spSID, nil) // jambonz: service_provider scope
	_, inactiveToken := j.key(inactive, "", nil)
	past := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	_, expiredToken := j.key(acct, "", &past)
	alice := j.client(acct, "alice")
	j.client(inactive, "ghost")

	// presencehub's own rows: a sync must leave them alone.
	ownSP := mustSP(t, db, "own provider")
	ownAcct := mustAccount(t, db, ownSP, "own", "own.example.com")
	_, ownAdmin := mustKey(t, db, APIKey{})

	res := mustSync(t, m)
	if res.Inserted != 9 || res.Updated != 0 || res.Deleted != 0 {
		// 1 SP + 2 active accounts + 5 keys of active owners + 1 client
		t.Errorf("first sync = %+v, want 9 inserted", res)
	}

	tests := []struct {
		name, token, scope, sp, account string
		wantErr                         error
	}{
		{"account key", acctToken, ScopeAccount, spSID, acct, nil},
		{"service provider key", spToken, ScopeServiceProvider, spSID, "", nil},
		{"admin key", adminToken, ScopeAdmin, "", "", nil},
		{"key with both sids", bothToken, ScopeServiceProvider, spSID, "", nil},
		{"key of an inactive account", inactiveToken, "", "", "", ErrUnauthorized},
		{"expired key", expiredToken, "", "", "", ErrUnauthorized},
		{"presencehub's own admin key", ownAdmin, ScopeAdmin, "", "", nil},
	}
	for _, tt := range tests {
		p, err := db.Authenticate(ctx, tt.token)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: Authenticate error = %v, want %v", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p.Scope != tt.scope || p.ServiceProviderSID != tt.sp || p.AccountSID != tt.account {
			t.Errorf("%s: Authenticate = %+v, %v; want scope %s sp %s account %s", tt.name, p, err, tt.scope, tt.sp, tt.account)
		}
	}

	a, err := db.Account(ctx, acct)
	if err != nil || a.SIPRealm != "acme.sip.example.com" || a.Name != "acme" || a.ServiceProviderSID != spSID {
		t.Errorf("Account(acme) = %+v, %v; want the mirrored account with its realm lower-cased", a, err)
	}
	if _, err := db.Account(ctx, inactive); !errors.Is(err, ErrNotFound) {
		t.Errorf("Account(inactive) error = %v, want ErrNotFound", err)
	}
	c, err := db.Client(ctx, alice)
	if err != nil || c.Username != "alice" || c.AccountSID != acct || c.Password != "" {
		t.Errorf("Client(alice) = %+v, %v; want alice of acme without a password", c, err)
	}

	if res := mustSync(t, m); res.Changed() {
		t.Errorf("second sync with nothing changed = %+v, want no writes", res)
	}

	// Changes in jambonz: the realm moves to the other account, a key is
	// deleted, another expires, the client is renamed, an account is
	// deactivated (its keys and clients go with it).
	j.exec(`UPDATE accounts SET sip_realm = NULL WHERE account_sid = ?`, acct)
	j.exec(`UPDATE accounts SET sip_realm = 'acme.sip.example.com' WHERE account_sid = ?`, other)
	j.exec(`DELETE FROM api_keys WHERE token = ?`, spToken)
	soon := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
	j.exec(`UPDATE api_keys SET expires_at = ? WHERE token = ?`, soon, adminToken)
	j.exec(`UPDATE clients SET username = 'alicia' WHERE client_sid = ?`, alice)
	res = mustSync(t, m)
	if res.Deleted != 1 || res.Updated != 4 {
		t.Errorf("sync after changes = %+v, want 1 deleted and 4 updated", res)
	}
	if _, err := db.Authenticate(ctx, spToken); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("deleted key: Authenticate error = %v, want ErrUnauthorized", err)
	}
	if _, err := db.Authenticate(ctx, adminToken); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("expired key: Authenticate error = %v, want ErrUnauthorized", err)
	}
	if a, _ := db.Account(ctx, other); a.SIPRealm != "acme.sip.example.com" {
		t.Errorf("realm moved: Account(globex).SIPRealm = %q, want acme.sip.example.com", a.SIPRealm)
	}
	if a, _ := db.Account(ctx, acct); a.SIPRealm != "" {
		t.Errorf("realm moved: Account(acme).SIPRealm = %q, want none", a.SIPRealm)
	}
	if c, _ := db.Client(ctx, alice); c.Username != "alicia" {
		t.Errorf("renamed client: username = %q, want alicia", c.Username)
	}

	// Account deleted in jambonz (keys and clients first, as the api-server
	// must because of the foreign keys).
	j.exec(`DELETE FROM clients WHERE account_sid = ?`, acct)
	j.exec(`DELETE FROM api_keys WHERE account_sid = ?`, acct)
	j.exec(`DELETE FROM accounts WHERE account_sid = ?`, acct)
	mustSync(t, m)
	if _, err := db.Account(ctx, acct); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted account: Account error = %v, want ErrNotFound", err)
	}
	if _, err := db.Authenticate(ctx, acctToken); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("deleted account's key: Authenticate error = %v, want ErrUnauthorized", err)
	}

	// presencehub's own rows are untouched by all of it.
	if _, err := db.Account(ctx, ownAcct.SID); err != nil {
		t.Errorf("own account after syncs: %v", err)
	}
	if _, err := db.Authenticate(ctx, ownAdmin); err != nil {
		t.Errorf("own admin key after syncs: %v", err)
	}
}

func TestJambonzSkipsRowsItCannotMirror(t *testing.T) {
	db, m, j, _ := openJambonz(t, time.Hour)
	own := mustSP(t, db, "taken")
	mustAccount(t, db, own, "own", "taken.example.com")
	sp := j.sp("taken") // name used by presencehub's own provider
	sp2 := j.sp("fine")
	j.account(sp, "orphan", "orphan.example.com")         // its provider could not be mirrored
	clash := j.account(sp2, "clash", "taken.example.com") // realm of an own account
	j.exec(`INSERT INTO clients (client_sid, account_sid, username) VALUES (?, ?, NULL)`, newSID(), clash)
	j.client(clash, "bad@name")
	res := mustSync(t, m)
	if res.Skipped < 4 {
		t.Errorf("sync = %+v, want the SP, the realm clash and both bad clients skipped", res)
	}
	if _, err := db.ServiceProvider(context.Background(), sp2); err != nil {
		t.Errorf("the good provider was not mirrored: %v", err)
	}
}

func TestJambonzKeyCreatedInMySQLWorksOnFirstUse(t *testing.T) {
	ctx := context.Background()
	db, m, j, _ := openJambonz(t, time.Hour)
	mustSync(t, m)

	// Everything new at once: provider, account and key.
	sp := j.sp("late")
	acct := j.account(sp, "late", "late.example.com")
	_, token := j.key(acct, "", nil)
	p, err := db.Authenticate(ctx, token)
	if err != nil || p.Scope != ScopeAccount || p.AccountSID != acct {
		t.Fatalf("Authenticate(new jambonz key) = %+v, %v; want the account key at once", p, err)
	}

	// An unknown token is asked about once and then remembered as unknown
	// (until the next sync interval).
	bogus := newSID()
	if _, err := db.Authenticate(ctx, bogus); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Authenticate(unknown) error = %v, want ErrUnauthorized", err)
	}
	if _, ok := m.unknown.get(tokenHash(bogus), time.Now()); !ok {
		t.Errorf("unknown token not negative-cached")
	}
}

func TestJambonzLookupsAreRateLimited(t *testing.T) {
	ctx := context.Background()
	dsn, my := storetest.NewJambonzDatabase(t)
	db, _ := openTestDB(t)
	m, err := OpenJambonz(db, JambonzOptions{URL: dsn, SyncInterval: time.Hour, LookupRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	j := jz{t, my}
	mustSync(t, m)
	// The burst (1) is spent on a made-up token; a real one right after is
	// not looked up, so it waits for the rate or the next sync.
	db.Authenticate(ctx, newSID())
	_, token := j.key("", "", nil)
	if _, err := db.Authenticate(ctx, token); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Authenticate beyond the look-up rate: error = %v, want ErrUnauthorized", err)
	}
	mustSync(t, m)
	if _, err := db.Authenticate(ctx, token); err != nil {
		t.Errorf("Authenticate after the next sync: %v", err)
	}
}

func TestJambonzMySQLOutage(t *testing.T) {
	ctx := context.Background()
	srv := storetest.StartMySQL(t)
	dsn, my := storetest.NewJambonzDatabaseOn(t, srv.DSN)
	db, _ := openTestDB(t)
	m, err := OpenJambonz(db, JambonzOptions{URL: dsn, SyncInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	j := jz{t, my}
	sp := j.sp("sp")
	acct := j.account(sp, "a", "a.example.com")
	_, token := j.key(acct, "", nil)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first sync", func() bool { return m.Status().Synced })

	srv.Stop()
	eventually(t, "mirror marked stale", func() bool { return !m.Status().StaleSince.IsZero() })
	st := m.Status()
	if st.LastError == "" || !st.Synced || st.StaleSince.Before(st.LastSync) {
		t.Errorf("status while MySQL is away = %+v, want stale since after the last sync, with the error", st)
	}
	if p, err := db.Authenticate(ctx, token); err != nil || p.AccountSID != acct {
		t.Errorf("Authenticate while MySQL is away = %+v, %v; want the mirrored key to keep working", p, err)
	}
	if _, err := db.Account(ctx, acct); err != nil {
		t.Errorf("Account while MySQL is away: %v", err)
	}
	// An unknown token while MySQL is away: refused, not an error.
	if _, err := db.Authenticate(ctx, newSID()); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("unknown token while MySQL is away: error = %v, want ErrUnauthorized", err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mirror fresh again", func() bool { return m.Status().StaleSince.IsZero() })
	// The sync resumed: a change made now arrives.
	newAcct := j.account(sp, "b", "b.example.com")
	eventually(t, "new account mirrored after the outage", func() bool {
		_, err := db.Account(ctx, newAcct)
		return err == nil
	})
	if st := m.Status(); st.LastError != "" {
		t.Errorf("status after recovery = %+v, want no error", st)
	}
}
