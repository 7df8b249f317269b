package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store/storetest"
)

// recorder keeps what WatchClients told it, as the hub would.
type recorder struct {
	mu    sync.Mutex
	realm map[string]map[string]hub.Flags
	owner map[string]string // realm → account sid, as WatchAccounts tells it
	calls int
}

// accountFn is fn for WatchAccounts: it also records who holds each realm.
func (r *recorder) accountFn(realm, accountSID string, clients map[string]hub.Flags) {
	r.mu.Lock()
	if r.owner == nil {
		r.owner = map[string]string{}
	}
	if accountSID == "" {
		delete(r.owner, realm)
	} else {
		r.owner[realm] = accountSID
	}
	r.mu.Unlock()
	r.fn(realm, clients)
}

func (r *recorder) fn(realm string, clients map[string]hub.Flags) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if clients == nil {
		delete(r.realm, realm)
		return
	}
	r.realm[realm] = maps.Clone(clients)
}

// String renders the state deterministically: realm{user:app/queue/user …} …
func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var realms []string
	for realm, clients := range r.realm {
		var users []string
		for u, f := range clients {
			users = append(users, fmt.Sprintf("%s:%d%d%d", u, bit(f.App), bit(f.Queue), bit(f.User)))
		}
		sort.Strings(users)
		realms = append(realms, realm+"{"+strings.Join(users, " ")+"}")
	}
	sort.Strings(realms)
	return strings.Join(realms, " ")
}

