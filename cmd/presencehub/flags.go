package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// errUsage means the usage was already printed.
var errUsage = errors.New("usage")

// flagSet wraps flag.FlagSet so that every flag may be given by an
// environment variable, named in its help text.
type flagSet struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
}

func newFlagSet(name, summary string, getenv func(string) string, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), getenv: getenv}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: presencehub %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func (fs *flagSet) envHelp(env, help string) string {
	if env == "" {
		return help
	}
	return help + " (env " + env + ")"
}

func (fs *flagSet) str(name, env, def, help string) *string {
	if v := fs.env(env); v != "" {
		def = v
	}
	return fs.String(name, def, fs.envHelp(env, help))
}

func (fs *flagSet) boolean(name, env string, def bool, help string) *bool {
	if v := fs.env(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want true or false", env, v))
		}
		def = b
	}
	return fs.Bool(name, def, fs.envHelp(env, help))
}

func (fs *flagSet) integer(name, env string, def int, help string) *int {
	if v := fs.env(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want a whole number", env, v))
		}
		def = n
	}
	return fs.Int(name, def, fs.envHelp(env, help))
}

func (fs *flagSet) duration(name, env string, def time.Duration, help string) *time.Duration {
	if v := fs.env(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want a duration like 30s or 5m", env, v))
		}
		def = d
	}
	return fs.Duration(name, def, fs.envHelp(env, help))
}

func (fs *flagSet) env(name string) string {
	if name == "" {
		return ""
	}
	return strings.TrimSpace(fs.getenv(name))
}

// parse parses args; --help prints the usage and returns errHelp.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if len(fs.errs) > 0 {
		return errors.Join(fs.errs...)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

// errHelp: the user asked for help, which is not a failure.
var errHelp = errors.New("help")

// common holds the connection settings every command shares.
type common struct {
	redisURL, databaseURL, encryptionKey *string
}

func addCommon(fs *flagSet, redis, db bool) common {
	var c common
	if redis {
		c.redisURL = fs.str("redis-url", "PRESENCEHUB_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the SBC's registrations")
	}
	if db {
		c.databaseURL = fs.str("database-url", "PRESENCEHUB_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/presencehub?sslmode=disable", "PostgreSQL URL")
		c.encryptionKey = fs.str("encryption-key", "PRESENCEHUB_ENCRYPTION_KEY", "", "secret that encrypts SIP client passwords at rest (required; keep it stable)")
	}
	return c
}
