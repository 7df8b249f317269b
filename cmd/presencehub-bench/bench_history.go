package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

const benchHistoryHelp = `The registration history's cost. Two parts:

1. History on versus off, in the same run and the same window: two servers
   are started side by side on the same Redis and PostgreSQL, one with
   --registration-history=false (the reference) and one with it on; each
   gets --subscribers websocket subscribers over --accounts accounts of
   --users users, and one stream of changes is written into Redis as an SBC
   does, at --rate changes/s. Every change carries its write time in the
   contact (for the latency), so every change is a new binding: the open
   session is closed as replaced and a new one opened, the writer's worst
   case. Both servers see every change. Per run: each server's subscribers' p99 (Redis write → frame) and
   the server's CPU over the window, and the ratios on/off; PostgreSQL rows
   written per change (presencehub_history_rows_total ÷
   presencehub_history_changes_total of the window), and, when PostgreSQL
   runs on this machine, its CPU per 1,000 changes recorded (utime+stime of
   its processes, from pg_stat_activity's pids and /proc, from the window's
   start until the writer has caught up).
   Target: p99 and CPU within 10% (ratio ≤ 1.10).

2. Query times on bulk-loaded history: an account with --sessions sessions
   (ended over the last 25 days, spread over --session-users users) one of
   whom has --user-sessions of them, inserted with INSERT … SELECT
   generate_series, then ANALYZE. Timed (median of --queries): the first
   page (100) of RegistrationHistory for that user and for the account,
   through REST and in the store; a page a week back (since/until); the
   account chart's 7-day query (OnlineSeries) and the flapping filter's
   SessionCounts. EXPLAIN (ANALYZE, BUFFERS) of each is printed to stderr.
   The loaded sessions are deleted at the end.

Short form: 1,000 subscribers over 100 accounts of 50 users, 1,000 changes/s,
10s per run; 1,000,000 sessions. Long form (--long): 10,000 subscribers over
1,000 accounts, 30s per run.`

func benchHistory(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("history", benchHistoryHelp, getenv, stdout, stderr)
	subs := fs.Int("subscribers", 1000, "websocket subscribers per server")
	naccts := fs.Int("accounts", 100, "accounts the subscribers spread over")
	users := fs.Int("users", 50, "registered users per account")
	rate := fs.Float64("rate", 1000, "changes per second")
	dur := fs.Duration("duration", 10*time.Second, "measured time per run")
	warm := fs.Duration("warmup", 2*time.Second, "writes before each measurement, not counted")
	writers := fs.Int("writers", 4, "goroutines writing to Redis")
	sessions := fs.Int("sessions", 1_000_000, "sessions bulk-loaded into one account for the query times (0: skip part 2)")
	sessionUsers := fs.Int("session-users", 10_000, "users the bulk-loaded sessions spread over")
	userSessions := fs.Int("user-sessions", 10_000, "of the bulk-loaded sessions, this many belong to one user")
	queries := fs.Int("queries", 20, "repetitions of each timed query")
	skipAB := fs.Bool("skip-compare", false, "skip part 1 (history on versus off)")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"subscribers": "10000", "accounts": "1000", "duration": "30s"}); err != nil {
		return err
	}
	if *b.serverURL != "" {
		return errors.New("history starts its own two servers: --server-url is not supported")
	}
	if *subs < 1 || *naccts < 1 || *users < 1 || *dur <= 0 || *writers < 1 || *rate <= 0 || *queries < 1 ||
		*sessions < 0 || *sessionUsers < 1 || *userSessions < 0 || *userSessions > *sessions {
		return errors.New("sizes must be positive, and --user-sessions at most --sessions")
	}
	defer b.finish()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := benchkit.NeedFiles(2 * *subs); err != nil {
		return err
	}
	env := b.serverEnv
	b.serverEnv = append(slices.Clip(env), "PRESENCEHUB_REGISTRATION_HISTORY=false")
	off, err := b.server(ctx)
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) { off.stop() })
	b.serverEnv = append(slices.Clip(env), "PRESENCEHUB_REGISTRATION_HISTORY=true")
	on, err := b.server(ctx)
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) { on.stop() })
	b.serverEnv = env

	if !*skipAB {
		if err := b.historyCompare(ctx, off, on, *subs, *naccts, *users, *rate, *warm, *dur, *writers); err != nil {
			return err
		}
	}
	if *sessions > 0 {
		if err := b.historyQueries(ctx, on, *sessions, *sessionUsers, *userSessions, *queries); err != nil {
			return err
		}
	}
	return nil
}

