package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store/sbcsim"
)

const simulateHelp = `Write SIP registrations into Redis exactly as a jambonz SBC does (SETEX
user:<user>@<realm> with the SBC's JSON, ZADD active-user), for the given realms
and users, until stopped or --duration has passed.

The devices behave like real ones: a mix of UDP desk phones, TCP, TLS (the
"protocol" field mostly left out, as the SBC does for TLS) and WSS browser
clients, behind NAT (proxy sip:<public ip>:<port>, contact with a private IP);
each asks for an expires between --min-expires and --max-expires and refreshes
before it runs out (UDP ones in the last 30 s, as the SBC's cache makes them);
some un-register, some re-register from a new address, some vanish without
un-registering and their registration lapses. Every write counts toward
--rate, due refreshes first; a population that needs more refreshes per
second than --rate allows gets some too late (the summary says so). --burst N
makes N devices (re-)register at once at the start (an office opening at
9:00), again every --burst-every if set; bursts come on top of --rate.

In the demo realm (` + demoRealm + `) the first users are the demo SIP
clients (alice, bob, …) so the dashboard shows them online; other users are
named user0001, user0002, …

A one-line summary goes to stderr every --report; the final summary (counts of
registered, refreshed, moved, unregistered and left-to-lapse) to stdout.
Registrations still live when it stops stay in Redis until they expire.

For a lively dashboard use short expiries, e.g.
  presencehub simulate --min-expires 30s --max-expires 300s`

func cmdSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("presencehub simulate", simulateHelp, getenv, stderr)
	c := cli.AddCommon(fs, true, false)
	var realms cli.StringList
	fs.Var(&realms, "realm", "SIP realm to register in; repeat (or separate with commas) for several (default "+demoRealm+")")
	users := fs.Int("users", 50, "devices per realm")
	rate := fs.Float64("rate", 5, "changes written per second overall (registers, refreshes, moves, un-registers)")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until interrupted)")
	minExp := fs.Duration("min-expires", 60*time.Second, "shortest expires a device asks for (at least 1s)")
	maxExp := fs.Duration("max-expires", 3600*time.Second, "longest expires a device asks for")
	seed := fs.Uint64("seed", 0, "random seed, for a reproducible run (0: a new one, printed)")
	burst := fs.Int("burst", 0, "devices that (re-)register at once at the start, like an office opening (0: none)")
	burstEvery := fs.Duration("burst-every", 0, "repeat the burst this often (0: only at the start)")
	report := fs.Duration("report", 10*time.Second, "interval of the one-line summary on stderr (0: none)")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if len(realms) == 0 {
		realms = cli.StringList{demoRealm}
	}
	for i, r := range realms {
		realms[i] = strings.ToLower(r)
	}
	if *seed == 0 {
		*seed = rand.Uint64()
	}
	if *duration < 0 || *report < 0 {
		return errors.New("--duration and --report must not be negative")
	}
	cfg := sbcsim.Config{
		Realms:     realms,
		Users:      *users,
		Names:      map[string][]string{demoRealm: demoClients},
		Rate:       *rate,
		MinExpires: *minExp,
		MaxExpires: *maxExp,
		Seed:       *seed,
		Burst:      *burst,
		BurstEvery: *burstEvery,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	rdb, err := cli.RedisClient(ctx, *c.RedisURL, "presencehub-simulate")
	if err != nil {
		return err
	}
	defer rdb.Close()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(stderr, "simulate: %d devices in %s, %.4g changes/s, expires %v–%v, seed %d, redis %s\n",
		len(realms)**users, strings.Join(realms, ", "), *rate, *minExp, *maxExp, *seed, redactURL(*c.RedisURL))
	start := time.Now()
	st, err := sbcsim.Run(ctx, rdb, cfg, sbcsim.RunOptions{Report: *report, Log: stderr})
	fmt.Fprintln(stdout, sbcsim.Final(st, time.Since(start)))
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	return nil
}
