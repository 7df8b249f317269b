package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

// bench is what every benchmark shares: connection settings, the admin key,
// the server under test and the results.
type bench struct {
	name   string
	c      cli.Common
	stdout io.Writer
	stderr io.Writer

	serverURL *string
	serverPID *int
	serverBin *string
	serverEnv []string // added to the environment of the servers it starts
	adminKey  *string
	runs      *int
	long      *bool
	tsv       *bool

	runID   string // distinguishes this run's realms and names
	rdb     *redis.Client
	db      *store.DB // only when the bench made its own admin key
	keySID  string
	key     string
	http    *http.Client
	results benchkit.Table
	cleanup []func(context.Context)
	noise   benchkit.Spread // cores used by other processes during each measurement
}

// newBench declares the flags every benchmark has.
func newBench(name, summary string, getenv func(string) string, stdout, stderr io.Writer) (*bench, *cli.FlagSet) {
	fs := cli.NewFlagSet("presencehub-bench "+name, summary, getenv, stderr)
	b := &bench{name: name, stdout: stdout, stderr: stderr}
	b.c = cli.AddCommon(fs, true, true)
	b.serverURL = fs.EnvString("server-url", "PRESENCEHUB_BENCH_SERVER_URL", "", "use the server running at this URL instead of starting one")
	b.serverPID = fs.EnvInt("server-pid", "PRESENCEHUB_BENCH_SERVER_PID", 0, "process id of the --server-url server, to measure its CPU and memory")
	b.serverBin = fs.EnvString("server-bin", "", "", "presencehub binary to start as the server (default: presencehub next to this binary, else on PATH)")
	b.adminKey = fs.EnvString("admin-key", "PRESENCEHUB_ADMIN_KEY", "", "admin API key (default: one is created in the database and deleted afterwards)")
	b.runs = fs.EnvInt("runs", "", 3, "repetitions; the table shows their median and spread")
	b.long = fs.Bool("long", false, "the long form: the sizes and durations of the README's Performance section")
	b.tsv = fs.Bool("tsv", false, "print the results as tab-separated rows (benchmark, metric, value, target, ok) without a header")
	return b, fs
}

// parseRates parses --rates (rates per second), or returns defaults when
// it was not given.
func parseRates(rates cli.StringList, defaults ...float64) ([]float64, error) {
	if len(rates) == 0 {
		return defaults, nil
	}
	var list []float64
	for _, r := range rates {
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--rates: %q is not a positive number", r)
		}
		list = append(list, v)
	}
	return list, nil
}

// setLong applies the long form's value to every flag named in long that
// was not given on the command line.
func setLong(fs *cli.FlagSet, on bool, long map[string]string) error {
	if !on {
		return nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range long {
		if !given[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("--long: %s: %w", name, err)
			}
		}
	}
	return nil
}

// start connects to Redis, gets an admin key and raises the file limit.
func (b *bench) start(ctx context.Context) error {
	if *b.runs < 1 {
		return errors.New("--runs must be at least 1")
	}
	benchkit.RaiseFileLimit()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	b.runID = hex.EncodeToString(rnd[:])
	rdb, err := cli.RedisClient(ctx, *b.c.RedisURL, "presencehub-bench")
	if err != nil {
		return err
	}
	b.rdb = rdb
	b.http = &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 128,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	b.key = *b.adminKey
	if b.key == "" {
		db, err := cli.OpenDB(ctx, b.c, false, nil)
		if err != nil {
			return err
		}
		b.db = db
		if _, err := db.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		k, token, err := db.CreateAPIKey(ctx, store.APIKey{})
		if err != nil {
			return fmt.Errorf("create an admin key for the benchmark: %w", err)
		}
		b.keySID, b.key = k.SID, token
	}
	return nil
}

// onCleanup runs f (last added first) when the benchmark ends.
func (b *bench) onCleanup(f func(context.Context)) { b.cleanup = append(b.cleanup, f) }

// finish cleans up and prints the results.
func (b *bench) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := len(b.cleanup) - 1; i >= 0; i-- {
		b.cleanup[i](ctx)
	}
	if b.db != nil {
		if b.keySID != "" {
			_ = b.db.DeleteAPIKey(ctx, b.keySID)
		}
		b.db.Close()
	}
	if b.rdb != nil {
		_ = b.rdb.Close()
	}
	if len(b.noise) > 0 {
		b.add("CPU of other processes while measuring (noise)", b.noise.Format(benchkit.FmtCores), "", nil)
	}
	b.results.Print(b.stdout, b.name, *b.tsv)
}

// add records a row of the results; met is nil when the metric has no
// target.
func (b *bench) add(metric, value, target string, met *bool) {
	b.results.Add(metric, value, target, met)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench %s: %s\n", b.name, fmt.Sprintf(format, args...))
}
