package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

const benchStreamHelp = `Websocket fan-out. --subscribers websocket connections, each subscribed to
one of --accounts accounts (round robin), each account with --users
registered users. Changes are written into Redis as an SBC writes them
(SETEX + ZADD per registration; each millisecond's writes go in one pipeline,
as from several SBC processes at once, so that the load generator leaves the
CPU to the server), round robin over all users, at each rate of --rates per
second: --warmup, then --duration measured, --runs times per rate. Every write
carries its time in the contact (";ts=<unix ns>"), so each subscriber
measures Redis-write → frame-received latency. By default that time is the
generator's clock just before it sends the write; with --clock redis it is
Redis's own clock as it executes the write (a script runs the SBC's SETEX
and ZADD and stamps the value), which leaves out the generator's own delays.

Reported per rate: p50/p99/max latency; deliveries/s, the frames of the
window's writes the subscribers received while the writes went on (the
target column shows what keeping up takes); lost deliveries (expected =
writes in the window × subscribers of that account, minus the frames that
arrived before the subscribers had been quiet for 10 s, minus the changes
the server conflated away for a subscriber that fell behind, which are
reported on their own row; must be 0), and per run with deliveries missing,
where they are: on sockets that ended (the server's close codes), still
queued in the server's subscription queues
(presencehub_subscription_queued_changes), or written to Redis while an
earlier write of the same user still waited to be read (the server reads a
notified key once, so a server that lags Redis by more than a user's rewrite
period delivers its latest state, not each write); seq gaps
and resync snapshots; the server's CPU (utime+stime from /proc/<pid>/stat
over the window) and RSS. Each change goes to a user not written for
users×accounts/rate seconds, so a lost delivery means the server dropped or
(lagging that far behind) coalesced it.

Targets: p99 ≤ 4 ms and ≤ 0.5 core at 1,000/s; p99 ≤ 40 ms at 5,000/s; 0 lost.

Short form: 1,000 subscribers over 100 accounts, 10s per run. Long form
(--long): 10,000 subscribers over 1,000 accounts, 30s per run.`

