package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

Then (--failover) three replicas on a log of their own: a subscriber on one
that is not the sequencer, registrations of its account written at 200/s,
the sequencer killed with SIGKILL; the longest silence between two changes
at the subscriber is the failover as subscribers see it.

Then (--stream) the cost of the log hop: a single process and three
replicas, started in turn --runs times in the same invocation, each under
bench stream's load: --stream-subscribers websocket subscribers over
--stream-accounts accounts of 50 users (round robin; with three replicas
the subscribers are split round robin across them), registrations written
to Redis as an SBC writes them at --stream-rate changes/s, 2 s of warm-up,
then --stream-duration measured. Reported for each: p50 and p99 from the
write to Redis to the frame at the subscriber, delivered/expected (nothing
may be lost), and the cluster's p50 and p99 ÷ the single process's (the
reference, measured in the same run).

Short form: 1,000,000 entries, 10,000 users, 1 run. Not in "make bench"'s
default set (.ci/bench.sh cluster). Needs to start the server itself.`

func benchCluster(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("cluster", benchClusterHelp, getenv, stdout, stderr)
	entries := fs.Int("entries", 1_000_000, "changes appended to the log")
	users := fs.Int("users", 10_000, "users the changes are about")
	realms := fs.Int("realms", 100, "realms the users spread over")
	failover := fs.Bool("failover", true, "also measure a failover as subscribers see it (three replicas)")
	stream := fs.Bool("stream", true, "also measure stream latency of three replicas against a single process in the same run (the cost of the log hop)")
	streamSubs := fs.Int("stream-subscribers", 1000, "--stream: websocket subscribers (split round robin across the replicas)")
	streamAccts := fs.Int("stream-accounts", 100, "--stream: accounts the subscribers spread over (50 users each)")
	streamRate := fs.Float64("stream-rate", 1000, "--stream: changes per second written to Redis")
	streamDur := fs.Duration("stream-duration", 10*time.Second, "--stream: measured time per run and mode")
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
	if *streamSubs < 3 || *streamAccts < 1 || *streamRate <= 0 || *streamRate > 100_000 || *streamDur <= 0 {
		return errors.New("--stream-subscribers must be at least 3, --stream-accounts, --stream-rate (at most 100,000) and --stream-duration positive")
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
	b.dropClusterAtEnd(name)
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

	baseEnv := slices.Clone(b.serverEnv)
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
	if *stream {
		clusterEnv := b.serverEnv
		err := b.clusterStream(ctx, baseEnv, name+"-s", *streamSubs, *streamAccts, *streamRate, *streamDur)
		b.serverEnv = clusterEnv
		if err != nil {
			return err
		}
	}
	if *failover {
		return b.clusterFailover(ctx, name+"-f")
	}
	return nil
}

// clusterFailover starts three replicas on a log of their own, subscribes
// to an account on one that is not the sequencer, writes registrations of
// that account at 200/s as an SBC does, kills the sequencer with SIGKILL
// and reports the longest silence between two changes at the subscriber
// around the kill: the failover as subscribers see it (the lease's lapse,
// the takeover, the re-read of Redis, the appends of what changed).
func (b *bench) clusterFailover(ctx context.Context, name string) error {
	b.serverEnv = append(b.serverEnv, "PRESENCEHUB_CLUSTER_NAME="+name)
	b.dropClusterAtEnd(name)
	var reps []*benchServer
	for range 3 {
		srv, err := b.spawn(ctx)
		if err != nil {
			return err
		}
		b.onCleanup(func(context.Context) { srv.stop() })
		if err := srv.waitReady(ctx, b.http, 5*time.Minute); err != nil {
			return err
		}
		reps = append(reps, srv)
	}
	accts, err := b.accounts(ctx, func() *benchServer { return reps[0] }, 1)
	if err != nil {
		return err
	}
	var holder, watched *benchServer
	deadline := time.Now().Add(time.Minute)
	for holder == nil {
		for _, r := range reps {
			if v, err := b.metric(ctx, r, "presencehub_cluster_lease_holder"); err == nil && v == 1 {
				holder = r
			}
		}
		if time.Now().After(deadline) {
			return errors.New("no replica took the lease within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, r := range reps {
		if r != holder {
			watched = r
			break
		}
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+b.key)
	ws, err := benchkit.DialWS(strings.Replace(watched.url, "http", "ws", 1)+"/v1/stream", nil, h, 10*time.Second)
	if err != nil {
		return err
	}
	defer ws.Close()
	if err := ws.WriteText([]byte(`{"type":"subscribe","id":"f","account_sid":"` + accts[0].sid + `"}`)); err != nil {
		return err
	}
	var mu sync.Mutex
	var arrivals []time.Time
	go func() {
		for {
			m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if bytes.Contains(m, []byte(`"type":"change"`)) {
				mu.Lock()
				arrivals = append(arrivals, time.Now())
				mu.Unlock()
			}
		}
	}()
	// Each replica's CPU with nothing to do (pings, timers, the runtime):
	// subtracted below, so that the per-change cost is the changes' own.
	i0, j0, it := holder.cpu(), watched.cpu(), time.Now()
	time.Sleep(3 * time.Second)
	idleH := float64((holder.cpu() - i0).Microseconds()) / time.Since(it).Seconds()
	idleF := float64((watched.cpu() - j0).Microseconds()) / time.Since(it).Seconds()
	wctx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	go func() {
		t := time.NewTicker(5 * time.Millisecond) // 200/s
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			user := fmt.Sprintf("f%03d", i%100)
			_, _ = store.RegisterAsSBC(wctx, b.rdb, user, accts[0].realm, benchRecord(user, i, ""), time.Hour)
		}
	}()
	time.Sleep(time.Second)
	// Per-replica cost at 200 changes/s, before the kill: the sequencer
	// (private hub, appends, and its own copy from the log) and a replica
	// that only follows the log (and serves one subscriber).
	c0, f0, t0 := holder.cpu(), watched.cpu(), time.Now()
	n0 := b.appended(ctx, name)
	time.Sleep(3 * time.Second)
	c1, f1, el := holder.cpu(), watched.cpu(), time.Since(t0)
	rate := float64(b.appended(ctx, name)-n0) / el.Seconds()
	b.add("changes/s appended during the cost window", fmt.Sprintf("%.0f", rate), "", nil)
	perChange := func(used time.Duration, idle float64) string {
		busy := float64(used.Microseconds()) - idle*el.Seconds()
		return fmt.Sprintf("%.0f µs (idle %.3f core subtracted)", busy/(rate*el.Seconds()), idle/1e6)
	}
	b.add("sequencer CPU per change (hub, append, its own replica)", perChange(c1-c0, idleH), "", nil)
	b.add("follower CPU per change (apply, one subscriber)", perChange(f1-f0, idleF), "", nil)
	killed := time.Now()
	_ = holder.cmd.Process.Kill()
	b.logf("killed the sequencer (pid %d)", holder.pid)
	time.Sleep(10 * time.Second)
	stopWrites()
	mu.Lock()
	defer mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(arrivals); i++ {
		if arrivals[i].After(killed) && arrivals[i].Sub(arrivals[i-1]) > gap {
			gap = arrivals[i].Sub(arrivals[i-1])
		}
	}
	b.add("failover (SIGKILL of the sequencer): longest silence at a subscriber, writes at 200/s", benchkit.FmtMs(float64(gap.Milliseconds())), "≤ 3 s", ptr(gap <= 3*time.Second))
	return nil
}

// clusterStream measures the cost of the log hop: --runs times, a single
// process (env base) and then three replicas of cluster name take turns
// under the same stream load; each mode's p50/p99 and delivered/expected,
// and the cluster's ÷ the single process's.
func (b *bench) clusterStream(ctx context.Context, base []string, name string, subs, naccts int, rate float64, dur time.Duration) error {
	b.dropClusterAtEnd(name)
	modes := []struct {
		label    string
		replicas int
		env      []string
	}{
		{"single process", 1, append(slices.Clone(base), "PRESENCEHUB_REGISTRATION_HISTORY=false")},
		{"three replicas", 3, append(slices.Clone(base), "PRESENCEHUB_CLUSTER=true", "PRESENCEHUB_CLUSTER_NAME="+name, "PRESENCEHUB_REGISTRATION_HISTORY=false")},
	}
	if err := benchkit.NeedFiles(subs); err != nil {
		return err
	}
	var accts []benchAccount
	var pool []benchAOR
	var poolAcct []int
	var next atomic.Int64
	var admin *benchServer
	b.onCleanup(func(context.Context) { admin.stop() })
	adminSrv := func() *benchServer {
		if admin == nil {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := b.server(sctx)
			if err != nil {
				b.logf("a server to delete the accounts: %v", err)
				admin = &benchServer{url: "http://127.0.0.1:1"}
			}
			admin = s
		}
		return admin
	}
	p50, p99 := make([]benchkit.Spread, len(modes)), make([]benchkit.Spread, len(modes))
	delivered := make([]string, len(modes))
	allDelivered := make([]bool, len(modes))
	for m := range modes {
		allDelivered[m] = true
	}
	for run := 1; run <= *b.runs; run++ {
		for m, mode := range modes {
			b.serverEnv = mode.env
			var reps []*benchServer
			stopAll := func() {
				for _, r := range reps {
					r.stop()
				}
			}
			for range mode.replicas {
				srv, err := b.server(ctx)
				if err != nil {
					stopAll()
					return err
				}
				reps = append(reps, srv)
			}
			if accts == nil { // the accounts live in PostgreSQL: made once, through the first server
				admin = reps[0]
				var err error
				accts, err = b.accounts(ctx, adminSrv, naccts)
				admin = nil // stopped below: the cleanup starts a server of its own to delete them
				if err != nil {
					stopAll()
					return err
				}
				for u := range 50 {
					for a, acct := range accts {
						pool = append(pool, benchAOR{fmt.Sprintf("user%04d", u+1), acct.realm})
						poolAcct = append(poolAcct, a)
					}
				}
				if err := b.registerAll(ctx, pool, 10*time.Minute); err != nil {
					stopAll()
					return err
				}
			}
			lat, expected, received, err := b.streamLoad(ctx, reps, accts, pool, poolAcct, &next, subs, rate, dur)
			stopAll()
			if err != nil {
				return err
			}
			p50[m] = append(p50[m], benchkit.Millis(benchkit.Percentile(lat, 50)))
			p99[m] = append(p99[m], benchkit.Millis(benchkit.Percentile(lat, 99)))
			delivered[m] += fmt.Sprintf("%d/%d ", received, expected)
			allDelivered[m] = allDelivered[m] && received == expected
			b.logf("%s, run %d: p50 %.2f ms, p99 %.2f ms, %d of %d expected deliveries", mode.label, run,
				p50[m][len(p50[m])-1], p99[m][len(p99[m])-1], received, expected)
		}
	}
	for m, mode := range modes {
		name := fmt.Sprintf("%s at %s/s", mode.label, benchkit.FmtCount(rate))
		b.add(name+": p50 latency (Redis write → frame)", p50[m].Format(benchkit.FmtMs), "", nil)
		b.add(name+": p99 latency", p99[m].Format(benchkit.FmtMs), "", nil)
		b.add(name+": delivered/expected", strings.TrimSpace(delivered[m]), "all", ptr(allDelivered[m]))
	}
	b.add("three replicas ÷ single process (same run): p50", fmtRatio(p50[1].Median()/p50[0].Median()), "", nil)
	b.add("three replicas ÷ single process (same run): p99", fmtRatio(p99[1].Median()/p99[0].Median()), "", nil)
	b.add(fmt.Sprintf("stream setup: %d subscribers over %d accounts of 50 users, %v per run and mode", subs, naccts, dur),
		fmt.Sprintf("%d runs, modes alternating", *b.runs), "", nil)
	return nil
}

// streamLoad dials subs subscribers round robin across reps (subscriber i
// to accts[i%len]), writes rate registrations/s round robin over pool for
// 2 s of warm-up and dur measured, and returns the window's latencies, the
// deliveries expected (writes in the window × subscribers of their
// account) and those received.
func (b *bench) streamLoad(ctx context.Context, reps []*benchServer, accts []benchAccount, pool []benchAOR, poolAcct []int,
	next *atomic.Int64, subs int, rate float64, dur time.Duration) (lat []time.Duration, expected, received int64, err error) {
	w := &streamWindow{}
	var conns []*wsSub
	defer func() { closeSubscribers(conns) }()
	for r, srv := range reps {
		n := subs / len(reps)
		if r < subs%len(reps) {
			n++
		}
		c, err := dialSubscribers(ctx, srv, b.key, accts, n, w)
		if err != nil {
			return nil, 0, 0, err
		}
		conns = append(conns, c...)
	}
	w.reset(conns)
	perAcct := make([]atomic.Int64, len(accts))
	until, err := driveWrites(ctx, rate, 2*time.Second, dur, 4, func(from time.Time) {
		w.from.Store(from.UnixNano())
		w.until.Store(1<<63 - 1)
	}, func(n int) error {
		return b.writePool(ctx, pool, poolAcct, perAcct, next, w.from.Load(), n)
	}, func() {})
	if err != nil {
		return nil, 0, 0, err
	}
	w.until.Store(until.UnixNano())
	for _, s := range conns {
		expected += perAcct[s.acct].Load()
	}
	received, _ = waitDelivered(ctx, conns, expected)
	lat, _, _, _ = w.collect(conns)
	slices.Sort(lat)
	return lat, expected, received, nil
}

func ptr(v bool) *bool { return &v }

// appended is the number of changes appended to the log of cluster name.
func (b *bench) appended(ctx context.Context, name string) int64 {
	n, _ := b.rdb.Get(ctx, "presencehub:{"+name+"}:n").Int64()
	return n
}

// dropClusterAtEnd deletes the keys of cluster name when the benchmark ends.
func (b *bench) dropClusterAtEnd(name string) {
	b.onCleanup(func(ctx context.Context) {
		keys, _ := b.rdb.Keys(ctx, "presencehub:{"+name+"}:*").Result()
		if len(keys) > 0 {
			b.rdb.Del(ctx, keys...)
		}
	})
}
