package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

const benchIdleHelp = `Server memory per idle websocket connection. For every run a fresh server
is started (so each run measures from the same baseline); once its RSS has
settled, --connections websockets connect, each subscribed to one of
--accounts accounts (round robin, --users registered users each), and after
--settle, once the RSS is steady again, (RSS after − RSS before) /
connections is the memory per connection. With --server-url the same server
serves every run.

Target: ≤ 16 KiB per connection at 10,000 connections.

Short form: 10,000 connections, 5s settle. Long form (--long): 30s settle.`

func benchIdle(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("idle", benchIdleHelp, getenv, stdout, stderr)
	n := fs.Int("connections", 10000, "websocket connections")
	naccts := fs.Int("accounts", 100, "accounts the connections subscribe to")
	users := fs.Int("users", 10, "registered users per account")
	settle := fs.Duration("settle", 5*time.Second, "wait before reading the RSS, after start and after connecting")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"settle": "30s"}); err != nil {
		return err
	}
	if *n < 1 || *naccts < 1 || *users < 0 {
		return errors.New("--connections and --accounts must be positive")
	}
	defer b.finish()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := benchkit.NeedFiles(*n); err != nil {
		return err
	}
	srv, err := b.server(ctx)
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) { srv.stop() })
	if srv.pid == 0 {
		return errors.New("the idle benchmark reads the server's memory: give --server-pid with --server-url")
	}
	accts, err := b.accounts(ctx, func() *benchServer { return srv }, *naccts)
	if err != nil {
		return err
	}
	var aors []benchAOR
	for _, a := range accts {
		for u := range *users {
			aors = append(aors, benchAOR{fmt.Sprintf("user%04d", u+1), a.realm})
		}
	}
	if err := b.registerAll(ctx, aors, time.Hour); err != nil {
		return err
	}
	var perConn, before, after benchkit.Spread
	for run := 1; run <= *b.runs; run++ {
		if srv.cmd != nil {
			// A fresh server: setting up the accounts or the previous run
			// leaves garbage and grown stacks behind.
			srv.stop()
			if srv, err = b.server(ctx); err != nil {
				return err
			}
		}
		base := settledRSS(ctx, srv, *settle)
		w := &streamWindow{}
		w.reset(nil)
		t0 := time.Now()
		conns, err := dialSubscribers(ctx, srv, b.key, accts, *n, w)
		if err != nil {
			return err
		}
		took := time.Since(t0)
		rss := settledRSS(ctx, srv, *settle)
		closeSubscribers(conns)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		per := float64(rss-base) / float64(*n)
		perConn = append(perConn, per)
		before = append(before, float64(base))
		after = append(after, float64(rss))
		b.logf("run %d: RSS %.1f MiB → %.1f MiB with %d connections (connected in %v): %.1f KiB each",
			run, float64(base)/(1<<20), float64(rss)/(1<<20), *n, took.Round(time.Millisecond), per/1024)
	}
	b.add(fmt.Sprintf("RSS per connection (%s connections)", benchkit.FmtCount(float64(*n))), perConn.Format(benchkit.FmtKiB), "≤ 16.0 KiB", benchkit.BoolPtr(perConn.Median() <= 16<<10))
	b.add("server RSS idle, before connecting", before.Format(benchkit.FmtMiB), "", nil)
	b.add("server RSS with the connections", after.Format(benchkit.FmtMiB), "", nil)
	return nil
}

// settledRSS waits d, then reads the server's RSS every 500 ms until two
// readings in a row differ by less than 1% (at most 10 s more), and returns
// the last.
func settledRSS(ctx context.Context, srv *benchServer, d time.Duration) int64 {
	select {
	case <-ctx.Done():
		return 0
	case <-time.After(d):
	}
	last := srv.rss()
	for range 20 {
		select {
		case <-ctx.Done():
			return last
		case <-time.After(500 * time.Millisecond):
		}
		cur := srv.rss()
		if math.Abs(float64(cur-last)) < 0.01*float64(last) {
			return cur
		}
		last = cur
	}
	return last
}
