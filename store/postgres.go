package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is the PostgreSQL repository: service providers, accounts, API keys,
// SIP clients and dashboard sessions. It is safe for concurrent use.
//
// Account, Authenticate and Session are on every request's path, so they are
// served from short-lived in-memory caches. A write through this DB clears
// them at once; a write by another process clears them when the notification
// arrives (only while WatchClients runs) and otherwise within the caches' TTL.
type DB struct {
	pool   *pgxpool.Pool
	sealer *sealer
	log    *slog.Logger
	// undecryptable holds the sids of clients whose password did not
	// decrypt and was logged (once per client and process).
	undecryptable sync.Map
	// decryptFailures counts reads of a client whose password did not
	// decrypt (presencehub_decrypt_failures_total).
	decryptFailures atomic.Uint64

	accounts *ttlCache[string, Account]
	keys     *ttlCache[[32]byte, authEntry] // by token hash
	sessions *ttlCache[[32]byte, authEntry] // by session token hash

	// tokenFallback, when set (by OpenJambonz), is asked about a bearer
	// token the database does not know; true means it is there now.
	tokenFallback atomic.Pointer[func(ctx context.Context, token string) bool]

	// authChanged is closed (and replaced) whenever cached keys and
	// sessions are forgotten: see AuthChanged.
	authMu      sync.Mutex
	authChanged chan struct{}

	// last_used bookkeeping (see touch).
	touched  sync.Map // api_key_sid → *atomic.Int64 (unix nanoseconds of last enqueue)
	touchCh  chan string
	stop     context.CancelFunc
	done     chan struct{}
	closeOne sync.Once
}

// Cache lifetimes. Short, because another process's change reaches us only
// through NOTIFY while WatchClients runs; otherwise the TTL bounds staleness.
const (
	accountCacheTTL = 5 * time.Second
	authCacheTTL    = 5 * time.Second
	// Bounds memory when someone floods us with made-up tokens (they are
	// cached as unknown to spare the database).
	authCacheMax    = 100_000
	accountCacheMax = 100_000
	touchInterval   = time.Minute
)

// Keys are the encryption keys of SIP client passwords.
type Keys struct {
	// Current (PRESENCEHUB_ENCRYPTION_KEY) encrypts every password written
	// and reads those written with it: hex or base64 of at least 32 bytes
	// (ParseEncryptionKey). Required.
	Current string
	// Previous (PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS, same format) reads
	// rows written with the key used before a rotation.
	Previous string
	// Legacy (PRESENCEHUB_ENCRYPTION_KEY_LEGACY) is the secret of
	// presencehub before key ids, any string: it reads rows in that format.
	// Those rows are also tried with the Current and Previous strings.
	Legacy string
}

// Options are Open's settings besides the database URL.
type Options struct {
	Keys Keys
	// Logger gets what the DB reports on its own, such as a password that
	// does not decrypt (default slog.Default()).
	Logger *slog.Logger
}

// Open connects a pool to databaseURL. Connections are made lazily, so Open
// succeeds while the database is still starting; use Ping to check it. It
// fails (ErrInvalid) when opts.Keys are not keys of 256 bits or more.
func Open(ctx context.Context, databaseURL string, opts Options) (*DB, error) {
	s, err := newSealer(opts.Keys)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "presencehub"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	db := &DB{
		pool:     pool,
		sealer:   s,
		log:      log,
		accounts: newTTLCache[string, Account](accountCacheTTL, accountCacheMax),
		keys:     newTTLCache[[32]byte, authEntry](authCacheTTL, authCacheMax),
		sessions: newTTLCache[[32]byte, authEntry](authCacheTTL, authCacheMax),
		touchCh:  make(chan string, 1024),

		authChanged: make(chan struct{}),
		stop:        stop,
		done:        make(chan struct{}),
	}
	go db.touchLoop(bg)
	return db, nil
}

// Close stops background work and closes the pool. It is safe to call more
// than once.
func (db *DB) Close() {
	db.closeOne.Do(func() {
		db.stop()
		<-db.done
		db.pool.Close()
	})
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	return db.pool.Ping(ctx)
}

// invalidateAuth forgets every cached key and session, e.g. after a key was
// deleted: deletions are rare, and a precise index is not worth its upkeep.
func (db *DB) invalidateAuth() {
	db.keys.clear()
	db.sessions.clear()
	db.signalAuthChanged()
}

// AuthChanged returns a channel that is closed the next time API keys or
// sessions may have changed: a key or session deleted or changed by this
// process, or (while WatchClients runs) by any process, or the listener
// reconnecting. Holders of long-lived authorisations (stream connections)
// re-check them then. Take the channel before checking, so a change during
// the check is not missed.
func (db *DB) AuthChanged() <-chan struct{} {
	db.authMu.Lock()
	defer db.authMu.Unlock()
	return db.authChanged
}

func (db *DB) signalAuthChanged() {
	db.authMu.Lock()
	close(db.authChanged)
	db.authChanged = make(chan struct{})
	db.authMu.Unlock()
}
