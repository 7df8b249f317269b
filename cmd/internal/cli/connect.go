package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
)

// Common holds the connection settings every command shares; a field is
// nil when the command did not ask for it.
type Common struct {
	RedisURL, DatabaseURL                                     *string
	EncryptionKey, EncryptionKeyPrevious, EncryptionKeyLegacy *string
}

// AddCommon declares --redis-url (if redis) and --database-url and the
// --encryption-key flags (if db).
func AddCommon(fs *FlagSet, redis, db bool) Common {
	var c Common
	if redis {
		c.RedisURL = fs.EnvString("redis-url", "PRESENCEHUB_REDIS_URL", JambonzRedisURL(fs.getenv, "redis://127.0.0.1:6379/0"),
			"Redis holding the SBC's registrations (default built from jambonz's JAMBONES_REDIS_HOST/PORT when set)")
	}
	if db {
		c.DatabaseURL = fs.EnvString("database-url", "PRESENCEHUB_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/presencehub?sslmode=disable", "PostgreSQL URL")
		c.EncryptionKey = fs.EnvString("encryption-key", "PRESENCEHUB_ENCRYPTION_KEY", "",
			"key that encrypts SIP client passwords at rest: 32 random bytes or more in hex or base64, e.g. from  openssl rand -hex 32  (required by serve, seed and reencrypt)")
		c.EncryptionKeyPrevious = fs.EnvString("encryption-key-previous", "PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS", "",
			"the key used before --encryption-key, to read passwords written with it until  presencehub reencrypt  has moved them")
		c.EncryptionKeyLegacy = fs.EnvString("encryption-key-legacy", "PRESENCEHUB_ENCRYPTION_KEY_LEGACY", "",
			"the encryption secret of presencehub before key ids (any string), to read passwords written with it until  presencehub reencrypt  has moved them")
	}
	return c
}

// Keys returns the encryption keys of c.
func Keys(c Common) store.Keys {
	return store.Keys{Current: *c.EncryptionKey, Previous: *c.EncryptionKeyPrevious, Legacy: *c.EncryptionKeyLegacy}
}

// OpenDB opens the PostgreSQL store of c. needKey tells whether the command
// reads or writes SIP client passwords: then --encryption-key must be a
// strong key (store.ParseEncryptionKey); otherwise the store gets a random
// key nothing is encrypted with, and the flags are not looked at.
func OpenDB(ctx context.Context, c Common, needKey bool, log *slog.Logger) (*store.DB, error) {
	keys := Keys(c)
	if !needKey {
		var b [32]byte
		rand.Read(b[:])
		keys = store.Keys{Current: hex.EncodeToString(b[:])}
	}
	db, err := store.Open(ctx, *c.DatabaseURL, store.Options{Keys: keys, Logger: log})
	if errors.Is(err, store.ErrInvalid) {
		return nil, err // a bad key: the message names it and says how to make one
	} else if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return db, nil
}

// RedisClient connects to the Redis at rawURL and pings it. The errors never
// quote the URL (it may hold a password).
func RedisClient(ctx context.Context, rawURL, name string) (*redis.Client, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("--redis-url: %v", err)
	}
	if opts.ClientName == "" {
		opts.ClientName = name
	}
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", opts.Addr, err)
	}
	return rdb, nil
}

// JambonzRedisURL is the default --redis-url: built from jambonz's
// JAMBONES_REDIS_HOST and JAMBONES_REDIS_PORT (6379) when the host is set,
// else def.
func JambonzRedisURL(getenv func(string) string, def string) string {
	host := strings.TrimSpace(getenv("JAMBONES_REDIS_HOST"))
	if host == "" {
		return def
	}
	port := strings.TrimSpace(getenv("JAMBONES_REDIS_PORT"))
	if port == "" {
		port = "6379"
	}
	return "redis://" + net.JoinHostPort(host, port) + "/0"
}