// historyCompare is part 1: one write stream, two servers, measured in the
// same window.
func (b *bench) historyCompare(ctx context.Context, off, on *benchServer, subs, naccts, users int, rate float64, warm, dur time.Duration, writers int) error {
	b.logf("creating %d accounts", naccts)
	accts, err := b.accounts(ctx, func() *benchServer { return on }, naccts)
	if err != nil {
		return err
	}
	pool := make([]benchAOR, 0, naccts*users)
	poolAcct := make([]int, 0, cap(pool))
	for u := range users {
		for a, acct := range accts {
			pool = append(pool, benchAOR{fmt.Sprintf("user%04d", u+1), acct.realm})
			poolAcct = append(poolAcct, a)
		}
	}
	if err := b.registerAll(ctx, pool, 10*time.Minute); err != nil {
		return err
	}
	w := &streamWindow{}
	servers := []*benchServer{off, on}
	conns := make([][]*wsSub, 2)
	for i, srv := range servers {
		b.logf("connecting %d subscribers to the server with history %s", subs, onOff(i == 1))
		if conns[i], err = dialSubscribers(ctx, srv, b.key, accts, subs, w); err != nil {
			return err
		}
		c := conns[i]
		b.onCleanup(func(context.Context) { closeSubscribers(c) })
	}
	var p99s, cpus [2]benchkit.Spread
	var p99Ratio, cpuRatio, rowsPerChange, written, pgPer1k benchkit.Spread
	pg, err := localPostgres(ctx, *b.c.DatabaseURL)
	if err != nil {
		return err
	}
	if pg != nil {
		defer pg.Close()
	} else {
		b.logf("PostgreSQL is not on this machine: its CPU is not measured")
	}
	var next atomic.Int64
	for run := 1; run <= *b.runs; run++ {
		perAcct := make([]atomic.Int64, len(accts))
		w.reset(conns[0])
		w.reset(conns[1])
		m := [2]*cpuMeter{b.meter(ctx, off), b.meter(ctx, on)}
		var rows0, changes0 float64
		var pg0 map[int]time.Duration
		var from time.Time
		until, err := driveWrites(ctx, rate, warm, dur, writers, func(f time.Time) {
			from = f
			w.from.Store(f.UnixNano())
			w.until.Store(1<<63 - 1)
		}, func(n int) error {
			return b.writePool(ctx, pool, poolAcct, perAcct, &next, from.UnixNano(), n)
		}, func() {
			rows0, _ = b.metric(ctx, on, "presencehub_history_rows_total")
			changes0, _ = b.metric(ctx, on, "presencehub_history_changes_total")
			if pg != nil {
				pg0, _ = postgresCPU(ctx, pg)
			}
			m[0].start()
			m[1].start()
		})
		if err != nil {
			return err
		}
		w.until.Store(until.UnixNano())
		b.stopMeter(m[0])
		m[1].stop()
		var p99 [2]float64
		for i := range servers {
			expected := int64(0)
			for _, s := range conns[i] {
				expected += perAcct[s.acct].Load()
			}
			received, _ := waitDelivered(ctx, conns[i], expected)
			lat, _, _, _ := w.collect(conns[i])
			slices.Sort(lat)
			p99[i] = benchkit.Millis(benchkit.Percentile(lat, 99))
			p99s[i] = append(p99s[i], p99[i])
			cpus[i] = append(cpus[i], m[i].Server)
			if received != expected {
				b.logf("run %d: history %s: %d of %d deliveries received", run, onOff(i == 1), received, expected)
			}
		}
		// Wait for the writer to catch up with the window's changes before
		// reading its counters.
		writes := float64(sumCounts(perAcct))
		deadline := time.Now().Add(30 * time.Second)
		var rows1, changes1 float64
		for {
			rows1, _ = b.metric(ctx, on, "presencehub_history_rows_total")
			changes1, _ = b.metric(ctx, on, "presencehub_history_changes_total")
			queued, _ := b.metric(ctx, on, "presencehub_history_queued")
			if queued == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		dc := changes1 - changes0
		if dc > 0 {
			rowsPerChange = append(rowsPerChange, (rows1-rows0)/dc)
		}
		if pg != nil && pg0 != nil && dc > 0 {
			// From the window's start until the writer caught up: what
			// PostgreSQL spent on the changes it recorded (and on the two
			// servers' few other queries).
			if pg1, err := postgresCPU(ctx, pg); err == nil {
				var spent time.Duration
				for pid, t := range pg1 {
					spent += t - pg0[pid] // a process started since counts whole
				}
				pgPer1k = append(pgPer1k, benchkit.Millis(spent)/dc*1000)
			}
		}
		written = append(written, dc/max(writes, 1))
		p99Ratio = append(p99Ratio, p99[1]/p99[0])
		cpuRatio = append(cpuRatio, m[1].Server/max(m[0].Server, 1e-9))
		b.logf("run %d: %0.f writes; history off: p99 %.2f ms, %.2f cores; on: p99 %.2f ms, %.2f cores; %s", run, writes,
			p99[0], m[0].Server, p99[1], m[1].Server, m[0])
	}
	name := benchkit.FmtCount(rate) + "/s"
	ratio := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }
	b.add(name+" history off (reference): subscribers' p99", p99s[0].Format(benchkit.FmtMs), "", nil)
	b.add(name+" history on: subscribers' p99", p99s[1].Format(benchkit.FmtMs), "", nil)
	b.add(name+" p99 on ÷ off", p99Ratio.Format(ratio), "≤ 1.10×", benchkit.BoolPtr(p99Ratio.Median() <= 1.10))
	b.add(name+" history off (reference): server CPU", cpus[0].Format(benchkit.FmtCores), "", nil)
	b.add(name+" history on: server CPU", cpus[1].Format(benchkit.FmtCores), "", nil)
	b.add(name+" CPU on ÷ off", cpuRatio.Format(ratio), "≤ 1.10×", benchkit.BoolPtr(cpuRatio.Median() <= 1.10))
	b.add(name+" PostgreSQL rows written per change", rowsPerChange.Format(func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }), "", nil)
	if len(pgPer1k) > 0 {
		b.add(name+" PostgreSQL CPU per 1,000 changes recorded", pgPer1k.Format(benchkit.FmtMs), "", nil)
	}
	b.add(name+" changes recorded ÷ changes written to Redis", written.Format(func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }), "", nil)
	b.add(fmt.Sprintf("setup: %d subscribers per server over %d accounts of %d users, %v per run", len(conns[0]), naccts, users, dur), fmt.Sprintf("%d runs", *b.runs), "", nil)
	return nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// historyQueries is part 2: bulk-loaded sessions, timed queries, plans.
