package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/api/client"
	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/store"
)

const benchFailoverHelp = `Redis Sentinel failover as the stream's subscribers see it. Each run
builds jambonz's Sentinel topology on loopback from redis-server processes of
its own (free ports, temporary folders): a master with keyspace
notifications, a replica without (as a promoted replica is unless every
node's redis.conf has them) and three "redis-server --sentinel" (quorum 2).
It starts "presencehub serve" behind the Sentinels (--redis-sentinels,
--redis-configure-notifications), opens --subscribers websocket subscribers
(the Go client) of one account, and writes as an SBC behind Sentinel would
(a Sentinel-aware client, --rate writes/s over --users users, a new contact
on every write and an unregister on every seventh; a failed write is
retried). After --settle it forces SENTINEL FAILOVER, writes for --after
more, stops, and checks that every subscriber's map and the REST answer equal
the new master's registrations.

Failover time as a subscriber sees it: the longest pause between two change
frames at a subscriber from 1 s before the failover to 2 s after the
Sentinels name the new master (the median over the subscribers). Its
in-run reference is the writer's own longest pause between two successful
writes in that window: no change can reach anyone while there is no master
to write to.

Only --database-url is used of the shared services (accounts, keys); the
Redis topology is the run's own. Short form: 4 subscribers, 3 runs. Long
form (--long): 100 subscribers, 5 runs.`

func benchFailover(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("failover", benchFailoverHelp, getenv, stdout, stderr)
	subscribers := fs.Int("subscribers", 4, "websocket subscribers of the account")
	rate := fs.Float64("rate", 500, "writes per second (nominal)")
	users := fs.Int("users", 200, "users the writes cycle over")
	settle := fs.Duration("settle", 2*time.Second, "writing before the failover")
	after := fs.Duration("after", 3*time.Second, "writing after the Sentinels name the new master")
	redisBin := fs.EnvString("redis-bin", "", "redis-server", "redis-server binary")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"subscribers": "100", "runs": "5"}); err != nil {
		return err
	}
	if *subscribers < 1 || *rate <= 0 || *users < 7 || *settle <= 0 || *after <= 0 {
		return errors.New("--subscribers must be positive, --rate and the durations positive, --users at least 7")
	}
	if *b.serverURL != "" {
		return errors.New("bench failover starts its own Redis topology and server: --server-url is not supported")
	}
	defer b.finish()

	var srv *benchServer // the current run's; the last one serves the cleanup
	b.onCleanup(func(context.Context) { srv.stop() })
	var acct benchAccount
	var subPause, writerPause, ratio, achieved benchkit.Spread
	var mismatched int
	for run := 1; run <= *b.runs; run++ {
		topo, err := startFailoverTopology(ctx, *redisBin)
		if err != nil {
			return err
		}
		// serve follows the Sentinels; --redis-url gives only the database.
		*b.c.RedisURL = "redis://" + topo.master + "/0"
		b.serverEnv = []string{
			"PRESENCEHUB_REDIS_SENTINELS=" + strings.Join(topo.sentinels, ","),
			"PRESENCEHUB_REDIS_SENTINEL_MASTER=" + failoverMaster,
			"PRESENCEHUB_REDIS_CONFIGURE_NOTIFICATIONS=true",
		}
		if run == 1 {
			if err := b.start(ctx); err != nil {
				topo.stop()
				return err
			}
		}
		old := srv
		srv, err = b.server(ctx)
		old.stop()
		if err != nil {
			topo.stop()
			return err
		}
		if run == 1 {
			accts, err := b.accounts(ctx, func() *benchServer { return srv }, 1)
			if err != nil {
				topo.stop()
				return err
			}
			acct = accts[0]
		}
		r, err := b.failoverRun(ctx, srv, topo, acct, *subscribers, *rate, *users, *settle, *after)
		topo.stop()
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		b.logf("run %d: subscribers' longest pause %v (median), writer's %v, %.0f writes/s, %d users on the new master, %d subscriber or REST entries unequal to it",
			run, r.subPause.Round(time.Millisecond), r.writerPause.Round(time.Millisecond), r.rate, r.users, r.mismatched)
		subPause = append(subPause, benchkit.Millis(r.subPause))
		writerPause = append(writerPause, benchkit.Millis(r.writerPause))
		ratio = append(ratio, float64(r.subPause)/float64(max(r.writerPause, time.Millisecond)))
		achieved = append(achieved, r.rate)
		mismatched += r.mismatched
	}
	fmtRatio := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }
	b.add(fmt.Sprintf("failover time at a subscriber (longest pause between change frames; median of %d)", *subscribers), subPause.Format(benchkit.FmtMs), "", nil)
	b.add("writer's longest pause between successful writes (reference)", writerPause.Format(benchkit.FmtMs), "", nil)
	b.add("subscriber pause / writer pause", ratio.Format(fmtRatio), "", nil)
	b.add("writes achieved", achieved.Format(benchkit.FmtRate), benchkit.FmtRate(*rate)+" nominal", nil)
	b.add("entries unequal to the new master afterwards (subscribers and REST, all runs)", benchkit.FmtCount(float64(mismatched)), "0", benchkit.BoolPtr(mismatched == 0))
	b.add("load average at the end", loadAverage(), "", nil)
	return nil
}

