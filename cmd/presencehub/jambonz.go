package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// jambonzFlags are serve's settings for running next to jambonz.
type jambonzFlags struct {
	databaseURL  *string
	syncInterval *time.Duration
	lookupRate   *int
}

func addJambonzFlags(fs *cli.FlagSet) jambonzFlags {
	return jambonzFlags{
		databaseURL: fs.EnvString("jambonz-database-url", "PRESENCEHUB_JAMBONZ_DATABASE_URL", "",
			"jambonz's MySQL (mysql://user:pass@host:3306/jambones or user:pass@tcp(host:3306)/jambones): mirror its service providers, accounts, API keys and clients; JAMBONES_MYSQL_HOST/PORT/USER/PASSWORD/DATABASE are used when this is empty"),
		syncInterval: fs.EnvDuration("jambonz-sync-interval", "PRESENCEHUB_JAMBONZ_SYNC_INTERVAL", 10*time.Second,
			"how often to re-read jambonz's tenants in full"),
		lookupRate: fs.EnvInt("jambonz-lookup-rate", "PRESENCEHUB_JAMBONZ_LOOKUP_RATE", 5,
			"direct look-ups in jambonz's api_keys of unknown bearer tokens, per second at most"),
	}
}

// jambonzURL returns the jambonz database URL: the flag's, else one made of
// jambonz's own JAMBONES_MYSQL_* variables when JAMBONES_MYSQL_HOST is set,
// else "" (no mirror).
func jambonzURL(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	host := getenv("JAMBONES_MYSQL_HOST")
	if host == "" {
		return ""
	}
	port := getenv("JAMBONES_MYSQL_PORT")
	if port == "" {
		port = "3306"
	}
	u := url.URL{Scheme: "mysql", Host: net.JoinHostPort(host, port), Path: "/" + getenv("JAMBONES_MYSQL_DATABASE")}
	if user := getenv("JAMBONES_MYSQL_USER"); user != "" {
		if pw := getenv("JAMBONES_MYSQL_PASSWORD"); pw != "" {
			u.User = url.UserPassword(user, pw)
		} else {
			u.User = url.User(user)
		}
	}
	return u.String()
}

func (f jambonzFlags) check() error {
	if *f.syncInterval < 100*time.Millisecond {
		return fmt.Errorf("--jambonz-sync-interval %v: want at least 100ms", *f.syncInterval)
	}
	if *f.lookupRate < 1 {
		return fmt.Errorf("--jambonz-lookup-rate %d: want at least 1", *f.lookupRate)
	}
	return nil
}

// redisTopology are serve's Redis settings beyond --redis-url: Sentinel,
// ACL credentials and a CA file. Each falls back to its PRESENCEHUB_
// variable and then to jambonz's own JAMBONES_REDIS_* variable. The values
// are resolved after parsing, not shown as defaults, so that --help never
// prints a password taken from the environment.
type redisTopology struct {
	sentinels, master, sentinelPassword, username, password, caFile *string
}

func addRedisTopologyFlags(fs *cli.FlagSet) redisTopology {
	return redisTopology{
		sentinels:        fs.String("redis-sentinels", "", "Redis Sentinels, host:port,host:port (port 26379 when omitted); --redis-url then gives only the database, credentials and TLS (env PRESENCEHUB_REDIS_SENTINELS, else JAMBONES_REDIS_SENTINELS)"),
		master:           fs.String("redis-sentinel-master", "", "the master's name at the Sentinels (env PRESENCEHUB_REDIS_SENTINEL_MASTER, else JAMBONES_REDIS_SENTINEL_MASTER_NAME)"),
		sentinelPassword: fs.String("redis-sentinel-password", "", "password of the Sentinels (env PRESENCEHUB_REDIS_SENTINEL_PASSWORD, else JAMBONES_REDIS_SENTINEL_PASSWORD)"),
		username:         fs.String("redis-username", "", "Redis ACL user, instead of the one in --redis-url (env PRESENCEHUB_REDIS_USERNAME, else JAMBONES_REDIS_USERNAME)"),
		password:         fs.String("redis-password", "", "Redis password, instead of the one in --redis-url (env PRESENCEHUB_REDIS_PASSWORD, else JAMBONES_REDIS_PASSWORD)"),
		caFile:           fs.String("redis-ca-file", "", "PEM file of the CAs that verify a rediss:// server (env PRESENCEHUB_REDIS_CA_FILE; default: the system's)"),
	}
}

// resolve fills what the command line left empty from the environment.
func (r redisTopology) resolve(getenv func(string) string) {
	for _, f := range []struct {
		v        *string
		env, alt string
	}{
		{r.sentinels, "PRESENCEHUB_REDIS_SENTINELS", "JAMBONES_REDIS_SENTINELS"},
		{r.master, "PRESENCEHUB_REDIS_SENTINEL_MASTER", "JAMBONES_REDIS_SENTINEL_MASTER_NAME"},
		{r.sentinelPassword, "PRESENCEHUB_REDIS_SENTINEL_PASSWORD", "JAMBONES_REDIS_SENTINEL_PASSWORD"},
		{r.username, "PRESENCEHUB_REDIS_USERNAME", "JAMBONES_REDIS_USERNAME"},
		{r.password, "PRESENCEHUB_REDIS_PASSWORD", "JAMBONES_REDIS_PASSWORD"},
		{r.caFile, "PRESENCEHUB_REDIS_CA_FILE", ""},
	} {
		if *f.v != "" {
			continue
		}
		if v := strings.TrimSpace(getenv(f.env)); v != "" {
			*f.v = v
		} else if f.alt != "" {
			*f.v = strings.TrimSpace(getenv(f.alt))
		}
	}
}

// sentinelAddrs splits a comma list of host[:port], adding jambonz's
// default Sentinel port 26379 where none is given.
func sentinelAddrs(list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
				a = "[" + a + "]" // a bare IPv6 address
			}
			a += ":26379"
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("redis sentinel %q: want host:port", a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}