func benchStream(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("stream", benchStreamHelp, getenv, stdout, stderr)
	subs := fs.Int("subscribers", 1000, "websocket subscribers")
	naccts := fs.Int("accounts", 100, "accounts the subscribers spread over")
	users := fs.Int("users", 50, "registered users per account (the changes go round robin over all of them)")
	var rates cli.StringList
	fs.Var(&rates, "rates", "changes per second to measure, comma-separated (default 1000,5000)")
	dur := fs.Duration("duration", 10*time.Second, "measured time per run")
	warm := fs.Duration("warmup", 2*time.Second, "writes before each measurement, not counted")
	writers := fs.Int("writers", 4, "goroutines writing to Redis (each millisecond's writes go as one pipeline)")
	hostileFlag := fs.Bool("hostile", false, "measure each run twice: as it is, then with one hostile key attacking during the window (a socket that never reads sends 300 subscribes of 8,000-name watchlists; 2,000 random bearer tokens, 50 at a time); reports the others' p99 against the quiet run and the server's RSS growth. The attacker is a process of its own (the bench runs itself as presencehub-bench hostile-attack), on the same machine")
	hostileInProcess := fs.Bool("hostile-in-process", false, "with --hostile: attack from inside the bench process, which also runs the measured subscribers (its frames, requests and garbage then delay the measurement itself; for comparison)")
	fill := fs.Int("fill-history", -1, "changes per account written before the subscribers connect, so that the server's websocket resume history (serve --history, 1,024 per account by default) is full from the start, as on a server that has run for a while, and does not grow during the measured windows; -1: 1,024 with --hostile (whose RSS growth the history's own growth would blur), 0 otherwise")
	floor := fs.Bool("floor", true, "after each run, run bench floor (in a process of its own) at the frame rate the subscribers received, over as many connections, for as long; report the server's CPU per delivered frame against the floor writer's CPU per message, the in-run reference")
	clock := fs.String("clock", "client", `where a write's time comes from: "client", the load generator's clock before it sends the write, or "redis", Redis's own clock as it executes the write (leaves out the generator's own delays before the write)`)
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"subscribers": "10000", "accounts": "1000", "duration": "30s"}); err != nil {
		return err
	}
	rateList, err := parseRates(rates, 1000, 5000)
	if err != nil {
		return err
	}
	if *clock != "redis" && *clock != "client" {
		return fmt.Errorf(`--clock %q: want "redis" or "client"`, *clock)
	}
	if *subs < 1 || *naccts < 1 || *users < 1 || *dur <= 0 || *writers < 1 {
		return errors.New("--subscribers, --accounts, --users, --duration and --writers must be positive")
	}
	defer b.finish()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := benchkit.NeedFiles(*subs); err != nil {
		return err
	}
	srv, err := b.server(ctx)
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) { srv.stop() })
	b.logf("creating %d accounts", *naccts)
	accts, err := b.accounts(ctx, func() *benchServer { return srv }, *naccts)
	if err != nil {
		return err
	}
	// The pool of users, in the order the writers go through it: account
	// by account, so consecutive writes go to different accounts.
	pool := make([]benchAOR, 0, *naccts**users)
	poolAcct := make([]int, 0, cap(pool))
	for u := range *users {
		for a, acct := range accts {
			pool = append(pool, benchAOR{fmt.Sprintf("user%04d", u+1), acct.realm})
			poolAcct = append(poolAcct, a)
		}
	}
	if err := b.registerAll(ctx, pool, 10*time.Minute); err != nil {
		return err
	}
	if *fill < 0 && *hostileFlag {
		*fill = 1024
	}
	if *fill > 0 {
		if err := b.fillHistory(ctx, srv, pool, *users, *fill, 10*time.Minute); err != nil {
			return err
		}
	}
	w := &streamWindow{}
	b.logf("connecting %d subscribers", *subs)
	conns, err := dialSubscribers(ctx, srv, b.key, accts, *subs, w)
	if err != nil {
		return err
	}
	b.onCleanup(func(context.Context) { closeSubscribers(conns) })

	writeSHA, err := benchWriteScript.Load(ctx, b.rdb).Result()
	if err != nil {
		return fmt.Errorf("load the write script into redis: %w", err)
	}
	modes := []bool{false}
	var hk *hostile
	if *hostileFlag {
		if hk, err = b.hostileKey(ctx, srv, accts[0], *hostileInProcess); err != nil {
			return err
		}
		modes = append(modes, true)
	}
	var next atomic.Int64 // position in the pool, across runs
	for _, rate := range rateList {
		results := map[bool]*streamResult{}
		for run := 1; run <= *b.runs; run++ {
			for _, hostileRun := range modes {
				res := results[hostileRun]
				if res == nil {
					res = &streamResult{}
					results[hostileRun] = res
				}
				p50, p99, pmax, dps, lost, cores, rss := &res.p50, &res.p99, &res.pmax, &res.dps, &res.lost, &res.cores, &res.rss
				rssBefore := srv.rss()
				attackCtx, stopAttack := context.WithCancel(ctx)
				attackDone := make(chan struct{})
				startAttack := func() {
					if !hostileRun {
						close(attackDone)
						return
					}
					go func() { defer close(attackDone); hk.run(attackCtx, b) }()
				}
				perAcct := make([]atomic.Int64, len(accts))
				w.reset(conns)
				changes0, changesErr := b.metric(ctx, srv, "presencehub_changes_total")
				writes0 := next.Load()
				m := b.meter(ctx, srv)
				var from time.Time
				var gc0 serverGC
				peak := &rssPeak{}
				until, err := driveWrites(ctx, rate, *warm, *dur, *writers, func(f time.Time) {
					from = f
					w.from.Store(f.UnixNano())
					w.until.Store(1<<63 - 1)
				}, func(n int) error {
					first := int(next.Add(int64(n)) - int64(n))
					// Each write's time: the generator's clock now, or what
					// Redis's clock said as the script ran it (--clock redis).
					sent := time.Now().UnixNano()
					param := ";ts=" + strconv.FormatInt(sent, 10)
					stamps := make([]int64, n)
					cmds := make([]*redis.Cmd, n)
					_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
						for i := range n {
							k := (first + i) % len(pool)
							a := pool[k]
							if *clock == "redis" {
								expiry := time.Now().Add(10 * time.Minute).UnixMilli()
								cmds[i] = p.EvalSha(ctx, writeSHA, []string{store.RedisUserPrefix + a.user + "@" + a.realm, store.RedisActiveUserSet},
									store.SBCValue(benchRecord(a.user, k, ";ts=@TS@"), expiry), 600, expiry)
								continue
							}
							stamps[i] = sent
							if _, err := store.RegisterAsSBC(ctx, p, a.user, a.realm, benchRecord(a.user, k, param), 10*time.Minute); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						return err
					}
					for i := range n {
						if c := cmds[i]; c != nil {
							ts, err := strconv.ParseInt(fmt.Sprint(c.Val()), 10, 64)
							if err != nil {
								return fmt.Errorf("bench write script answered %v", c.Val())
							}
							stamps[i] = ts
						}
						if stamps[i] >= from.UnixNano() {
							perAcct[poolAcct[(first+i)%len(pool)]].Add(1)
						}
					}
					return nil
				}, func() { m.start(); gc0 = b.serverGC(srv); peak.start(srv); startAttack() })
				gc1 := b.serverGC(srv)
				stopAttack()
				peakRSS := peak.stop()
				if err != nil {
					return err
				}
				<-attackDone
				w.until.Store(until.UnixNano())
				b.stopMeter(m)
				span := until.Sub(from)
				expected := int64(0)
				for _, s := range conns {
					expected += perAcct[s.acct].Load()
				}
				received, waited := waitDelivered(ctx, conns, expected)
				why := missingWhy(ctx, b, srv, conns, perAcct, waited)
				if changes1, err := b.metric(ctx, srv, "presencehub_changes_total"); err == nil && changesErr == nil {
					// Each write is a change of its user (a new contact);
					// the server reads a key once however often it was
					// notified while it waited to be read, so a server
					// lagging behind Redis by more than a user's rewrite
					// period emits fewer changes than there were writes.
					writes := next.Load() - writes0
					if c := writes - int64(changes1-changes0); c > 0 {
						why += fmt.Sprintf("; the hub emitted %.0f changes for %d writes (warm-up included): %d writes were read from Redis only after a later write of the same user (coalesced while the server lagged the notifications; the latest state was delivered), about %d deliveries",
							changes1-changes0, writes, c, c*int64(len(conns))/int64(len(accts)))
					}
				}
				lat, live, g, rs := w.collect(conns)
				res.gaps += g
				res.resyncs += rs
				slices.Sort(lat)
				*p50 = append(*p50, benchkit.Millis(benchkit.Percentile(lat, 50)))
				*p99 = append(*p99, benchkit.Millis(benchkit.Percentile(lat, 99)))
				*pmax = append(*pmax, benchkit.Millis(benchkit.Percentile(lat, 100)))
				*dps = append(*dps, float64(live)/span.Seconds())
				floorNote := ""
				if *floor && !hostileRun && srv.pid != 0 && live > 0 {
					fc, err := b.floorAt(ctx, float64(live)/span.Seconds(), len(conns), *dur)
					if err != nil {
						return err
					}
					res.floorCores = append(res.floorCores, fc)
					res.floorRatio = append(res.floorRatio, m.Server/fc)
					floorNote = fmt.Sprintf("; bench floor's writer at %.0f msgs/s: %.2f cores, server ÷ floor %.2f×", float64(live)/span.Seconds(), fc, m.Server/fc)
				}
				mergedAway := merged(conns)
				*lost = append(*lost, float64(expected-received-mergedAway))
				res.merged += mergedAway
				if expected-received-mergedAway > 0 {
					res.why = append(res.why, fmt.Sprintf("run %d: %s", run, why))
				}
				if srv.pid != 0 {
					*cores = append(*cores, m.Server)
					*rss = append(*rss, float64(srv.rss()))
				}
				gcNote := ""
				if gc0.ok && gc1.ok {
					res.allocMB = append(res.allocMB, (gc1.alloc-gc0.alloc)/(1<<20))
					res.gcs = append(res.gcs, gc1.cycles-gc0.cycles)
					gcNote = fmt.Sprintf("; server allocated %.0f MiB in %.0f GC cycles", (gc1.alloc-gc0.alloc)/(1<<20), gc1.cycles-gc0.cycles)
				}
				self, _ := benchkit.ProcRSS(os.Getpid())
				b.logf("%.0f/s run %d: %d writes→%d expected deliveries, %d received, %d conflated away; p50 %.2f ms, p99 %.2f ms, max %.1f ms; %s; this process (generator and subscribers) RSS %.0f MiB%s%s; missing deliveries: %s",
					rate, run, sumCounts(perAcct), expected, received, mergedAway, (*p50)[len(*p50)-1], (*p99)[len(*p99)-1], (*pmax)[len(*pmax)-1], m, float64(self)/(1<<20), floorNote, gcNote, why)
				if peakRSS > 0 {
					res.growth = append(res.growth, float64(peakRSS-rssBefore))
				}
				if hostileRun {
					hk.peakRSS = peakRSS
					b.logf("%.0f/s run %d with a hostile key: %s; server RSS before the run %.0f MiB", rate, run, hk, float64(rssBefore)/(1<<20))
				}
			}
		}
		for _, hostileRun := range modes {
			res := results[hostileRun]
			p50, p99, pmax, dps, lost, cores, rss, gaps, resyncs := res.p50, res.p99, res.pmax, res.dps, res.lost, res.cores, res.rss, res.gaps, res.resyncs
			name := benchkit.FmtCount(rate) + "/s"
			if hostileRun {
				name += " with a hostile key"
			}
			p99Target, cpuTarget := 40.0, 0.0
			if rate <= 1000 {
				p99Target, cpuTarget = 4.0, 0.5
			}
			b.add(name+": p50 latency", p50.Format(benchkit.FmtMs), "", nil)
			b.add(name+": p99 latency", p99.Format(benchkit.FmtMs), "≤ "+benchkit.FmtMs(p99Target), benchkit.BoolPtr(p99.Median() <= p99Target))
			b.add(name+": max latency", pmax.Format(benchkit.FmtMs), "", nil)
			b.add(name+": deliveries while writing", dps.Format(benchkit.FmtRate), "≈ "+benchkit.FmtRate(rate*float64(len(conns))/float64(len(accts))), nil)
			b.add(name+": lost deliveries", lost.Format(benchkit.FmtCount), "0", benchkit.BoolPtr(slices.Max(lost) == 0))
			for _, w := range res.why {
				b.add(name+": why deliveries are missing", w, "-", nil)
			}
			if res.merged > 0 {
				b.add(name+": changes conflated away (subscriber fell behind; latest state delivered)", fmt.Sprintf("%d (all runs)", res.merged), "-", nil)
			}
			if gaps > 0 || resyncs > 0 {
				b.add(name+": seq gaps / resync snapshots", fmt.Sprintf("%d / %d (all runs)", gaps, resyncs), "0", benchkit.BoolPtr(false))
			}
			if len(cores) > 0 {
				var target string
				var met *bool
				if cpuTarget > 0 {
					target, met = "≤ "+benchkit.FmtCores(cpuTarget), benchkit.BoolPtr(cores.Median() <= cpuTarget)
				}
				b.add(name+": server CPU", cores.Format(benchkit.FmtCores), target, met)
				if len(res.floorRatio) > 0 {
					// The target is for saturation (5,000/s); below
					// it the ratio is shown without one.
					target, met = "", nil
					if rate >= 5000 {
						target, met = "≤ 1.8×", benchkit.BoolPtr(res.floorRatio.Median() <= 1.8)
					}
					b.add(name+": server CPU per delivered frame ÷ bench floor's writer per message (same rate, same run)",
						fmt.Sprintf("%s (floor writer %s)", res.floorRatio.Format(fmtRatio), res.floorCores.Format(benchkit.FmtCores)), target, met)
				}
				b.add(name+": server RSS", rss.Format(benchkit.FmtMiB), "", nil)
			}
			if len(res.allocMB) > 0 {
				b.add(name+": server allocations / GC cycles in the window", res.allocMB.Format(benchkit.FmtCount)+" MiB / "+res.gcs.Format(benchkit.FmtCount), "", nil)
			}
			if *hostileFlag && len(res.growth) > 0 {
				// The quiet run's growth is the reference: the garbage of
				// the normal load alone moves RSS by tens of MiB (GC cycles).
				target, met := "", (*bool)(nil)
				if hostileRun {
					target, met = "≤ 64 MiB", benchkit.BoolPtr(slices.Max(res.growth) <= 64<<20)
				}
				b.add(name+": server RSS growth during the run (peak − before)", res.growth.Format(benchkit.FmtMiB), target, met)
			}
			if hostileRun {
				quiet := results[false]
				ratio := p99.Median() / quiet.p99.Median()
				b.add(name+": others' p99 ÷ the same run without it", fmt.Sprintf("%.2f× (%s vs %s)", ratio, benchkit.FmtMs(p99.Median()), benchkit.FmtMs(quiet.p99.Median())), "≤ 2×", benchkit.BoolPtr(ratio <= 2))
			}
		}
	}
	b.add(fmt.Sprintf("setup: %d subscribers over %d accounts of %d users, %v per run", *subs, *naccts, *users, *dur), fmt.Sprintf("%d runs per rate", *b.runs), "", nil)
	return nil
}

