package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/presencehub/presencehub/hub"
)

// Notification channels fed by the triggers of migrations/0001_init.sql.
const (
	channelAccount = "presencehub_account" // payload: account_sid
	channelAuth    = "presencehub_auth"    // payload: unused
)

// listenerAppName marks the listener's connection in pg_stat_activity.
const listenerAppName = "presencehub-listener"

// Reconnect backoff of WatchClients.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 10 * time.Second
)

// WatchClients keeps fn told of every account's SIP clients, keyed by
// realm. It loads every account that has a SIP realm and calls fn(realm,
// clients) once per account, with clients keyed by hub.Fold(username)
// (inactive clients included). Then it follows changes: LISTEN on a dedicated
// connection, fed by triggers on accounts and clients; each notification
// reloads that account and calls fn again. An account that loses its realm
// (changed, cleared or deleted) gets fn(oldRealm, nil) first.
//
// The same notifications keep the caches of Account, Authenticate and
// Session current across processes.
//
// When the connection is lost it reconnects with backoff, reloads
// everything (notifications sent meanwhile are lost) and calls fn for every
// account again. fn runs on WatchClients' goroutine; it should be quick.
// WatchClients returns ctx.Err() when ctx is done, or an error that retrying
// cannot fix (such as a missing table or bad credentials).
func (db *DB) WatchClients(ctx context.Context, fn func(realm string, clients map[string]hub.Flags)) error {
	return db.WatchAccounts(ctx, func(realm, _ string, clients map[string]hub.Flags) { fn(realm, clients) })
}

// WatchAccounts is WatchClients that also says which account holds each
// realm: fn(realm, accountSID, clients) for an account that has the realm,
// fn(realm, "", nil) when no account holds it any more.
func (db *DB) WatchAccounts(ctx context.Context, fn func(realm, accountSID string, clients map[string]hub.Flags)) error {
	w := &watcher{db: db, fn: fn, realmOf: map[string]string{}, ownerOf: map[string]string{}}
	backoff := watchBackoffMin
	for {
		loaded, err := w.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) {
			return fmt.Errorf("watch clients: %w", err)
		}
		if loaded {
			backoff = watchBackoffMin // it worked for a while: start over gently
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// permanent reports whether err will not go away by reconnecting: the
// server understood us and said no (wrong schema, credentials, database).
func permanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "42", // syntax error or access rule violation: undefined table, permissions
		"28", // invalid authorization specification
		"3D": // invalid catalog name: no such database
		return true
	}
	return false
}

// watcher is the state of one WatchClients call.
type watcher struct {
	db *DB
	fn func(realm, accountSID string, clients map[string]hub.Flags)
	// What fn was last told: account sid → realm, and realm → account sid.
	// ownerOf keeps fn(realm, nil) from wiping a realm that another account
	// has just taken over (both notifications arrive, in either order).
	realmOf map[string]string
	ownerOf map[string]string
}

// accountClients is one account's realm and clients as loaded.
type accountClients struct {
	realm   string
	clients map[string]hub.Flags
}

// run connects, listens, loads everything, and then follows notifications
// until the connection fails or ctx is done. loaded reports whether the
// full load succeeded.
func (w *watcher) run(ctx context.Context) (loaded bool, err error) {
	cfg := w.db.pool.Config().ConnConfig
	cfg.RuntimeParams["application_name"] = listenerAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(c)
	}()

	// LISTEN before loading: a change committed after the load's snapshot
	// is then sure to be notified. A change before it is notified too, and
	// merely reloads an account that is already current.
	if _, err := conn.Exec(ctx, "LISTEN "+channelAccount+"; LISTEN "+channelAuth); err != nil {
		return false, err
	}
	all, err := loadClients(ctx, conn, "")
	if err != nil {
		return false, err
	}
	// Whatever the caches hold may predate a notification we missed.
	w.db.accounts.clear()
	w.db.invalidateAuth()
	w.replaceAll(all)

	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		// Gather the notifications that are already here, so a burst of
		// changes to one account costs one reload.
		pending := map[string]bool{}
		auth := false
		for n != nil {
			switch n.Channel {
			case channelAccount:
				pending[n.Payload] = true
			case channelAuth:
				auth = true
			}
			n = nextBuffered(conn)
		}
		if auth {
			w.db.invalidateAuth()
		}
		for sid := range pending {
			w.db.accounts.remove(sid)
			one, err := loadClients(ctx, conn, sid)
			if err != nil {
				return true, err
			}
			var heldBy string
			if old, ok := w.realmOf[sid]; ok && old != one[sid].realm {
				heldBy, err = realmHolder(ctx, conn, old)
				if err != nil {
					return true, err
				}
			}
			w.apply(sid, one[sid], heldBy)
		}
	}
}

