package main

import (
	"fmt"
	"net"
	"net/url"
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