// streamResult gathers one mode's runs of one rate.
type streamResult struct {
	p50, p99, pmax, dps, lost, cores, rss, growth benchkit.Spread
	allocMB, gcs                                  benchkit.Spread // the server's allocations and GC cycles in the window (its /metrics)
	floorCores, floorRatio                        benchkit.Spread // bench floor's writer at the delivered rate; server cores ÷ it
	gaps, resyncs                                 int
	merged                                        int64
	why                                           []string // per run with deliveries missing: where they are
}

func fmtRatio(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

// floorAt runs bench floor in a process of its own at rate messages/s over
// conns connections for dur, once, and returns its writing process's CPU
// in cores: the cost of moving the frames the server just moved, with
// nothing else.
func (b *bench) floorAt(ctx context.Context, rate float64, conns int, dur time.Duration) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, exe, "floor", "--tsv", "--runs", "1", "--connections", strconv.Itoa(conns),
		"--rates", strconv.FormatFloat(rate, 'f', 0, 64), "--duration", dur.String())
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("bench floor at %.0f msgs/s: %w\n%s", rate, err, errb.String())
	}
	return floorWriterCores(out)
}

// floorWriterCores reads the writing process's CPU from bench floor's
// --tsv rows.
func floorWriterCores(tsv []byte) (float64, error) {
	for _, line := range strings.Split(string(tsv), "\n") {
		f := strings.Split(line, "\t")
		if len(f) >= 3 && strings.HasSuffix(f[1], ": writing process CPU") {
			v, err := strconv.ParseFloat(strings.Fields(f[2])[0], 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("bench floor's writing process CPU %q", f[2])
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("bench floor printed no writing process CPU:\n%s", tsv)
}

func sumCounts(v []atomic.Int64) int64 {
	var n int64
	for i := range v {
		n += v[i].Load()
	}
	return n
}

// benchWriteScript writes a registration with the SBC's two commands
// (SETEX user:<aor>, then ZADD active-user; the server sees the same
// keyspace notifications) and stamps the contact's ";ts=@TS@" with Redis's
// own clock as it executes them, in unix ns, which it returns: latency is
// then measured from the write itself, not from before the generator sent
// it (--clock redis).
var benchWriteScript = redis.NewScript(`
local t = redis.call('TIME')
local ts = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
local v = string.gsub(ARGV[1], '@TS@', ts, 1)
redis.call('SETEX', KEYS[1], ARGV[2], v)
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
return ts
`)

// driveWrites writes rate changes per second for warm+dur: every
// millisecond the writes that are due go as one batch (one pipeline) to one
// of writers goroutines, so the load generator spends little CPU on Redis
// round trips. plan is told when the measured window begins, before the
// first write; atFrom is called when it begins. It returns when the last
// batch has been written, with that time: the window's end.
func driveWrites(ctx context.Context, rate float64, warm, dur time.Duration, writers int,
	plan func(from time.Time), writeBatch func(n int) error, atFrom func()) (until time.Time, err error) {
	start := time.Now().Add(20 * time.Millisecond)
	from := start.Add(warm)
	plan(from)
	total := int64(rate * (warm + dur).Seconds())
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int, 4096)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if ctx.Err() != nil {
					continue
				}
				if err := writeBatch(n); err != nil {
					cancel(fmt.Errorf("write to redis: %w", err))
				}
			}
		}()
	}
	time.Sleep(time.Until(start))
	var sent int64
	started := false
	for sent < total && ctx.Err() == nil {
		now := time.Now()
		if !started && !now.Before(from) {
			started = true
			atFrom()
		}
		if due := min(int64(now.Sub(start).Seconds()*rate), total); due > sent {
			work <- int(due - sent)
			sent = due
		}
		time.Sleep(time.Millisecond)
	}
	close(work)
	wg.Wait()
	return time.Now(), context.Cause(ctx)
}

