// Package cli holds what the commands under cmd/ share: flags that may also
// be set by environment variables, the connection settings, and opening
// Redis and PostgreSQL from them.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ErrUsage means the usage was already printed.
var ErrUsage = errors.New("usage")

// ErrHelp: the user asked for help, which is not a failure.
var ErrHelp = errors.New("help")

// FlagSet wraps flag.FlagSet so that every flag may be given by an
// environment variable, named in its help text.
type FlagSet struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
}

// NewFlagSet returns the flags of the command line cmd (e.g. "presencehub
// serve"); summary heads its usage.
func NewFlagSet(cmd, summary string, getenv func(string) string, stderr io.Writer) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(cmd, flag.ContinueOnError), getenv: getenv}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\n%s\n\nFlags:\n", cmd, summary)
		fs.PrintDefaults()
	}
	return fs
}

func (fs *FlagSet) envHelp(env, help string) string {
	if env == "" {
		return help
	}
	return help + " (env " + env + ")"
}

// EnvString declares a string flag whose default the variable env overrides.
func (fs *FlagSet) EnvString(name, env, def, help string) *string {
	if v := fs.env(env); v != "" {
		def = v
	}
	return fs.String(name, def, fs.envHelp(env, help))
}

// EnvBool declares a boolean flag whose default the variable env overrides.
func (fs *FlagSet) EnvBool(name, env string, def bool, help string) *bool {
	if v := fs.env(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want true or false", env, v))
		}
		def = b
	}
	return fs.Bool(name, def, fs.envHelp(env, help))
}

// EnvInt declares an int flag whose default the variable env overrides.
func (fs *FlagSet) EnvInt(name, env string, def int, help string) *int {
	if v := fs.env(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want a whole number", env, v))
		}
		def = n
	}
	return fs.Int(name, def, fs.envHelp(env, help))
}

// EnvDuration declares a duration flag whose default the variable env
// overrides.
func (fs *FlagSet) EnvDuration(name, env string, def time.Duration, help string) *time.Duration {
	if v := fs.env(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: want a duration like 30s or 5m", env, v))
		}
		def = d
	}
	return fs.Duration(name, def, fs.envHelp(env, help))
}

func (fs *FlagSet) env(name string) string {
	if name == "" {
		return ""
	}
	return strings.TrimSpace(fs.getenv(name))
}

// ParseArgs parses args; --help prints the usage and returns ErrHelp, a
// bad flag ErrUsage (after the usage), a bad environment variable its error.
func (fs *FlagSet) ParseArgs(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ErrHelp
		}
		return ErrUsage
	}
	if len(fs.errs) > 0 {
		return errors.Join(fs.errs...)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return ErrUsage
	}
	return nil
}

// StringList is a repeatable flag; each value may also hold a
// comma-separated list.
type StringList []string

func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set adds v's comma-separated values.
func (l *StringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