const failoverMaster = "mymaster"

type failoverResult struct {
	subPause, writerPause time.Duration
	rate                  float64
	users, mismatched     int
}

func (b *bench) failoverRun(ctx context.Context, srv *benchServer, topo *failoverTopology, acct benchAccount,
	subscribers int, rate float64, users int, settle, after time.Duration) (failoverResult, error) {
	var res failoverResult
	cctx, stopClients := context.WithCancel(ctx)
	var clientsDone sync.WaitGroup
	defer func() { stopClients(); clientsDone.Wait() }()
	subs := make([]*client.Sub, subscribers)
	clocks := make([]*pauseClock, subscribers)
	for i := range subscribers {
		clk := &pauseClock{}
		clocks[i] = clk
		c := client.New(client.Options{URL: "ws" + strings.TrimPrefix(srv.url, "http") + "/v1/stream", Token: b.key,
			Logger: slog.New(slog.DiscardHandler),
			OnFrame: func(f *client.Frame, at time.Time) {
				if f.Type == "change" {
					clk.add(at)
				}
			}})
		subs[i] = c.Subscribe("f", acct.sid)
		clientsDone.Add(1)
		go func() { defer clientsDone.Done(); _ = c.Run(cctx) }()
	}
	for i, s := range subs {
		select {
		case <-s.Synced():
		case <-time.After(30 * time.Second):
			return res, fmt.Errorf("subscriber %d got no snapshot within 30s", i)
		}
	}

	wc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: failoverMaster, SentinelAddrs: topo.sentinels})
	defer wc.Close()
	var writes []time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			user := fmt.Sprintf("f%05d", n%users)
			for {
				c, cancel := context.WithTimeout(ctx, time.Second)
				var err error
				if n%7 == 6 {
					err = store.UnregisterAsSBC(c, wc, user, acct.realm)
				} else {
					_, err = store.RegisterAsSBC(c, wc, user, acct.realm, benchRecord(user, n, ""), time.Hour)
				}
				cancel()
				if err == nil {
					writes = append(writes, time.Now())
					break
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	}()
	time.Sleep(settle)
	failoverAt, err := topo.failover(ctx)
	promotedAt := time.Now()
	if err == nil {
		time.Sleep(after)
	}
	close(stop)
	<-done
	if err != nil {
		return res, err
	}
	if len(writes) > 1 {
		res.rate = float64(len(writes)-1) / writes[len(writes)-1].Sub(writes[0]).Seconds()
	}

	// The new master's registrations, then the subscribers' and REST's,
	// given up to 30 s to converge.
	nm := redis.NewClient(&redis.Options{Addr: topo.replica})
	defer nm.Close()
	want := map[string]string{}
	keys, err := nm.Keys(ctx, store.RedisUserPrefix+"*@"+acct.realm).Result()
	if err != nil {
		return res, err
	}
	for _, k := range keys {
		v, err := nm.Get(ctx, k).Result()
		if err != nil {
			return res, err
		}
		var rec struct{ Contact string }
		_ = json.Unmarshal([]byte(v), &rec)
		want[strings.TrimSuffix(strings.TrimPrefix(k, store.RedisUserPrefix), "@"+acct.realm)] = rec.Contact
	}
	res.users = len(want)
	unequal := func(got map[string]string) int {
		n := 0
		for u, c := range want {
			if got[u] != c {
				n++
			}
		}
		for u := range got {
			if _, ok := want[u]; !ok {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res.mismatched = 0
		for _, s := range subs {
			got := map[string]string{}
			for name, u := range s.State() {
				if u.Contact != nil {
					got[name] = *u.Contact
				}
			}
			res.mismatched += unequal(got)
		}
		var rest []struct {
			Name    string  `json:"name"`
			Contact *string `json:"contact"`
		}
		if err := b.api(ctx, srv, "POST", "/v1/Accounts/"+acct.sid+"/RegisteredSipUsers", []string{}, &rest, 200); err != nil {
			return res, err
		}
		got := map[string]string{}
		for _, u := range rest {
			if u.Contact != nil {
				got[u.Name] = *u.Contact
			}
		}
		res.mismatched += unequal(got)
		if res.mismatched == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	from, to := failoverAt.Add(-time.Second), promotedAt.Add(2*time.Second)
	res.writerPause, _, _ = benchkit.LongestPause(writes, from, to)
	var pauses []time.Duration
	for _, clk := range clocks {
		clk.mu.Lock()
		d, _, _ := benchkit.LongestPause(clk.times, from, to)
		clk.mu.Unlock()
		pauses = append(pauses, d)
	}
	slices.Sort(pauses)
	res.subPause = pauses[len(pauses)/2]
	return res, nil
}

// pauseClock notes when a subscriber received each change frame.
type pauseClock struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *pauseClock) add(at time.Time) {
	c.mu.Lock()
	c.times = append(c.times, at)
	c.mu.Unlock()
}

// failoverTopology is a master, a replica and three Sentinels, each a
// redis-server process of the bench's.
type failoverTopology struct {
	master, replica string
	sentinels       []string
	procs           []*exec.Cmd
	dir             string
}

func startFailoverTopology(ctx context.Context, bin string) (t *failoverTopology, err error) {
	dir, err := os.MkdirTemp("", "presencehub-bench-failover-")
	if err != nil {
		return nil, err
	}
	t = &failoverTopology{dir: dir}
	defer func() {
		if err != nil {
			t.stop()
		}
	}()
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""}
	if t.master, err = t.spawn(bin, "master", nil, append(base, "--notify-keyspace-events", "Kg$x")...); err != nil {
		return t, err
	}
	_, mport, _ := net.SplitHostPort(t.master)
	if t.replica, err = t.spawn(bin, "replica", nil, append(base, "--replicaof", "127.0.0.1", mport)...); err != nil {
		return t, err
	}
	for i := range 3 {
		conf := fmt.Sprintf("bind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %s 2\n"+
			"sentinel down-after-milliseconds %[1]s 2000\nsentinel failover-timeout %[1]s 10000\nsentinel parallel-syncs %[1]s 1\n",
			failoverMaster, mport)
		addr, err := t.spawn(bin, fmt.Sprintf("sentinel%d", i), []byte(conf), "--sentinel")
		if err != nil {
			return t, err
		}
		t.sentinels = append(t.sentinels, addr)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: t.sentinels[0]})
	defer sc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		reps, err := sc.Replicas(ctx, failoverMaster).Result()
		if err == nil && len(reps) > 0 && reps[0]["flags"] == "slave" && reps[0]["master-link-status"] == "ok" {
			return t, nil
		}
		if time.Now().After(deadline) {
			return t, fmt.Errorf("the Sentinels did not see the replica in sync within 30s (%v, %v)", reps, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spawn starts redis-server on a free port (with conf as its configuration
// file when given) and waits until it answers PING.
func (t *failoverTopology) spawn(bin, name string, conf []byte, args ...string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := filepath.Join(t.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var argv []string
	if conf != nil {
		file := filepath.Join(dir, "redis.conf")
		if err := os.WriteFile(file, append(conf, fmt.Sprintf("port %d\ndir %s\n", port, dir)...), 0o600); err != nil {
			return "", err
		}
		argv = append(argv, file)
	}
	argv = append(argv, "--port", strconv.Itoa(port), "--dir", dir)
	argv = append(argv, args...)
	cmd := exec.Command(bin, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s (%s): %w", bin, name, err)
	}
	t.procs = append(t.procs, cmd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for start := time.Now(); ; {
		if c.Ping(context.Background()).Err() == nil {
			return addr, nil
		}
		if time.Since(start) > 10*time.Second {
			return "", fmt.Errorf("%s (%s) did not answer PING on %s within 10s", bin, name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failover sends SENTINEL FAILOVER and waits until the Sentinels name the
// replica; it returns when the command was sent.
func (t *failoverTopology) failover(ctx context.Context) (time.Time, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: t.sentinels[0]})
	defer sc.Close()
	at := time.Now()
	if err := sc.Failover(ctx, failoverMaster).Err(); err != nil {
		return at, fmt.Errorf("SENTINEL FAILOVER: %w", err)
	}
	for {
		addr, err := sc.GetMasterAddrByName(ctx, failoverMaster).Result()
		if err == nil && net.JoinHostPort(addr[0], addr[1]) == t.replica {
			return at, nil
		}
		if time.Since(at) > 30*time.Second {
			return at, fmt.Errorf("the replica was not promoted within 30s (master %v, %v)", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (t *failoverTopology) stop() {
	for _, p := range t.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	os.RemoveAll(t.dir)
}
