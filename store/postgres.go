package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// Open connects a pool to databaseURL. Connections are made lazily, so Open
// succeeds while the database is still starting; use Ping to check it.
// encryptionKey (PRESENCEHUB_ENCRYPTION_KEY) encrypts SIP client passwords;
// it must not be empty, and must stay the same for stored passwords to be
// readable.
func Open(ctx context.Context, databaseURL, encryptionKey string) (*DB, error) {
	s, err := newSealer(encryptionKey)
	if err != nil {
		return nil, err
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

// --- errors ---

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

var errMalformedSID = newError(KindInvalid, "", "malformed sid")

// checkSID rejects sids that are not UUIDs before they reach the database
// (where they would fail as invalid_text_representation) and returns the
// canonical lower-case form, which the caches are keyed by.
func checkSID(sid string) (string, error) {
	if !ValidSID(sid) {
		return "", errMalformedSID
	}
	return strings.ToLower(sid), nil
}

// checkOptionalSID is checkSID for a reference that may be empty.
func checkOptionalSID(sid string) (string, error) {
	if sid == "" {
		return "", nil
	}
	return checkSID(sid)
}

// sidOrNew returns sid in canonical form, or a new one when it is empty.
func sidOrNew(sid string) (string, error) {
	if sid == "" {
		return newSID(), nil
	}
	return checkSID(sid)
}

// nullIfEmpty maps "" to SQL NULL for optional columns.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// normalizeRealm lower-cases and trims a SIP realm and checks that it looks
// like a host name (see normalizeDomain). "" (no realm) is allowed.
func normalizeRealm(realm string) (string, error) {
	return normalizeDomain("sip_realm", realm, MaxRealmLen)
}

// NormalizeRealm is the form in which a SIP realm is stored and compared:
// lower-cased and trimmed; ErrInvalid (field sip_realm) when it is not a
// host name.
func NormalizeRealm(realm string) (string, error) { return normalizeRealm(realm) }

// normalizeRootDomain is normalizeRealm for a service provider's
// root_domain (at most 128 characters, as jambonz's column).
func normalizeRootDomain(d string) (string, error) {
	return normalizeDomain("root_domain", d, MaxRootDomainLen)
}

// RealmUnder reports whether realm is rootDomain or a name under it
// (acme.sp.example is under sp.example; evilsp.example is not), comparing
// both as they are stored: lower-cased, trimmed, and only when both are
// valid host names (a trailing dot is not one). An empty rootDomain has
// nothing under it.
func RealmUnder(realm, rootDomain string) bool {
	r, err1 := normalizeRealm(realm)
	d, err2 := normalizeRootDomain(rootDomain)
	if err1 != nil || err2 != nil || r == "" || d == "" {
		return false
	}
	return r == d || strings.HasSuffix(r, "."+d)
}

// normalizeDomain lower-cases and trims a host name held in field and checks
// it: dot-separated labels of letters, digits and hyphens, 1–63 characters
// each, no label starting or ending with a hyphen, max characters at most.
// "" is allowed.
func normalizeDomain(field, name string, max int) (string, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return "", nil
	}
	bad := func(why string) (string, error) {
		return "", newError(KindInvalid, field, "%s %q is not a valid domain name (%s)", field, name, why)
	}
	if err := checkText(field, name, max, false); err != nil {
		return "", err
	}
	for _, label := range strings.Split(name, ".") {
		switch {
		case label == "":
			return bad("empty label")
		case len(label) > 63:
			return bad("label longer than 63 characters")
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad("label starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return bad("only letters, digits, hyphens and dots are allowed")
			}
		}
	}
	return name, nil
}

// checkText refuses what PostgreSQL would refuse (invalid UTF-8, NUL) or
// should not hold: control characters (line breaks and tabs allowed where
// multiline is true) and more than max characters.
func checkText(field, v string, max int, multiline bool) error {
	if !utf8.ValidString(v) {
		return newError(KindInvalid, field, "%s is not valid UTF-8", field)
	}
	n := 0
	for _, r := range v {
		n++
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			return newError(KindInvalid, field, "%s must not contain control characters (found U+%04X)", field, r)
		}
	}
	if n > max {
		return newError(KindInvalid, field, "%s is longer than %d characters", field, max)
	}
	return nil
}

// checkUsername enforces what a SIP user part can carry in our system: 1–64
// characters, no '@' (it would split the AOR "user@realm" wrongly), no
// whitespace or control characters.
func checkUsername(u string) error {
	switch n := utf8.RuneCountInString(u); {
	case u == "":
		return newError(KindInvalid, "username", "missing field username")
	case !utf8.ValidString(u):
		return newError(KindInvalid, "username", "username is not valid UTF-8")
	case n > 64:
		return newError(KindInvalid, "username", "username is longer than 64 characters")
	}
	for _, r := range u {
		switch {
		case r == '@':
			return newError(KindInvalid, "username", "username must not contain '@'")
		case unicode.IsSpace(r):
			return newError(KindInvalid, "username", "username must not contain whitespace")
		case unicode.IsControl(r):
			return newError(KindInvalid, "username", "username must not contain control characters")
		}
	}
	return nil
}

// --- caches ---

// ttlCache is a small map with per-entry expiry. Every invalidation bumps a
// generation, and put is ignored when the generation moved since the caller
// started its database read: otherwise a read racing with a delete could put
// back what the delete just removed.
type ttlCache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu  sync.RWMutex
	gen uint64
	m   map[K]cacheEntry[V]
}

type cacheEntry[V any] struct {
	v     V
	until time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, max: max, m: make(map[K]cacheEntry[V])}
}

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// generation is read before the database read whose result will be put.
func (c *ttlCache[K, V]) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *ttlCache[K, V]) put(k K, v V, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m) // crude, but bounded; a flood of junk must not grow memory
		}
	}
	c.m[k] = cacheEntry[V]{v: v, until: now.Add(c.ttl)}
}

func (c *ttlCache[K, V]) remove(k K) {
	c.mu.Lock()
	c.gen++
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *ttlCache[K, V]) clear() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}
