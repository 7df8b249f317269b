package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
)

// Common holds the connection settings every command shares; a field is
// nil when the command did not ask for it.
type Common struct {
	RedisURL, DatabaseURL, EncryptionKey *string
}

// AddCommon declares --redis-url (if redis) and --database-url and
// --encryption-key (if db).
func AddCommon(fs *FlagSet, redis, db bool) Common {
	var c Common
	if redis {
		c.RedisURL = fs.EnvString("redis-url", "PRESENCEHUB_REDIS_URL", JambonzRedisURL(fs.getenv, "redis://127.0.0.1:6379/0"),
			"Redis holding the SBC's registrations (default built from jambonz's JAMBONES_REDIS_HOST/PORT when set)")
	}
	if db {
		c.DatabaseURL = fs.EnvString("database-url", "PRESENCEHUB_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/presencehub?sslmode=disable", "PostgreSQL URL")
		c.EncryptionKey = fs.EnvString("encryption-key", "PRESENCEHUB_ENCRYPTION_KEY", "", "secret that encrypts SIP client passwords at rest (required; keep it stable)")
	}
	return c
}

// OpenDB opens the PostgreSQL store of c.
func OpenDB(ctx context.Context, c Common) (*store.DB, error) {
	key := *c.EncryptionKey
	if key == "" {
		// Commands that never touch passwords still need a key to open the
		// store; a placeholder is safe because nothing is encrypted with it.
		key = "unused-by-this-command"
	}
	db, err := store.Open(ctx, *c.DatabaseURL, key)
	if err != nil {
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
