package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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
	memBefore, err := b.redisUsedMemory(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := b.registerAll(ctx, aors, 2*time.Hour); err != nil {
		return err
	}
	memAfter, err := b.redisUsedMemory(ctx)
	if err != nil {
		return err
	}
	redisPerReg := float64(memAfter-memBefore) / float64(*nregs)
	b.logf("wrote %d registrations into redis in %v; redis used_memory grew by %s (%.0f B per registration)",
		*nregs, time.Since(t0).Round(time.Millisecond), benchkit.FmtMiB(float64(memAfter-memBefore)), redisPerReg)
	restore, err := b.slowlogAll(ctx)
	if err != nil {
		return err
	}
	defer restore()

	var cold, resync, rss, heap, cpu, worstCold, worstResync, p99Cold, p99Resync, reconcile benchkit.Spread
	var cmdsCold, cmdsResync string
	for run := 1; run <= *b.runs; run++ {
		if err := b.rdb.Do(ctx, "SLOWLOG", "RESET").Err(); err != nil {
			return fmt.Errorf("redis slowlog reset: %w", err)
		}
		pprofAddr, err := freeLoopback()
		if err != nil {
			return err
		}
		b.serverEnv = []string{"PRESENCEHUB_PPROF=" + pprofAddr}
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
		cpu = append(cpu, benchkit.Millis(srv.cpu()))
		live, err := b.liveHeap(ctx, pprofAddr)
		if err != nil {
			srv.stop()
			return err
		}
		heap = append(heap, float64(live))
		wc, err := b.serverCommands(ctx)
		if err != nil {
			srv.stop()
			return err
		}
		worstCold = append(worstCold, benchkit.Millis(wc.worst.Duration))
		p99Cold = append(p99Cold, benchkit.Millis(wc.p99))
		cmdsCold = wc.byName
		// The registration history reconciles the hub's first load with
		// PostgreSQL in the background (a statement or three per
		// registration); a resync timed while that runs measures the two
		// together. Wait for it, and report how long it took.
		rec, err := b.waitReconciled(ctx, srv, start.Add(c))
		if err != nil {
			srv.stop()
			return err
		}
		if rec > 0 {
			reconcile = append(reconcile, benchkit.Millis(rec))
		}
		if err := b.rdb.Do(ctx, "SLOWLOG", "RESET").Err(); err != nil {
			srv.stop()
			return fmt.Errorf("redis slowlog reset: %w", err)
		}

		r, err := b.timeResync(ctx, srv)
		if err != nil {
			srv.stop()
			return err
		}
		wr, err := b.serverCommands(ctx)
		srv.stop()
		if err != nil {
			return err
		}
		worstResync = append(worstResync, benchkit.Millis(wr.worst.Duration))
		p99Resync = append(p99Resync, benchkit.Millis(wr.p99))
		cmdsResync = wr.byName
		resync = append(resync, benchkit.Millis(r))
		b.logf("run %d: ready %v after start (server CPU %s, RSS %s, live heap %s); history reconciled %v after ready; resync %v after the subscription was killed; "+
			"slowest redis command of the server: %v while loading (%s), %v while resyncing (%s); load average %s",
			run, c.Round(time.Millisecond), benchkit.FmtMs(cpu[len(cpu)-1]), benchkit.FmtMiB(rss[len(rss)-1]), benchkit.FmtMiB(heap[len(heap)-1]),
			rec.Round(time.Millisecond), r.Round(time.Millisecond),
			wc.worst.Duration, commandName(wc.worst.Args), wr.worst.Duration, commandName(wr.worst.Args), loadAverage())
		b.logf("run %d: the server's redis commands while loading: %s", run, wc.byName)
		b.logf("run %d: the server's redis commands while resyncing: %s", run, wr.byName)
	}
	n := benchkit.FmtCount(float64(*nregs))
	ok := func(v, limit float64) *bool { return benchkit.BoolPtr(v <= limit) }
	b.add("cold start to /readyz 200 ("+n+" registrations)", cold.Format(benchkit.FmtMs), "", nil)
	b.add("server CPU time to /readyz 200", cpu.Format(benchkit.FmtMs), "", nil)
	b.add("resync after a redis reconnect ("+n+")", resync.Format(benchkit.FmtMs), "", nil)
	if len(reconcile) > 0 {
		b.add("registration history reconciled with PostgreSQL, after ready (in the background)", reconcile.Format(benchkit.FmtMs), "", nil)
	}
	b.add("slowest redis command of the server while loading", worstCold.Format(benchkit.FmtMs), "≤ 10 ms", ok(slices.Max(worstCold), 10))
	b.add("slowest redis command of the server while resyncing", worstResync.Format(benchkit.FmtMs), "≤ 10 ms", ok(slices.Max(worstResync), 10))
	b.add("p99 of the server's redis commands while loading / resyncing", p99Cold.Format(benchkit.FmtMs)+" / "+p99Resync.Format(benchkit.FmtMs), "", nil)
	b.add("the server's redis commands while loading (last run): count, mean, max", cmdsCold, "", nil)
	b.add("the server's redis commands while resyncing (last run): count, mean, max", cmdsResync, "", nil)
	b.add("server RSS when ready", rss.Format(benchkit.FmtMiB), "", nil)
	b.add("server live heap when ready (after a GC)", heap.Format(benchkit.FmtMiB), "", nil)
	perReg := rss.Median() / float64(*nregs)
	b.add("server RSS per registration (reference: redis used_memory per registration)",
		fmt.Sprintf("%.0f B (redis %.0f B, ratio %.2f)", perReg, redisPerReg, perReg/redisPerReg), "ratio ≤ 2", ok(perReg/redisPerReg, 2))
	heapPerReg := heap.Median() / float64(*nregs)
	b.add("server live heap per registration (reference: redis used_memory per registration)",
		fmt.Sprintf("%.0f B (redis %.0f B, ratio %.2f)", heapPerReg, redisPerReg, heapPerReg/redisPerReg), "ratio ≤ 2", ok(heapPerReg/redisPerReg, 2))
	return nil
}