func (b *bench) historyQueries(ctx context.Context, on *benchServer, sessions, sessionUsers, userSessions, queries int) error {
	// A service provider of its own (part 1 made one with this run's name).
	id := b.runID
	b.runID += "q"
	accts, err := b.accounts(ctx, func() *benchServer { return on }, 1)
	b.runID = id
	if err != nil {
		return err
	}
	acct := accts[0]
	pool, err := pgxpool.New(ctx, *b.c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pool.Close()
	db, err := cli.OpenDB(ctx, b.c, false, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	b.onCleanup(func(ctx context.Context) {
		_, _ = pool.Exec(ctx, `DELETE FROM registration_sessions WHERE account_sid = $1`, acct.sid)
	})
	now := time.Now()
	// Sessions end from 25 days ago to an hour ago (the partitions of the
	// retention's days exist: the server's writer made them at start). One
	// user ("heavy") gets userSessions of them, the others round robin.
	const span = 25 * 24 * time.Hour
	start := time.Now()
	_, err = pool.Exec(ctx, `INSERT INTO registration_sessions (realm, account_sid, user_name, contact, protocol, proxy,
			started_at, ended_at, end_reason, refreshes, start_epoch, start_seq, last_epoch, last_seq)
		SELECT $1, $2,
			CASE WHEN i < $5 THEN 'heavy' ELSE 'user' || lpad((i % $4)::text, 5, '0') END,
			'sip:u@10.0.0.1:5060', 'udp', 'sip:203.0.113.9:' || (1024 + i % 60000),
			t - interval '7 minutes', t, (ARRAY['unregistered','expired','replaced'])[1 + i % 3], i % 5, 'bench', i, 'bench', i
		FROM (SELECT i, $6::timestamptz + (($7::float8 * i) / $3) * interval '1 second' AS t FROM generate_series(0, $3 - 1) AS i) g`,
		acct.realm, acct.sid, sessions, sessionUsers, userSessions, now.Add(-span-time.Hour), span.Seconds())
	if err != nil {
		return fmt.Errorf("bulk-load sessions: %w", err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE registration_sessions`); err != nil {
		return err
	}
	b.logf("loaded %d sessions (%d of user heavy) in %v", sessions, userSessions, time.Since(start).Round(time.Millisecond))
	b.add(fmt.Sprintf("bulk load: %s sessions (INSERT … SELECT generate_series, 4 indexes) and ANALYZE", benchkit.FmtCount(float64(sessions))), time.Since(start).Round(time.Millisecond).String(), "", nil)

	weekAgo := now.Add(-7 * 24 * time.Hour)
	type timed struct {
		name string
		rest string // REST path and query, "" for store-only
		call func() error
		plan func() (string, error)
	}
	histQ := func(q store.HistoryQuery) (func() error, func() (string, error)) {
		return func() error { _, _, err := db.RegistrationHistory(ctx, acct.sid, q); return err },
			func() (string, error) { return db.ExplainRegistrationHistory(ctx, acct.sid, q) }
	}
	var list []timed
	add := func(name, rest string, q store.HistoryQuery) {
		call, plan := histQ(q)
		list = append(list, timed{name, rest, call, plan})
	}
	base := "/v1/Accounts/" + acct.sid + "/RegistrationHistory?limit=100"
	add(fmt.Sprintf("RegistrationHistory, user with %s sessions, first 100", benchkit.FmtCount(float64(userSessions))), base+"&user=heavy", store.HistoryQuery{User: "heavy", Limit: 100})
	add(fmt.Sprintf("RegistrationHistory, account with %s sessions, first 100", benchkit.FmtCount(float64(sessions))), base, store.HistoryQuery{Limit: 100})
	add("RegistrationHistory, account, 100 from a day a week back (since/until)",
		base+"&since="+strconv.FormatInt(weekAgo.Add(-24*time.Hour).UnixMilli(), 10)+"&until="+strconv.FormatInt(weekAgo.UnixMilli(), 10),
		store.HistoryQuery{Since: weekAgo.Add(-24 * time.Hour), Until: weekAgo, Limit: 100})
	add("RegistrationHistory, user, all of the last 7 days (the user page, up to 2,000)", "", store.HistoryQuery{User: "heavy", Since: weekAgo, Limit: 2000})
	from7d := now.Add(-7 * 24 * time.Hour).Truncate(time.Hour).Add(time.Hour)
	list = append(list, timed{"account chart, 7 days by the hour (OnlineSeries)", "",
		func() error { _, err := db.OnlineSeries(ctx, acct.sid, from7d, now, time.Hour); return err },
		func() (string, error) { return db.ExplainOnlineSeries(ctx, acct.sid, from7d, now, time.Hour) }})
	list = append(list, timed{"flapping filter, whole account (SessionCounts)", "",
		func() error { _, err := db.SessionCounts(ctx, acct.sid, now); return err },
		func() (string, error) { return db.ExplainSessionCounts(ctx, acct.sid, now) }})

	for _, tq := range list {
		var storeT, restT benchkit.Spread
		for range queries {
			t0 := time.Now()
			if err := tq.call(); err != nil {
				return fmt.Errorf("%s: %w", tq.name, err)
			}
			storeT = append(storeT, benchkit.Millis(time.Since(t0)))
			if tq.rest == "" {
				continue
			}
			t0 = time.Now()
			if err := b.api(ctx, on, http.MethodGet, tq.rest, nil, nil, http.StatusOK); err != nil {
				return fmt.Errorf("%s: %w", tq.name, err)
			}
			restT = append(restT, benchkit.Millis(time.Since(t0)))
		}
		plan, err := tq.plan()
		if err != nil {
			return fmt.Errorf("explain %s: %w", tq.name, err)
		}
		fmt.Fprintf(b.stderr, "bench history: EXPLAIN (ANALYZE, BUFFERS) of %s:\n%s\n", tq.name, plan)
		b.add(tq.name+": store", storeT.Format(benchkit.FmtMs), "", nil)
		if len(restT) > 0 {
			b.add(tq.name+": REST", restT.Format(benchkit.FmtMs), "", nil)
		}
		b.add(tq.name+": plan", summarizePlan(plan), "", nil)
	}
	return nil
}

var (
	planNode = regexp.MustCompile(`(?:->\s+|^)((?:Parallel )?(?:Index Only Scan|Index Scan Backward|Index Scan|Bitmap Heap Scan|Bitmap Index Scan|Seq Scan))(?: using (\S+))? on (\S+)`)
	planExec = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)
	planBufs = regexp.MustCompile(`^\s*Buffers: shared ((?:hit|read)=\d+(?: (?:hit|read)=\d+)*)`)
)

// parentIndex names the index of registration_sessions that a partition's
// index (named by PostgreSQL after the partition and its columns,
// truncated to 63 bytes) belongs to, by its columns.
func parentIndex(name string) string {
	switch {
	case strings.Contains(name, "account_sid_user_name"):
		return "(account_sid, user_name, started_at DESC, id DESC)"
	case strings.Contains(name, "account_sid_started_at"):
		return "(account_sid, started_at DESC, id DESC)"
	case strings.Contains(name, "realm_user_name"):
		return "(realm, user_name)"
	case strings.Contains(name, "realm_start_epoch"):
		return "(realm, start_epoch, start_seq)"
	}
	return name
}

// summarizePlan lists a plan's scans (kind and index, per relation,
// counted), its top Buffers line and its execution time.
func summarizePlan(plan string) string {
	counts := map[string]int{}
	var order []string
	var bufs string
	for _, line := range strings.Split(plan, "\n") {
		if m := planNode.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			k := m[1]
			if m[2] != "" {
				k += " " + parentIndex(m[2])
			}
			if counts[k] == 0 {
				order = append(order, k)
			}
			counts[k]++
		}
		if m := planBufs.FindStringSubmatch(line); m != nil && bufs == "" {
			bufs = m[1]
		}
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, counts[k]))
	}
	s := strings.Join(parts, ", ")
	if bufs != "" {
		s += "; buffers " + bufs
	}
	if m := planExec.FindStringSubmatch(plan); m != nil {
		s += "; executed in " + m[1] + " ms"
	}
	return s
}

// localPostgres opens a pool on the PostgreSQL at url when it runs on this
// machine (a loopback or unix-socket address), so that its processes' CPU
// can be read from /proc; nil when it does not.
func localPostgres(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	host := cfg.ConnConfig.Host
	if ip := net.ParseIP(host); host != "localhost" && !strings.HasPrefix(host, "/") && (ip == nil || !ip.IsLoopback()) {
		return nil, nil
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// postgresCPU returns the CPU (user+system) so far of each process of the
// PostgreSQL server (its backends and background workers), by pid.
func postgresCPU(ctx context.Context, pool *pgxpool.Pool) (map[int]time.Duration, error) {
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity`)
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	cpu := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		if t, err := benchkit.ProcCPU(int(pid)); err == nil {
			cpu[int(pid)] = t
		}
	}
	return cpu, nil
}
