package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store/storetest"
)

const testKey = storetest.EncryptionKey

// openTestDB returns a migrated DB on a fresh database, and that
// database's URL (for a second DB, or raw SQL).
func openTestDB(t testing.TB) (*DB, string) {
	t.Helper()
	url := storetest.NewDatabase(t)
	db := openDB(t, url, testKey)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return db, url
}

// openDB opens another DB on url, closed when the test ends.
func openDB(t testing.TB, url, key string) *DB {
	t.Helper()
	db, err := Open(context.Background(), url, Options{Keys: Keys{Current: key}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}

// sqlExec runs raw SQL on the test database, bypassing DB and its caches.
func sqlExec(t *testing.T, db *DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func mustSP(t testing.TB, db *DB, name string) ServiceProvider {
	t.Helper()
	sp, err := db.CreateServiceProvider(context.Background(), ServiceProvider{Name: name})
	if err != nil {
		t.Fatalf("CreateServiceProvider(%q): %v", name, err)
	}
	return sp
}

func mustAccount(t *testing.T, db *DB, sp ServiceProvider, name, realm string) Account {
	t.Helper()
	a, err := db.CreateAccount(context.Background(), Account{Name: name, ServiceProviderSID: sp.SID, SIPRealm: realm})
	if err != nil {
		t.Fatalf("CreateAccount(%q, %q): %v", name, realm, err)
	}
	return a
}

func mustClient(t *testing.T, db *DB, a Account, username, password string) Client {
	t.Helper()
	c, err := db.CreateClient(context.Background(), Client{AccountSID: a.SID, Username: username, IsActive: true,
		AllowDirectAppCalling: true, AllowDirectQueueCalling: true, AllowDirectUserCalling: true}, password)
	if err != nil {
		t.Fatalf("CreateClient(%q): %v", username, err)
	}
	return c
}

func mustKey(t *testing.T, db *DB, k APIKey) (APIKey, string) {
	t.Helper()
	k, token, err := db.CreateAPIKey(context.Background(), k)
	if err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	return k, token
}

// wantErr checks that err wraps want (nil: no error).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: got error %v, want none", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: got error %v, want one wrapping %v", what, err, want)
	}
}

// eventually polls cond until it holds or 3 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 3s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const missingSID = "00000000-0000-4000-8000-000000000000"

func TestOpenRefusesEmptyEncryptionKey(t *testing.T) {
	_, err := Open(context.Background(), "postgres://127.0.0.1/x", Options{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "PRESENCEHUB_ENCRYPTION_KEY") {
		t.Fatalf("Open with an empty key: got %v, want ErrInvalid naming PRESENCEHUB_ENCRYPTION_KEY", err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	url := storetest.NewDatabase(t)
	db := openDB(t, url, testKey)
	ctx := context.Background()

	first, err := db.Migrate(ctx)
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if len(first) == 0 || first[0] != "0001_init" {
		t.Fatalf("first Migrate applied %v, want it to start with 0001_init", first)
	}
	second, err := db.Migrate(ctx)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(second) != 0 {
		t.Fatalf("second Migrate applied %v again, want nothing", second)
	}
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(first) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(first))
	}
}

func TestMigrateConcurrentlyAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	url := storetest.NewDatabase(t)
	const procs = 4
	var wg sync.WaitGroup
	results := make([][]string, procs)
	errs := make([]error, procs)
	for i := range procs {
		db := openDB(t, url, testKey) // one pool per "process"
		wg.Go(func() { results[i], errs[i] = db.Migrate(context.Background()) })
	}
	wg.Wait()
	total := 0
	for i := range procs {
		if errs[i] != nil {
			t.Errorf("Migrate %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	want, _ := openDB(t, url, testKey).Migrate(context.Background())
	if len(want) != 0 {
		t.Errorf("a later Migrate still applied %v", want)
	}
	if total == 0 {
		t.Fatalf("no Migrate call applied anything")
	}
	seen := map[string]int{}
	for _, r := range results {
		for _, v := range r {
			seen[v]++
		}
	}
	for v, n := range seen {
		if n != 1 {
			t.Errorf("migration %s applied %d times, want once", v, n)
		}
	}
}

func TestServiceProviderCRUD(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()

	b := mustSP(t, db, "  Bravo ")
	if !ValidSID(b.SID) {
		t.Errorf("generated sid %q is not a sid", b.SID)
	}
	if b.Name != "Bravo" {
		t.Errorf("name stored as %q, want it trimmed to %q", b.Name, "Bravo")
	}
	a := mustSP(t, db, "Alpha")

	got, err := db.ServiceProvider(ctx, strings.ToUpper(b.SID))
	if err != nil || got != b {
		t.Errorf("ServiceProvider(upper-cased sid) = %+v, %v; want %+v", got, err, b)
	}
	list, err := db.ServiceProviders(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "Alpha" || list[1].Name != "Bravo" {
		t.Errorf("ServiceProviders = %+v, %v; want Alpha then Bravo", list, err)
	}

	_, err = db.CreateServiceProvider(ctx, ServiceProvider{Name: "Alpha"})
	wantErr(t, "create with a duplicate name", err, ErrConflict)

	a.Description = "first"
	a.Name = "Alpha 2"
	wantErr(t, "UpdateServiceProvider", db.UpdateServiceProvider(ctx, a), nil)
	if got, _ := db.ServiceProvider(ctx, a.SID); got != a {
		t.Errorf("after update got %+v, want %+v", got, a)
	}
	wantErr(t, "update to another's name", db.UpdateServiceProvider(ctx, ServiceProvider{SID: a.SID, Name: "Bravo"}), ErrConflict)
	wantErr(t, "update of a missing sid", db.UpdateServiceProvider(ctx, ServiceProvider{SID: missingSID, Name: "x"}), ErrNotFound)

	acct := mustAccount(t, db, a, "acct", "")
	err = db.DeleteServiceProvider(ctx, a.SID)
	wantErr(t, "delete a provider with accounts", err, ErrConflict)
	wantErr(t, "DeleteAccount", db.DeleteAccount(ctx, acct.SID), nil)
	wantErr(t, "delete a provider without accounts", db.DeleteServiceProvider(ctx, a.SID), nil)
	_, err = db.ServiceProvider(ctx, a.SID)
	wantErr(t, "get a deleted provider", err, ErrNotFound)
	wantErr(t, "delete twice", db.DeleteServiceProvider(ctx, a.SID), ErrNotFound)
}

func TestAccountCRUDAndRealms(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp1, sp2 := mustSP(t, db, "sp1"), mustSP(t, db, "sp2")

	a := mustAccount(t, db, sp1, "Zulu", "  SIP.Example.COM ")
	if a.SIPRealm != "sip.example.com" {
		t.Errorf("realm stored as %q, want lower-cased and trimmed sip.example.com", a.SIPRealm)
	}
	b := mustAccount(t, db, sp2, "Alpha", "")
	c := mustAccount(t, db, sp1, "Mike", "") // a second account without realm is fine

	got, err := db.Account(ctx, a.SID)
	if err != nil || got != a {
		t.Errorf("Account = %+v, %v; want %+v", got, err, a)
	}
	got, err = db.AccountByRealm(ctx, "Sip.EXAMPLE.com")
	if err != nil || got.SID != a.SID {
		t.Errorf("AccountByRealm(mixed case) = %+v, %v; want account %s", got, err, a.SID)
	}
	_, err = db.AccountByRealm(ctx, "other.example.com")
	wantErr(t, "AccountByRealm of an unused realm", err, ErrNotFound)
	_, err = db.AccountByRealm(ctx, "")
	wantErr(t, "AccountByRealm(\"\")", err, ErrNotFound)

	names := func(as []Account) (s []string) {
		for _, a := range as {
			s = append(s, a.Name)
		}
		return s
	}
	all, err := db.Accounts(ctx, "")
	if got, want := fmt.Sprint(names(all)), "[Alpha Mike Zulu]"; err != nil || got != want {
		t.Errorf("Accounts(\"\") = %s, %v; want %s", got, err, want)
	}
	of1, err := db.Accounts(ctx, sp1.SID)
	if got, want := fmt.Sprint(names(of1)), "[Mike Zulu]"; err != nil || got != want {
		t.Errorf("Accounts(sp1) = %s, %v; want %s", got, err, want)
	}

	_, err = db.CreateAccount(ctx, Account{Name: "dup", ServiceProviderSID: sp2.SID, SIPRealm: "SIP.EXAMPLE.COM"})
	wantErr(t, "realm used by another account, other case", err, ErrConflict)
	_, err = db.CreateAccount(ctx, Account{Name: "x", ServiceProviderSID: missingSID})
	wantErr(t, "unknown service provider", err, ErrInvalid)
	if err != nil && !strings.Contains(err.Error(), "unknown service provider") {
		t.Errorf("unknown service provider: message %q does not say so", err)
	}

	b.SIPRealm = "B.example.com"
	b.ServiceProviderSID = sp1.SID
	b.Name = "Alpha 2"
	wantErr(t, "UpdateAccount", db.UpdateAccount(ctx, b), nil)
	got, _ = db.Account(ctx, b.SID)
	if want := (Account{SID: b.SID, Name: "Alpha 2", ServiceProviderSID: sp1.SID, SIPRealm: "b.example.com"}); got != want {
		t.Errorf("after update Account = %+v, want %+v (the cache must not hide local writes)", got, want)
	}
	wantErr(t, "update to a taken realm", db.UpdateAccount(ctx, Account{SID: c.SID, Name: "Mike", ServiceProviderSID: sp1.SID, SIPRealm: "sip.example.com"}), ErrConflict)
	wantErr(t, "update with a bad realm", db.UpdateAccount(ctx, Account{SID: c.SID, Name: "Mike", ServiceProviderSID: sp1.SID, SIPRealm: "a b"}), ErrInvalid)
	wantErr(t, "update of a missing account", db.UpdateAccount(ctx, Account{SID: missingSID, Name: "x", ServiceProviderSID: sp1.SID}), ErrNotFound)

	wantErr(t, "DeleteAccount", db.DeleteAccount(ctx, b.SID), nil)
	_, err = db.Account(ctx, b.SID)
	wantErr(t, "Account after delete (the cache must not hide it)", err, ErrNotFound)
	wantErr(t, "DeleteAccount twice", db.DeleteAccount(ctx, b.SID), ErrNotFound)
}

func TestRealmValidation(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"  ", "", true},
		{"Example.COM", "example.com", true},
		{" sip.acme-corp.example.com\t", "sip.acme-corp.example.com", true},
		{"localhost", "localhost", true},
		{"10.0.0.1", "10.0.0.1", true},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com", true},
		{strings.Repeat("a", 64) + ".com", "", false},
		{strings.Repeat("abcdefghi.", 12) + "example.com", strings.Repeat("abcdefghi.", 12) + "example.com", true}, // 131
		{strings.Repeat("abcdefghi.", 13) + "com", "", false},                                                      // 133: above jambonz's sip_realm column (132)
		{"a..b", "", false},
		{".example.com", "", false},
		{"example.com.", "", false},
		{"-a.example.com", "", false},
		{"a-.example.com", "", false},
		{"a b.com", "", false},
		{"user@example.com", "", false},
		{"exa_mple.com", "", false},
		{"exämple.com", "", false},
		{"example.com:5060", "", false},
	}
	for _, tt := range tests {
		got, err := normalizeRealm(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("normalizeRealm(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if !tt.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("normalizeRealm(%q) = %q, %v; want ErrInvalid", tt.in, got, err)
		}
	}
}

func TestAccountIsCachedAndNotificationsRefreshIt(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	a := mustAccount(t, db, mustSP(t, db, "sp"), "before", "")
	if _, err := db.Account(ctx, a.SID); err != nil {
		t.Fatal(err)
	}

	// Another process renames it: without notifications the cached row is
	// served (that is what spares the database on every request).
	sqlExec(t, db, `UPDATE accounts SET name = 'after' WHERE account_sid = $1`, a.SID)
	if got, _ := db.Account(ctx, a.SID); got.Name != "before" {
		t.Fatalf("Account right after an outside change = %q; want the cached %q (is the cache there?)", got.Name, "before")
	}

	// With WatchClients running, the notification clears it.
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- db.WatchClients(wctx, func(string, map[string]hub.Flags) {}) }()
	defer func() { cancel(); <-done }()
	waitListening(t, db)
	// The watcher clears the cache once it has loaded (the database shows
	// the connection idle a moment before the watcher has the rows).
	eventually(t, `Account never showed "after": the watcher's start did not clear the cache`, func() bool {
		got, _ := db.Account(ctx, a.SID)
		return got.Name == "after"
	})
	sqlExec(t, db, `UPDATE accounts SET name = 'after again' WHERE account_sid = $1`, a.SID)
	eventually(t, "Account never showed the outside change", func() bool {
		got, _ := db.Account(ctx, a.SID)
		return got.Name == "after again"
	})
}

// waitListening waits until a listener connection on db's database is idle
// after loading clients: it has issued LISTEN (before loading) and waits for
// notifications.
func waitListening(t *testing.T, db *DB) {
	t.Helper()
	eventually(t, "no listener connection", func() bool {
		var n int
		err := db.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1
			  AND state = 'idle' AND query LIKE 'SELECT a.account_sid%'`,
			listenerAppName).Scan(&n)
		return err == nil && n > 0
	})
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	acct := mustAccount(t, db, sp, "acct", "taken.example.com")
	mustClient(t, db, acct, "alice", "pw")

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"service provider: malformed sid", func() error { _, err := db.ServiceProvider(ctx, "nope"); return err }, ErrInvalid},
		{"service provider: missing", func() error { _, err := db.ServiceProvider(ctx, missingSID); return err }, ErrNotFound},
		{"service provider: no name", func() error { _, err := db.CreateServiceProvider(ctx, ServiceProvider{Name: " "}); return err }, ErrInvalid},
		{"service provider: duplicate sid", func() error {
			_, err := db.CreateServiceProvider(ctx, ServiceProvider{SID: sp.SID, Name: "other"})
			return err
		}, ErrConflict},
		{"service provider: delete malformed", func() error { return db.DeleteServiceProvider(ctx, "x") }, ErrInvalid},
		{"account: malformed sid", func() error { _, err := db.Account(ctx, "1234"); return err }, ErrInvalid},
		{"account: missing", func() error { _, err := db.Account(ctx, missingSID); return err }, ErrNotFound},
		{"account: no name", func() error {
			_, err := db.CreateAccount(ctx, Account{ServiceProviderSID: sp.SID})
			return err
		}, ErrInvalid},
		{"account: no provider", func() error { _, err := db.CreateAccount(ctx, Account{Name: "x"}); return err }, ErrInvalid},
		{"account: malformed provider", func() error {
			_, err := db.CreateAccount(ctx, Account{Name: "x", ServiceProviderSID: "sp"})
			return err
		}, ErrInvalid},
		{"account: bad realm", func() error {
			_, err := db.CreateAccount(ctx, Account{Name: "x", ServiceProviderSID: sp.SID, SIPRealm: "no spaces.com"})
			return err
		}, ErrInvalid},
		{"account: realm taken", func() error {
			_, err := db.CreateAccount(ctx, Account{Name: "x", ServiceProviderSID: sp.SID, SIPRealm: "Taken.Example.Com"})
			return err
		}, ErrConflict},
		{"accounts: malformed provider filter", func() error { _, err := db.Accounts(ctx, "x"); return err }, ErrInvalid},
		{"client: missing", func() error { _, err := db.Client(ctx, missingSID); return err }, ErrNotFound},
		{"client: malformed sid", func() error { _, err := db.Client(ctx, "c"); return err }, ErrInvalid},
		{"client: unknown account", func() error {
			_, err := db.CreateClient(ctx, Client{AccountSID: missingSID, Username: "bob"}, "pw")
			return err
		}, ErrInvalid},
		{"client: no account", func() error { _, err := db.CreateClient(ctx, Client{Username: "bob"}, "pw"); return err }, ErrInvalid},
		{"client: duplicate username", func() error {
			_, err := db.CreateClient(ctx, Client{AccountSID: acct.SID, Username: "ALICE"}, "pw")
			return err
		}, ErrConflict},
		{"client: update missing", func() error { return db.UpdateClient(ctx, missingSID, ClientUpdate{}) }, ErrNotFound},
		{"client: delete missing", func() error { return db.DeleteClient(ctx, missingSID) }, ErrNotFound},
		{"clients: malformed filter", func() error { _, err := db.Clients(ctx, ClientFilter{AccountSID: "a"}); return err }, ErrInvalid},
		{"api key: missing", func() error { _, err := db.APIKey(ctx, missingSID); return err }, ErrNotFound},
		{"api key: delete missing", func() error { return db.DeleteAPIKey(ctx, missingSID) }, ErrNotFound},
		{"api key: unknown account", func() error {
			_, _, err := db.CreateAPIKey(ctx, APIKey{AccountSID: missingSID})
			return err
		}, ErrInvalid},
		{"api key: unknown provider", func() error {
			_, _, err := db.CreateAPIKey(ctx, APIKey{ServiceProviderSID: missingSID})
			return err
		}, ErrInvalid},
		{"api keys: unknown scope", func() error { _, err := db.APIKeys(ctx, Principal{Scope: "root"}); return err }, ErrInvalid},
		{"session: unknown key", func() error {
			_, err := db.CreateSession(ctx, Principal{KeySID: missingSID}, time.Hour)
			return err
		}, ErrInvalid},
		{"session: no lifetime", func() error {
			_, err := db.CreateSession(ctx, Principal{KeySID: missingSID}, 0)
			return err
		}, ErrInvalid},
		{"authenticate: empty token", func() error { _, err := db.Authenticate(ctx, ""); return err }, ErrUnauthorized},
		{"session: empty token", func() error { _, err := db.Session(ctx, ""); return err }, ErrUnauthorized},
	}
	for _, tt := range tests {
		err := tt.call()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want an error wrapping %v", tt.name, err, tt.want)
			continue
		}
		if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] {
			t.Errorf("%s: error %q should start lower-case", tt.name, msg)
		}
	}
}

func TestTTLCacheIgnoresPutsThatRacedWithAnInvalidation(t *testing.T) {
	c := newTTLCache[string, int](time.Minute, 10)
	now := time.Now()
	gen := c.generation() // a reader starts its database read…
	c.remove("k")         // …a delete invalidates meanwhile…
	c.put("k", 1, gen, now)
	if v, ok := c.get("k", now); ok {
		t.Fatalf("get after a stale put = %d; want nothing cached", v)
	}
	c.put("k", 2, c.generation(), now)
	if v, ok := c.get("k", now); !ok || v != 2 {
		t.Fatalf("get = %d, %v; want 2, true", v, ok)
	}
	if _, ok := c.get("k", now.Add(time.Minute)); ok {
		t.Fatalf("entry still served after its TTL")
	}
	for i := range 20 { // more than max: memory stays bounded
		c.put(fmt.Sprint(i), i, c.generation(), now)
	}
	if len(c.m) > 10 {
		t.Fatalf("cache holds %d entries, more than its max 10", len(c.m))
	}
}