// freeLoopback returns a loopback address with a port free right now.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// liveHeap asks the server's profiler (--pprof) for a collection and the
// heap that is left: what Redis's used_memory is to Redis, live bytes.
func (b *bench) liveHeap(ctx context.Context, pprofAddr string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/heap?gc=1&debug=1", nil)
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("server heap profile: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("server heap profile: %w", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("server heap profile has no HeapAlloc line")
}

// redisUsedMemory is INFO memory's used_memory.
func (b *bench) redisUsedMemory(ctx context.Context) (int64, error) {
	info, err := b.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("redis info memory has no used_memory")
}

// slowlogAll makes Redis log every command with its duration (the bench's
// Redis is private), so that the server's slowest can be found; restore
// puts the settings back.
func (b *bench) slowlogAll(ctx context.Context) (restore func(), err error) {
	old, err := b.rdb.ConfigGet(ctx, "slowlog-*").Result()
	if err != nil {
		return nil, fmt.Errorf("redis config get slowlog: %w", err)
	}
	if err := b.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err(); err != nil {
		return nil, fmt.Errorf("redis config set slowlog: %w", err)
	}
	if err := b.rdb.ConfigSet(ctx, "slowlog-max-len", "1000000").Err(); err != nil {
		return nil, fmt.Errorf("redis config set slowlog: %w", err)
	}
	return func() {
		for k, v := range old {
			_ = b.rdb.ConfigSet(context.Background(), k, v).Err()
		}
		_ = b.rdb.Do(context.Background(), "SLOWLOG", "RESET").Err()
	}, nil
}

// commandStats sums up the commands a client named presencehub ran since
// the slowlog was reset, as Redis timed their execution: the longest, the
// 99th percentile, and per command name the count, mean and maximum. On a
// loaded machine Redis itself is descheduled now and then in the middle of
// a command, which puts a cheap command at the top; the means tell what
// the commands cost.
type commandStats struct {
	worst  redis.SlowLog
	p99    time.Duration
	byName string // "MGET 400× 0.21/32.0 ms, …", the most time first
}

func (b *bench) serverCommands(ctx context.Context) (commandStats, error) {
	logs, err := b.rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		return commandStats{}, fmt.Errorf("redis slowlog get: %w", err)
	}
	return summarizeCommands(logs)
}

func summarizeCommands(logs []redis.SlowLog) (commandStats, error) {
	var st commandStats
	type agg struct {
		name       string
		n          int
		total, max time.Duration
	}
	byName := map[string]*agg{}
	var ds []time.Duration
	for _, l := range logs {
		if l.ClientName != "presencehub" {
			continue
		}
		ds = append(ds, l.Duration)
		if l.Duration > st.worst.Duration {
			st.worst = l
		}
		name := commandName(l.Args)
		a := byName[name]
		if a == nil {
			a = &agg{name: name}
			byName[name] = a
		}
		a.n++
		a.total += l.Duration
		a.max = max(a.max, l.Duration)
	}
	if len(ds) == 0 {
		return st, errors.New("redis slowlog holds no command of a client named presencehub")
	}
	slices.Sort(ds)
	st.p99 = ds[min(len(ds)-1, len(ds)*99/100)]
	all := make([]*agg, 0, len(byName))
	for _, a := range byName {
		all = append(all, a)
	}
	slices.SortFunc(all, func(x, y *agg) int { return int(y.total - x.total) })
	var parts []string
	for _, a := range all {
		parts = append(parts, fmt.Sprintf("%s %d× %s/%s", a.name, a.n,
			benchkit.FmtMs(benchkit.Millis(a.total/time.Duration(a.n))), benchkit.FmtMs(benchkit.Millis(a.max))))
	}
	st.byName = strings.Join(parts, ", ")
	return st, nil
}

// waitReconciled waits until the server's registration history has
// reconciled with the hub (presencehub_history_reconciles_total ≥ 1) and
// returns how long after ready that was; 0 when the server keeps no
// registration history.
func (b *bench) waitReconciled(ctx context.Context, srv *benchServer, ready time.Time) (time.Duration, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		v, err := b.metric(ctx, srv, "presencehub_history_reconciles_total")
		if err != nil && strings.Contains(err.Error(), "not found") {
			return 0, nil // --registration-history=false
		}
		if err == nil && v >= 1 {
			return time.Since(ready), nil
		}
		if time.Now().After(deadline) {
			b.logf("the registration history did not reconcile within 5 minutes of ready (last error %v): the resync is timed while it still runs", err)
			return time.Since(ready), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func commandName(args []string) string {
	if len(args) == 0 {
		return "?"
	}
	return strings.ToUpper(args[0]) // Redis logs at most 32 arguments: no count
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
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