func (r *recorder) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// waitState waits until the recorded state renders as want.
func (r *recorder) waitState(t *testing.T, step, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := r.String()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after 3s WatchClients has told\n  %s\nwant\n  %s", step, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchClients(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	a := mustAccount(t, db, sp, "a", "A.example.com")
	b := mustAccount(t, db, sp, "b", "") // no realm: nothing to tell
	c := mustAccount(t, db, sp, "c", "c.example.com")
	mustClient(t, db, a, "Alice", "pw")
	bob, err := db.CreateClient(ctx, Client{AccountSID: a.SID, Username: "bob", AllowDirectQueueCalling: true}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	mustClient(t, db, b, "carol", "pw")

	rec := &recorder{realm: map[string]map[string]hub.Flags{}}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- db.WatchClients(wctx, rec.fn) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchClients returned %v after cancel, want context.Canceled", err)
		}
	}()

	rec.waitState(t, "initial load", "a.example.com{alice:111 bob:010} c.example.com{}")
	waitListening(t, db)
	if n := rec.callCount(); n != 2 {
		t.Errorf("initial load made %d calls, want one per account with a realm (2)", n)
	}

	// Changes are made by another process: only notifications can tell.
	other := openDB(t, url, testKey)
	dave, err := other.CreateClient(ctx, Client{AccountSID: a.SID, Username: "DAVE", AllowDirectUserCalling: true}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	rec.waitState(t, "client created", "a.example.com{alice:111 bob:010 dave:001} c.example.com{}")

	tr, f := true, false
	wantErr(t, "UpdateClient", other.UpdateClient(ctx, bob.SID, ClientUpdate{AllowDirectAppCalling: &tr, IsActive: &f}), nil)
	rec.waitState(t, "client updated (and inactive: still listed)", "a.example.com{alice:111 bob:110 dave:001} c.example.com{}")

	wantErr(t, "DeleteClient", other.DeleteClient(ctx, dave.SID), nil)
	rec.waitState(t, "client deleted", "a.example.com{alice:111 bob:110} c.example.com{}")

	a.SIPRealm = "a2.example.com"
	wantErr(t, "UpdateAccount", other.UpdateAccount(ctx, a), nil)
	rec.waitState(t, "realm changed", "a2.example.com{alice:111 bob:110} c.example.com{}")

	b.SIPRealm = "b.example.com"
	wantErr(t, "UpdateAccount", other.UpdateAccount(ctx, b), nil)
	rec.waitState(t, "realm set", "a2.example.com{alice:111 bob:110} b.example.com{carol:111} c.example.com{}")

	wantErr(t, "DeleteAccount", other.DeleteAccount(ctx, c.SID), nil)
	rec.waitState(t, "account deleted", "a2.example.com{alice:111 bob:110} b.example.com{carol:111}")

	// One transaction hands a's realm to b. Whatever order the two
	// notifications are handled in, a2 must end up with b's clients.
	tx, err := other.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		fmt.Sprintf(`UPDATE accounts SET sip_realm = 'x.example.com' WHERE account_sid = '%s'`, a.SID),
		fmt.Sprintf(`UPDATE accounts SET sip_realm = 'a2.example.com' WHERE account_sid = '%s'`, b.SID),
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitState(t, "realm handed over", "a2.example.com{carol:111} x.example.com{alice:111 bob:110}")

	// The listener's connection dies: WatchClients reconnects, reloads
	// everything, and goes on following changes.
	callsBefore := rec.callCount()
	var killed bool
	err = other.pool.QueryRow(ctx, `SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminate the listener: %v, %v", killed, err)
	}
	eventually(t, "no reload after the listener's connection was killed", func() bool { return rec.callCount() >= callsBefore+2 })
	waitListening(t, db)
	mustClient(t, other, b, "erin", "pw")
	rec.waitState(t, "change after reconnect", "a2.example.com{carol:111 erin:111} x.example.com{alice:111 bob:110}")
}

func TestWatchClientsFailsOnAMissingSchema(t *testing.T) {
	t.Parallel()
	db := openDB(t, storetest.NewDatabase(t), testKey) // not migrated
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := db.WatchClients(ctx, func(string, map[string]hub.Flags) {})
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WatchClients without tables returned %v; want an immediate error, not retries until the deadline", err)
	}
	if !strings.Contains(err.Error(), "accounts") {
		t.Errorf("error %q should name the missing table", err)
	}
}

// A transaction can move a realm from one account to another; the two
// notifications may be handled in either order (a reload can also see both
// changes at once). The realm must end up with its new owner's clients, and
// fn must never be told that nobody holds it: the new holder may already
// have claimed it (a stream subscribe reads the committed state before the
// watcher does), and such a release would revoke its subscriptions.
func TestWatcherRealmHandOverInEitherOrder(t *testing.T) {
	aClients := map[string]hub.Flags{"alice": {App: true}}
	bClients := map[string]hub.Flags{"bob": {User: true}}
	for _, order := range []string{"old owner first", "new owner first"} {
		rec := &recorder{realm: map[string]map[string]hub.Flags{}}
		var released []string
		fn := func(realm, sid string, clients map[string]hub.Flags) {
			if sid == "" {
				released = append(released, realm)
			}
			rec.accountFn(realm, sid, clients)
		}
		w := &watcher{fn: fn, realmOf: map[string]string{}, ownerOf: map[string]string{}}
		w.replaceAll(map[string]accountClients{
			"a": {realm: "r.example.com", clients: aClients},
			"b": {realm: "b.example.com", clients: bClients},
		})
		// a moves to x.example.com, b takes r.example.com.
		// The database holds the moved state whenever a reload runs: b
		// holds r.example.com, and nobody holds b.example.com any more.
		a := func() { w.apply("a", accountClients{realm: "x.example.com", clients: aClients}, "b") }
		b := func() { w.apply("b", accountClients{realm: "r.example.com", clients: bClients}, "") }
		if order == "old owner first" {
			a()
			b()
		} else {
			b()
			a()
		}
		if got, want := rec.String(), "r.example.com{bob:001} x.example.com{alice:100}"; got != want {
			t.Errorf("%s: fn was left with %s, want %s", order, got, want)
		}
		if got, want := fmt.Sprint(rec.owner), "map[r.example.com:b x.example.com:a]"; got != want {
			t.Errorf("%s: owners %s, want %s", order, got, want)
		}
		if fmt.Sprint(released) != "[b.example.com]" {
			t.Errorf("%s: fn was told nobody holds %v, want only b.example.com (r.example.com changed hands)", order, released)
		}
	}
}

func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}