// streamWindow is the measured window the subscribers count frames in: frames
// whose write time (the contact's ts) is in [from, until).
type streamWindow struct {
	from, until atomic.Int64 // unix ns
}

func (w *streamWindow) reset(conns []*wsSub) {
	w.from.Store(1<<63 - 1)
	w.until.Store(1<<63 - 1)
	for _, s := range conns {
		s.mu.Lock()
		s.recv, s.live, s.lat, s.gaps, s.resyncs, s.merged = 0, 0, s.lat[:0], 0, 0, 0
		s.mu.Unlock()
	}
}

// collect takes the latencies and counts of the window from every subscriber.
func (w *streamWindow) collect(conns []*wsSub) (lat []time.Duration, live int64, gaps, resyncs int) {
	for _, s := range conns {
		s.mu.Lock()
		lat = append(lat, s.lat...)
		live += s.live
		gaps += s.gaps
		resyncs += s.resyncs
		s.mu.Unlock()
	}
	return lat, live, gaps, resyncs
}

// merged is how many changes of the window the server conflated away for
// the subscribers (they fell behind; each got the latest state instead).
func merged(conns []*wsSub) int64 {
	var n int64
	for _, s := range conns {
		s.mu.Lock()
		n += s.merged
		s.mu.Unlock()
	}
	return n
}

