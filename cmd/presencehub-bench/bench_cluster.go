package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

const benchClusterHelp = `The cluster's shared log (serve --cluster). --entries changes of --users
users over --realms realms (registrations and refreshes, each with the
user's record) are appended to a log of its own in Redis through the fenced
append script, 256 a call, as a sequencer appends them; Redis's used_memory
before and after gives the memory per million changes (log, state hash and
seqs together), and the append rate is the sequencer's ceiling on this
Redis. Then, --runs times, a "serve --cluster" replica is started on that
log and timed from the start of its process to the first GET /readyz that
answers 200: its cold start (the snapshot: state hash, the log's tail,
--cluster-backfill entries for resume).

Not measured yet (README "Cluster"): three replicas at 1,000 changes/s
against a single process, and failover time as subscribers see it.

Short form: 1,000,000 entries, 10,000 users, 1 run. Not in "make bench"'s
default set (.ci/bench.sh cluster). Needs to start the server itself.`

func benchCluster(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("cluster", benchClusterHelp, getenv, stdout, stderr)
	entries := fs.Int("entries", 1_000_000, "changes appended to the log")
	users := fs.Int("users", 10_000, "users the changes are about")
	realms := fs.Int("realms", 100, "realms the users spread over")
	*b.runs = 1
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if *b.serverURL != "" {
		return errors.New("the cluster benchmark times a replica's start, so it starts the server itself: leave out --server-url")
	}
	if *entries < 1000 || *users < 1 || *realms < 1 {
		return errors.New("--entries must be at least 1000, --users and --realms positive")
	}
	defer b.finish()
	if err := b.start(ctx); err != nil {
		return err
	}
	name := "bench-" + b.runID
	c, err := store.OpenCluster(store.ClusterOptions{Redis: store.RedisOptions{URL: *b.c.RedisURL}, Name: name, MaxEntries: int64(*entries), LeaseTTL: time.Minute})
	if err != nil {
		return err
	}
	defer c.Close()
	b.onCleanup(func(ctx context.Context) {
		keys, _ := b.rdb.Keys(ctx, "presencehub:{"+name+"}:*").Result()
		if len(keys) > 0 {
			b.rdb.Del(ctx, keys...)
		}
	})
	memBefore, err := b.redisUsedMemory(ctx)
	if err != nil {
		return err
	}
	epoch, err := c.Epoch(ctx)
	if err != nil {
		return err
	}
	token := store.NewLeaseToken()
	if ok, err := c.AcquireLease(ctx, token); !ok || err != nil {
		return fmt.Errorf("bench lease: %v %v", ok, err)
	}
	b.logf("appending %d changes to log %s", *entries, name)
	start := time.Now()
	batch := make([]store.LogChange, 0, 256)
	now := time.Now()
	for i := 0; i < *entries; i++ {
		u := i % *users
		user, realm := fmt.Sprintf("u%06d", u), fmt.Sprintf("r%04d.%s.cluster.bench.invalid", u%*realms, b.runID)
		rec := benchRecord(user, u, "")
		event := hub.EventRefreshed
		if i < *users {
			event = hub.EventRegistered
		}
		at := now.Add(time.Duration(i) * time.Millisecond)
		st := &hub.State{Reg: hub.Registration{User: user, Realm: realm, Contact: rec.Contact, Protocol: rec.Protocol, Proxy: rec.Proxy,
			SBCAddress: rec.SBCAddress, PrivateSBCAddress: rec.PrivateSBCAddress, AllowDirectApp: 1, AllowDirectUser: 1,
			ExpiryTime: at.Add(time.Hour).UnixMilli(), Deadline: at.Add(time.Hour)}, Since: now, EventTime: at, Event: event}
		batch = append(batch, store.LogChange{Realm: realm, User: user, Event: event, Time: at, State: st})
		if len(batch) == cap(batch) || i == *entries-1 {
			if i/cap(batch)%100 == 0 { // a sequencer renews every third of its TTL
				if err := c.RenewLease(ctx, token); err != nil {
					return err
				}
			}
			if _, err := c.Append(ctx, token, epoch, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	took := time.Since(start)
	_ = c.ReleaseLease(ctx, token)
	memAfter, err := b.redisUsedMemory(ctx)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	perChange := float64(memAfter-memBefore) / float64(st.Length)
	b.add("log entries kept (of "+fmt.Sprint(*entries)+")", fmt.Sprint(st.Length), "", nil)
	b.add("Redis used_memory per change (log + state + seqs)", fmt.Sprintf("%.0f B", perChange), "", nil)
	b.add("Redis used_memory per million changes", fmt.Sprintf("%.0f MiB", perChange*1e6/(1<<20)), "", nil)
	b.add("appends/s (256 a script call, one connection)", fmt.Sprintf("%.0f", float64(*entries)/took.Seconds()), "", nil)

	b.serverEnv = append(b.serverEnv, "PRESENCEHUB_CLUSTER=true", "PRESENCEHUB_CLUSTER_NAME="+name,
		fmt.Sprintf("PRESENCEHUB_CLUSTER_LOG_MAX_ENTRIES=%d", *entries), "PRESENCEHUB_REGISTRATION_HISTORY=false")
	var starts, rss benchkit.Spread
	for run := 0; run < *b.runs; run++ {
		srv, err := b.spawn(ctx)
		if err != nil {
			return err
		}
		if err := srv.waitReady(ctx, b.http, 10*time.Minute); err != nil {
			srv.stop()
			return err
		}
		starts = append(starts, float64(time.Since(srv.started).Milliseconds()))
		rss = append(rss, float64(srv.rss()))
		srv.stop()
	}
	b.add(fmt.Sprintf("replica cold start to /readyz 200, log of %d entries, %d users", st.Length, *users), starts.Format(benchkit.FmtMs), "", nil)
	b.add("replica RSS when ready", rss.Format(benchkit.FmtMiB), "", nil)
	return nil
}
