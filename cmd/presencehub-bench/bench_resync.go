package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

const benchResyncHelp = `Cold start and resync. --registrations registrations (over --realms realms)
are written into Redis as an SBC writes them; then, --runs times, a new
server is started and timed from the start of its process to the first
GET /readyz that answers 200 (the whole snapshot loaded from Redis). Then
its Redis subscription is killed (CLIENT KILL ID of its pub/sub connection)
and the time until presencehub_resyncs_total in /metrics goes up is the
resync: noticing the drop, the reconnect backoff (100–200 ms by design),
resubscribing and re-reading every key.

Short form: 100,000 registrations, 3 runs. Long form (--long): 500,000
registrations, 5 runs. Needs to start the server itself (no --server-url).`

func benchResync(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("resync", benchResyncHelp, getenv, stdout, stderr)
	nregs := fs.Int("registrations", 100000, "registrations in Redis")
	nrealms := fs.Int("realms", 100, "realms they spread over")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"registrations": "500000", "runs": "5"}); err != nil {
		return err
	}
	if *b.serverURL != "" {
		return errors.New("the resync benchmark times the server's start, so it starts the server itself: leave out --server-url")
	}
	if *nregs < 1 || *nrealms < 1 {
		return errors.New("--registrations and --realms must be positive")
	}
	defer b.finish()
	if err := b.start(ctx); err != nil {
		return err
	}
	aors := make([]benchAOR, *nregs)
	for i := range aors {
		aors[i] = benchAOR{fmt.Sprintf("u%07d", i+1), fmt.Sprintf("r%04d.%s.resync.bench.invalid", i%*nrealms, b.runID)}
	}
	t0 := time.Now()
	if err := b.registerAll(ctx, aors, 2*time.Hour); err != nil {
		return err
	}
	b.logf("wrote %d registrations into redis in %v", *nregs, time.Since(t0).Round(time.Millisecond))

	var cold, resync, rss benchkit.Spread
	for run := 1; run <= *b.runs; run++ {
		start := time.Now()
		srv, err := b.spawn(ctx)
		if err != nil {
			return err
		}
		if err := srv.waitReady(ctx, b.http, 5*time.Minute); err != nil {
			srv.stop()
			return err
		}
		c := time.Since(start)
		cold = append(cold, benchkit.Millis(c))
		rss = append(rss, float64(srv.rss()))

		r, err := b.timeResync(ctx, srv)
		srv.stop()
		if err != nil {
			return err
		}
		resync = append(resync, benchkit.Millis(r))
		b.logf("run %d: ready %v after start; resync %v after the subscription was killed", run, c.Round(time.Millisecond), r.Round(time.Millisecond))
	}
	n := benchkit.FmtCount(float64(*nregs))
	b.add("cold start to /readyz 200 ("+n+" registrations)", cold.Format(benchkit.FmtMs), "", nil)
	b.add("server RSS when ready", rss.Format(benchkit.FmtMiB), "", nil)
	b.add("resync after a redis reconnect ("+n+")", resync.Format(benchkit.FmtMs), "", nil)
	return nil
}

// timeResync kills the server's Redis subscription and times until its
// resync has been applied.
func (b *bench) timeResync(ctx context.Context, srv *benchServer) (time.Duration, error) {
	before, err := b.metric(ctx, srv, "presencehub_resyncs_total")
	if err != nil {
		return 0, err
	}
	ids, err := b.pubsubClients(ctx, time.Since(srv.started))
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for _, id := range ids {
		if err := b.rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
			return 0, fmt.Errorf("redis client kill: %w", err)
		}
	}
	deadline := t0.Add(5 * time.Minute)
	for {
		v, err := b.metric(ctx, srv, "presencehub_resyncs_total")
		if err == nil && v > before {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no resync within 5 minutes of killing the subscription (last error %v)", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pubsubClients returns the ids of the pub/sub connections named
// "presencehub" no older than age: the server under test's subscription.
func (b *bench) pubsubClients(ctx context.Context, age time.Duration) ([]string, error) {
	list, err := b.rdb.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return nil, fmt.Errorf("redis client list: %w", err)
	}
	ids := pubsubIDs(list, "presencehub", age)
	if len(ids) == 0 {
		return nil, errors.New("the server has no redis pub/sub connection named presencehub")
	}
	return ids, nil
}

// pubsubIDs picks from CLIENT LIST output the ids of the clients named name
// that are at most age old.
func pubsubIDs(list, name string, age time.Duration) []string {
	var ids []string
	for _, line := range strings.Split(list, "\n") {
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		a, err := strconv.Atoi(f["age"])
		if f["id"] == "" || f["name"] != name || err != nil || time.Duration(a)*time.Second > age+time.Second {
			continue
		}
		ids = append(ids, f["id"])
	}
	return ids
}