// waitDelivered waits until the subscribers have received expected frames
// of the window, or until nothing more has arrived for 10 s (at most 10
// minutes in all): on a loaded machine a server or this process can stall
// for seconds, and the backlog of a saturated run can take minutes to
// drain; a wait with a fixed end counted late deliveries as lost.
func waitDelivered(ctx context.Context, conns []*wsSub, expected int64) (int64, time.Duration) {
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	var last int64 = -1
	lastChange := time.Now()
	for {
		var got int64
		for _, s := range conns {
			got += s.received()
		}
		if got >= expected || time.Now().After(deadline) || ctx.Err() != nil {
			return got, time.Since(start)
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > 10*time.Second {
			return got, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// missingWhy says where the deliveries not received are, once the wait is
// over: on sockets that ended (the server's close codes, or the error),
// still queued in the server's subscription queues (its
// presencehub_subscription_queued_changes), or neither (written, or being
// written, and not read by this process yet).
func missingWhy(ctx context.Context, b *bench, srv *benchServer, conns []*wsSub, perAcct []atomic.Int64, waited time.Duration) string {
	var missingOpen, missingEnded int64
	ended := map[string]int{}
	for _, s := range conns {
		s.mu.Lock()
		missing := perAcct[s.acct].Load() - s.recv
		s.mu.Unlock()
		select {
		case <-s.done:
			ended[s.endReason()]++
			missingEnded += max(missing, 0)
		default:
			missingOpen += max(missing, 0)
		}
	}
	var parts []string
	if len(ended) == 0 {
		parts = append(parts, "no socket ended")
	} else {
		reasons := slices.Sorted(maps.Keys(ended))
		var r []string
		for _, k := range reasons {
			r = append(r, fmt.Sprintf("%d× %s", ended[k], k))
		}
		parts = append(parts, fmt.Sprintf("%d on %d sockets that ended (%s)", missingEnded, len(conns)-countOpen(conns), strings.Join(r, "; ")))
	}
	queued := "unknown"
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if q, err := b.metric(qctx, srv, "presencehub_subscription_queued_changes"); err == nil {
		queued = strconv.FormatFloat(q, 'f', 0, 64)
	}
	parts = append(parts, fmt.Sprintf("%d on open sockets, of which %s still queued in the server's subscription queues", missingOpen, queued))
	parts = append(parts, fmt.Sprintf("the wait ended after %.1f s", waited.Seconds()))
	return strings.Join(parts, "; ")
}

func countOpen(conns []*wsSub) int {
	n := 0
	for _, s := range conns {
		select {
		case <-s.done:
		default:
			n++
		}
	}
	return n
}

// wsSub is one websocket subscriber of the benchmarks.
type wsSub struct {
	acct int
	c    *benchkit.WS
	w    *streamWindow
	snap chan struct{} // closed at the first snapshot
	done chan struct{} // closed when the reader ends

	mu      sync.Mutex
	snapped bool
	lastSeq uint64
	recv    int64 // frames of the window's writes
	live    int64 // of those, received before the window closed
	lat     []time.Duration
	gaps    int
	resyncs int
	merged  int64 // changes of the window conflated away by the server
	errMsg  string
	// closeMsg is why the reader ended: "close <code> <reason>" when the
	// server closed the websocket, else the read error.
	closeMsg string
}

// endReason is why the reader ended: the server's close code and reason,
// or the error; s.done is closed.
func (s *wsSub) endReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeMsg == "" {
		return "no error recorded"
	}
	return s.closeMsg
}

func (s *wsSub) received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recv
}

// dialSubscribers opens n websockets, each subscribed to accts[i%len], and
// waits for every first snapshot.
func dialSubscribers(ctx context.Context, srv *benchServer, key string, accts []benchAccount, n int, w *streamWindow) ([]*wsSub, error) {
	wsURL := "ws" + strings.TrimPrefix(srv.url, "http") + "/v1/stream"
	hdr := http.Header{"Authorization": {"Bearer " + key}}
	conns := make([]*wsSub, n)
	err := benchkit.ParallelN(ctx, 64, n, func(ctx context.Context, i int) error {
		s := &wsSub{acct: i % len(accts), w: w, snap: make(chan struct{}), done: make(chan struct{})}
		// Connections are spread over several loopback source addresses
		// so that tens of thousands of them never run short of ephemeral
		// ports.
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%8))}
		c, err := benchkit.DialWS(wsURL, local, hdr, 30*time.Second)
		if err != nil {
			return fmt.Errorf("subscriber %d: dial: %w", i, err)
		}
		s.c = c
		conns[i] = s
		msg := `{"type":"subscribe","id":"s","account_sid":"` + accts[s.acct].sid + `"}`
		if err := c.WriteText([]byte(msg)); err != nil {
			return fmt.Errorf("subscriber %d: subscribe: %w", i, err)
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		go s.read()
		select {
		case <-s.snap:
			return nil
		case <-s.done:
			return fmt.Errorf("subscriber %d: connection ended before the snapshot: %s", i, s.errMsg)
		case <-dctx.Done():
			return fmt.Errorf("subscriber %d: no snapshot within 30s", i)
		}
	})
	if err != nil {
		closeSubscribers(conns)
		return nil, err
	}
	return conns, nil
}