// realmHolder returns the account that holds realm now ("" for none).
func realmHolder(ctx context.Context, conn *pgx.Conn, realm string) (string, error) {
	var sid string
	err := conn.QueryRow(ctx, `SELECT account_sid::text FROM accounts WHERE sip_realm = $1`, realm).Scan(&sid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return sid, err
}

// nextBuffered returns a notification that the connection has already
// received, or nil. It does not wait: pgx answers an already-cancelled
// context with a buffered notification, else at once with an error and
// without touching the connection.
func nextBuffered(conn *pgx.Conn) *pgconn.Notification {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	n, _ := conn.WaitForNotification(done)
	return n
}

// loadClients loads the realm and clients of one account, or of every
// account when accountSID is "". Accounts without a realm are left out: no
// device can register to them.
func loadClients(ctx context.Context, conn *pgx.Conn, accountSID string) (map[string]accountClients, error) {
	rows, _ := conn.Query(ctx, `SELECT a.account_sid::text, a.sip_realm, c.username,
			c.allow_direct_app_calling, c.allow_direct_queue_calling, c.allow_direct_user_calling
		FROM accounts a LEFT JOIN clients c ON c.account_sid = a.account_sid
		WHERE a.sip_realm IS NOT NULL AND ($1::uuid IS NULL OR a.account_sid = $1)`, nullIfEmpty(accountSID))
	out := map[string]accountClients{}
	var sid, realm string
	var username *string
	var app, queue, user *bool
	_, err := pgx.ForEachRow(rows, []any{&sid, &realm, &username, &app, &queue, &user}, func() error {
		ac, ok := out[sid]
		if !ok {
			ac = accountClients{realm: realm, clients: map[string]hub.Flags{}}
			out[sid] = ac
		}
		if username != nil { // LEFT JOIN: an account without clients
			ac.clients[hub.Fold(*username)] = hub.Flags{App: *app, Queue: *queue, User: *user}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// replaceAll tells fn the complete state after a (re)load: first the realms
// that no longer belong to anyone, then every account.
func (w *watcher) replaceAll(all map[string]accountClients) {
	for sid, realm := range w.realmOf {
		if ac, ok := all[sid]; !ok || ac.realm != realm {
			w.drop(sid)
		}
	}
	for sid, ac := range all {
		w.set(sid, ac)
	}
}

// apply tells fn about one reloaded account; ac.realm is "" when the account
// is gone or has no realm. heldBy is the account that holds sid's old realm
// now, when it changed: if another account took it over, fn is not told
// that nobody holds it, because that other account's notification (or a
// stream subscribe that already read the new state) claims it; a release in
// between would revoke the new holder's fresh subscriptions.
func (w *watcher) apply(sid string, ac accountClients, heldBy string) {
	if old, ok := w.realmOf[sid]; ok && old != ac.realm {
		if heldBy != "" && heldBy != sid {
			delete(w.realmOf, sid)
			if w.ownerOf[old] == sid {
				delete(w.ownerOf, old)
			}
		} else {
			w.drop(sid)
		}
	}
	if ac.realm != "" {
		w.set(sid, ac)
	}
}

func (w *watcher) set(sid string, ac accountClients) {
	w.realmOf[sid] = ac.realm
	w.ownerOf[ac.realm] = sid
	w.fn(ac.realm, sid, ac.clients)
}

// drop forgets sid's realm and clears it in fn, unless another account has
// taken the realm over meanwhile.
func (w *watcher) drop(sid string) {
	realm := w.realmOf[sid]
	delete(w.realmOf, sid)
	if w.ownerOf[realm] != sid {
		return
	}
	delete(w.ownerOf, realm)
	w.fn(realm, "", nil)
}