func closeSubscribers(conns []*wsSub) {
	var wg sync.WaitGroup
	for _, s := range conns {
		if s == nil || s.c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.c.Close()
			<-s.done
		}()
	}
	wg.Wait()
}

// read handles every frame until the connection ends.
func (s *wsSub) read() {
	defer close(s.done)
	for {
		f, err := s.c.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.errMsg = err.Error()
			s.closeMsg = closeMessage(err)
			s.mu.Unlock()
			return
		}
		s.handle(f, time.Now())
	}
}

var (
	prefixChange   = []byte(`{"type":"change"`)
	prefixSnapshot = []byte(`{"type":"snapshot"`)
	prefixError    = []byte(`{"type":"error"`)
	fieldSeq       = []byte(`"seq":`)
	fieldConflated = []byte(`"conflated":true`)
	paramTS        = []byte(`;ts=`)
)

// handle looks at one frame without decoding all of it: the frame type,
// its seq (gaps), and for changes the write time in the contact.
func (s *wsSub) handle(f []byte, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case bytes.HasPrefix(f, prefixChange):
		seq, _ := numberAfter(f, fieldSeq)
		conflated := bytes.Contains(f, fieldConflated) && seq > s.lastSeq
		if seq != s.lastSeq+1 && !conflated {
			s.gaps++
		}
		if conflated && s.lastSeq != 0 && s.w.from.Load() != 1<<63-1 {
			// Changes the server merged for this subscriber, which fell
			// behind: not delivered one by one, but not lost either (the
			// frame carries the user's latest state).
			s.merged += int64(seq - s.lastSeq - 1)
		}
		s.lastSeq = seq
		ts, ok := numberAfter(f, paramTS)
		if !ok || int64(ts) < s.w.from.Load() || int64(ts) >= s.w.until.Load() {
			return
		}
		s.recv++
		if now.UnixNano() < s.w.until.Load() {
			s.live++ // received while the writes were still going on
		}
		s.lat = append(s.lat, now.Sub(time.Unix(0, int64(ts))))
	case bytes.HasPrefix(f, prefixSnapshot):
		s.lastSeq, _ = numberAfter(f, fieldSeq)
		if !s.snapped {
			s.snapped = true
			close(s.snap)
		} else {
			s.resyncs++
		}
	case bytes.HasPrefix(f, prefixError):
		s.errMsg = string(f)
	}
}

// closeMessage names why a subscriber's reader ended: the server's close
// ("close 1008 client too slow"), or the read error.
func closeMessage(err error) string {
	if errors.Is(err, benchkit.ErrWSClosed) {
		if _, st, ok := strings.Cut(err.Error(), "status "); ok {
			return "close " + st
		}
		return "close without a status"
	}
	return "read error: " + err.Error()
}

// numberAfter parses the decimal number right after the first occurrence of
// marker in f.
func numberAfter(f, marker []byte) (uint64, bool) {
	i := bytes.Index(f, marker)
	if i < 0 {
		return 0, false
	}
	var n uint64
	j := i + len(marker)
	start := j
	for ; j < len(f) && '0' <= f[j] && f[j] <= '9'; j++ {
		n = n*10 + uint64(f[j]-'0')
	}
	return n, j > start
}

// serverGC is the server's allocation and GC counters (Go collector).
type serverGC struct {
	alloc, cycles float64
	ok            bool
}

func (b *bench) serverGC(srv *benchServer) serverGC {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	alloc, err1 := b.metric(ctx, srv, "go_memstats_alloc_bytes_total")
	cycles, err2 := b.metric(ctx, srv, "go_gc_duration_seconds_count")
	return serverGC{alloc, cycles, err1 == nil && err2 == nil}
}

// rssPeak samples the server's RSS every 100 ms between start and stop.
type rssPeak struct {
	cancel context.CancelFunc
	done   chan struct{}
	peak   int64
}

func (p *rssPeak) start(srv *benchServer) {
	if srv.pid == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done, p.peak = cancel, make(chan struct{}), srv.rss()
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.peak = max(p.peak, srv.rss())
			}
		}
	}()
}

// stop ends the sampling and returns the peak (0 if it never started).
func (p *rssPeak) stop() int64 {
	if p.cancel == nil {
		return 0
	}
	p.cancel()
	<-p.done
	return p.peak
}
