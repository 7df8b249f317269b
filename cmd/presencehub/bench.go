package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
)

const benchUsage = `Usage: presencehub bench <name> [flags]

Benchmarks (each has a short form, the default, and a long form with --long;
every size is also a flag: presencehub bench <name> --help):
  rest     REST reads on an account of 10,000 registered users at 50 concurrent
           connections: POST 100 names, GET list, GET single (req/s, p50, p99)
  stream   websocket fan-out of changes written into Redis as an SBC does:
           write-to-frame latency, deliveries/s, loss, server CPU and RSS,
           at 1,000 and 5,000 changes/s
  idle     server memory per idle websocket connection (10,000 connections)
  resync   cold start to /readyz with 100,000 registrations in Redis, and the
           resync after the Redis subscription is killed
  expiry   delay from a registration's expiryTime to the "expired" event at a
           subscriber, next to Redis's own "expired" notification
  floor    the machine's floor under "stream": the CPU of moving as many
           messages over as many loopback TCP connections, with no websocket,
           Redis or hub (needs no Redis, PostgreSQL or server)

Each benchmark starts "presencehub serve" (this binary) as a child process on
a loopback port, so that its CPU and memory can be measured from /proc, and
stops it at the end; with --server-url (and --server-pid) it uses a running
server instead. Accounts are created through the REST API with an admin key
(--admin-key, or one made in the database and deleted afterwards) and deleted
at the end; registrations are written into Redis as an SBC writes them and
removed at the end. Everything is on loopback and stops by itself.

The result is a table (benchmark | metric | value | target | ok); a value is
the median of --runs runs with the spread (min–max) in brackets. Linux only
(/proc). "make bench" runs every short form and prints one table.
`

func cmdBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "rest":
		return benchREST(ctx, rest, getenv, stdout, stderr)
	case "stream":
		return benchStream(ctx, rest, getenv, stdout, stderr)
	case "idle":
		return benchIdle(ctx, rest, getenv, stdout, stderr)
	case "floor":
		return benchFloor(ctx, rest, getenv, stdout, stderr)
	case "floor-reader": // the second process of "bench floor"
		return benchFloorReader(rest, os.Stdin, stdout)
	case "resync":
		return benchResync(ctx, rest, getenv, stdout, stderr)
	case "expiry":
		return benchExpiry(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	fmt.Fprintf(stderr, "presencehub bench: unknown benchmark %q\n\n%s", name, benchUsage)
	return errUsage
}

// bench is what every benchmark shares: connection settings, the admin key,
// the server under test and the results.
type bench struct {
	name   string
	c      common
	stdout io.Writer
	stderr io.Writer

	serverURL *string
	serverPID *int
	serverBin *string
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
	results []benchResult
	cleanup []func(context.Context)
	noise   spread // cores used by other processes during each measurement
}

// newBench declares the flags every benchmark has.
func newBench(name, summary string, getenv func(string) string, stdout, stderr io.Writer) (*bench, *flagSet) {
	fs := newFlagSet("bench "+name, summary, getenv, stderr)
	b := &bench{name: name, stdout: stdout, stderr: stderr}
	b.c = addCommon(fs, true, true)
	b.serverURL = fs.str("server-url", "PRESENCEHUB_BENCH_SERVER_URL", "", "use the server running at this URL instead of starting one")
	b.serverPID = fs.integer("server-pid", "PRESENCEHUB_BENCH_SERVER_PID", 0, "process id of the --server-url server, to measure its CPU and memory")
	b.serverBin = fs.str("server-bin", "", "", "presencehub binary to start as the server (default: this one)")
	b.adminKey = fs.str("admin-key", "PRESENCEHUB_ADMIN_KEY", "", "admin API key (default: one is created in the database and deleted afterwards)")
	b.runs = fs.integer("runs", "", 3, "repetitions; the table shows their median and spread")
	b.long = fs.Bool("long", false, "the long form: the sizes and durations of the README's Performance section")
	b.tsv = fs.Bool("tsv", false, "print the results as tab-separated rows (benchmark, metric, value, target, ok) without a header")
	return b, fs
}

// parseRates parses --rates (rates per second), or returns defaults when
// it was not given.
func parseRates(rates stringList, defaults ...float64) ([]float64, error) {
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
func setLong(fs *flagSet, on bool, long map[string]string) error {
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
	raiseFileLimit()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	b.runID = hex.EncodeToString(rnd[:])
	rdb, err := redisClient(ctx, *b.c.redisURL, "presencehub-bench")
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
		db, err := openDB(ctx, b.c)
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
		b.add("CPU of other processes while measuring (noise)", b.noise.format(fmtCores), "", nil)
	}
	b.print()
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench %s: %s\n", b.name, fmt.Sprintf(format, args...))
}

// --- results -----------------------------------------------------------------

type benchResult struct {
	metric, value, target, ok string
}

// add records a row; ok is "" when the metric has no target.
func (b *bench) add(metric, value, target string, met *bool) {
	ok := "-"
	if met != nil {
		ok = "yes"
		if !*met {
			ok = "NO"
		}
	}
	if target == "" {
		target = "-"
	}
	b.results = append(b.results, benchResult{metric, value, target, ok})
}

func (b *bench) print() {
	if len(b.results) == 0 {
		return
	}
	if *b.tsv {
		for _, r := range b.results {
			fmt.Fprintf(b.stdout, "%s\t%s\t%s\t%s\t%s\n", b.name, r.metric, r.value, r.target, r.ok)
		}
		return
	}
	tw := tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tmetric\tvalue\ttarget\tok?")
	for _, r := range b.results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.name, r.metric, r.value, r.target, r.ok)
	}
	_ = tw.Flush()
}

// spread holds one metric's value from each run.
type spread []float64

func (s spread) median() float64 {
	if len(s) == 0 {
		return 0
	}
	v := slices.Clone([]float64(s))
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// format shows the median and, over several runs, the min–max spread, with
// f formatting one number.
func (s spread) format(f func(float64) string) string {
	if len(s) == 0 {
		return "n/a"
	}
	out := f(s.median())
	if len(s) > 1 {
		out += " (" + f(slices.Min(s)) + "–" + f(slices.Max(s)) + ")"
	}
	return out
}

func fmtRate(v float64) string { return groupThousands(int64(v+0.5)) + "/s" }
func fmtCount(v float64) string {
	return groupThousands(int64(v + 0.5))
}
func fmtCores(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " cores" }
func fmtMiB(v float64) string   { return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB" }
func fmtKiB(v float64) string   { return strconv.FormatFloat(v/(1<<10), 'f', 1, 64) + " KiB" }

// fmtMs formats a duration given in milliseconds.
func fmtMs(v float64) string {
	switch {
	case v >= 10000:
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + " s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
}

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func boolPtr(v bool) *bool { return &v }

// ms is d in (fractional) milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (0 ≤ p ≤ 100) of sorted values by
// the nearest-rank method.
func percentile[T int64 | float64 | time.Duration](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// --- the server under test ---------------------------------------------------

// benchServer is the presencehub serving the benchmark: a child process, or
// one given by --server-url.
type benchServer struct {
	url     string
	pid     int
	started time.Time
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *tailBuffer
}

// server returns the server under test, ready (GET /readyz is 200): the
// one of --server-url, or a new child process.
func (b *bench) server(ctx context.Context) (*benchServer, error) {
	if *b.serverURL != "" {
		s := &benchServer{url: strings.TrimRight(*b.serverURL, "/"), pid: *b.serverPID}
		if err := s.waitReady(ctx, b.http, time.Minute); err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := b.spawn(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, b.http, 5*time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// spawn starts "presencehub serve" on a free loopback port and returns once
// it has printed its URL (it may not be ready yet).
func (b *bench) spawn(ctx context.Context) (*benchServer, error) {
	bin := *b.serverBin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this binary to start the server: %w (give --server-bin)", err)
		}
		bin = exe
	}
	key := *b.c.encryptionKey
	if key == "" {
		key = "presencehub-bench-placeholder" // the benchmarks read no SIP client password
	}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--log-level", "warn")
	// Its own process group keeps a Ctrl-C on the terminal from reaching
	// it: the benchmark still needs it to clean up, then stops it. Should
	// the benchmark die, the server is told to stop too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Env = append(os.Environ(),
		"PRESENCEHUB_REDIS_URL="+*b.c.redisURL,
		"PRESENCEHUB_DATABASE_URL="+*b.c.databaseURL,
		"PRESENCEHUB_ENCRYPTION_KEY="+key,
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &benchServer{cmd: cmd, exited: make(chan struct{}), log: &tailBuffer{max: 64 << 10}}
	cmd.Stderr = s.log
	s.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", bin, err)
	}
	s.pid = cmd.Process.Pid
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if _, u, ok := strings.Cut(line, " serving on "); ok {
				select {
				case urlc <- strings.TrimSpace(u):
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	select {
	case s.url = <-urlc:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("server exited at start:\n%s", s.log.String())
	case <-time.After(time.Minute):
		s.stop()
		return nil, fmt.Errorf("server printed no URL within a minute:\n%s", s.log.String())
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// waitReady polls GET /readyz every 2 ms until it answers 200.
func (s *benchServer) waitReady(ctx context.Context, hc *http.Client, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status + " " + string(body)
		} else {
			last = err.Error()
		}
		if s.exited != nil {
			select {
			case <-s.exited:
				return fmt.Errorf("server exited before it was ready:\n%s", s.log.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %v: %s", limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// stop ends a child server (SIGTERM, then SIGKILL after 15 s); a server
// given by --server-url is left alone.
func (s *benchServer) stop() {
	if s == nil || s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// cpu is the server's user+system CPU time so far (0 when unknown).
func (s *benchServer) cpu() time.Duration {
	if s.pid == 0 {
		return 0
	}
	d, _ := procCPU(s.pid)
	return d
}

// rss is the server's resident memory in bytes (0 when unknown).
func (s *benchServer) rss() int64 {
	if s.pid == 0 {
		return 0
	}
	n, _ := procRSS(s.pid)
	return n
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

// procCPU reads utime+stime of pid from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(b)
}

// parseProcStat returns utime+stime (fields 14 and 15) of a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and brackets, so fields
// are counted after its last ')'.
func parseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11]; stime f[12].
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procRSS reads VmRSS of pid from /proc/<pid>/status, in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n << 10, err
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// machineBusy is the CPU time all processes of the machine have used, from
// the first line of /proc/stat (everything but idle and iowait).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already counted in user
			break
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// cpuMeter splits the machine's CPU use over a measurement: the server,
// this benchmark process, Redis, and everything else (noise from other
// work on the machine, which makes the numbers less trustworthy).
type cpuMeter struct {
	srv                                *benchServer
	redisPID                           int
	t0                                 time.Time
	machine0, server0, self0, redis0   time.Duration
	Machine, Server, Self, Redis, Rest float64 // cores, after stop
}

func (b *bench) meter(ctx context.Context, srv *benchServer) *cpuMeter {
	m := &cpuMeter{srv: srv}
	if info, err := b.rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				m.redisPID, _ = strconv.Atoi(v)
			}
		}
		// Only a Redis on this machine counts (its pid here is its own).
		if opts, err := redis.ParseURL(*b.c.redisURL); err != nil || !isLoopback(opts.Addr) {
			m.redisPID = 0
		}
	}
	return m
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

func (m *cpuMeter) start() {
	m.t0 = time.Now()
	m.machine0, m.server0 = machineBusy(), m.srv.cpu()
	m.self0, _ = procCPU(os.Getpid())
	if m.redisPID != 0 {
		m.redis0, _ = procCPU(m.redisPID)
	}
}

// stop ends the measurement and records its noise in b.
func (b *bench) stopMeter(m *cpuMeter) {
	m.stop()
	b.noise = append(b.noise, m.Rest)
}

func (m *cpuMeter) stop() {
	secs := time.Since(m.t0).Seconds()
	self, _ := procCPU(os.Getpid())
	var red time.Duration
	if m.redisPID != 0 {
		red, _ = procCPU(m.redisPID)
		red -= m.redis0
	}
	m.Machine = (machineBusy() - m.machine0).Seconds() / secs
	m.Server = (m.srv.cpu() - m.server0).Seconds() / secs
	m.Self = (self - m.self0).Seconds() / secs
	m.Redis = red.Seconds() / secs
	m.Rest = max(m.Machine-m.Server-m.Self-m.Redis, 0)
}

func (m *cpuMeter) String() string {
	return fmt.Sprintf("machine %.2f cores busy: server %.2f, bench %.2f, redis %.2f, other processes %.2f",
		m.Machine, m.Server, m.Self, m.Redis, m.Rest)
}

// raiseFileLimit lifts the soft limit of open files to the hard limit: the
// stream and idle benchmarks hold one socket per subscriber. (Go raises it
// by itself at start since 1.19, and so does the server; this makes sure.)
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// needFiles fails early when n sockets (plus some slack) would not fit
// under the limit of open files, which the server shares.
func needFiles(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	if want := uint64(n) + 256; lim.Cur < want {
		return fmt.Errorf("%d connections need %d open files, the limit is %d: raise it (ulimit -n %d, or the hard limit in /etc/security/limits.conf)", n, want, lim.Cur, want)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it (a server's log).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// --- REST helpers ------------------------------------------------------------

// api sends a JSON request with the admin key; out, if not nil, receives
// the decoded answer. Any status other than want is an error.
func (b *bench) api(ctx context.Context, srv *benchServer, method, path string, in, out any, want int) error {
	if srv == nil {
		return errors.New("no server running")
	}
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

type benchAccount struct {
	sid, realm string
}

// accounts creates a service provider and n accounts with their own realms
// through the REST API; they are deleted at the end.
//
// srv gives the server to talk to; the idle benchmark starts a new one for
// every run, and the deletions go to the one running at the end.
// serverWithAccount starts the bench, the server under test (stopped at
// cleanup) and one account on it.
func (b *bench) serverWithAccount(ctx context.Context) (*benchServer, benchAccount, error) {
	if err := b.start(ctx); err != nil {
		return nil, benchAccount{}, err
	}
	srv, err := b.server(ctx)
	if err != nil {
		return nil, benchAccount{}, err
	}
	b.onCleanup(func(context.Context) { srv.stop() })
	accts, err := b.accounts(ctx, func() *benchServer { return srv }, 1)
	if err != nil {
		return nil, benchAccount{}, err
	}
	return srv, accts[0], nil
}

func (b *bench) accounts(ctx context.Context, srv func() *benchServer, n int) ([]benchAccount, error) {
	var sp struct{ SID string }
	if err := b.api(ctx, srv(), http.MethodPost, "/v1/ServiceProviders",
		map[string]string{"name": "presencehub bench " + b.name + " " + b.runID}, &sp, http.StatusCreated); err != nil {
		return nil, err
	}
	accts := make([]benchAccount, n)
	b.onCleanup(func(ctx context.Context) {
		parallelN(ctx, 8, len(accts), func(ctx context.Context, i int) error {
			if accts[i].sid != "" {
				_ = b.api(ctx, srv(), http.MethodDelete, "/v1/Accounts/"+accts[i].sid, nil, nil, http.StatusNoContent)
			}
			return nil
		})
		_ = b.api(ctx, srv(), http.MethodDelete, "/v1/ServiceProviders/"+sp.SID, nil, nil, http.StatusNoContent)
	})
	err := parallelN(ctx, 8, n, func(ctx context.Context, i int) error {
		realm := fmt.Sprintf("a%05d.%s.%s.bench.invalid", i, b.runID, b.name)
		var a struct{ SID string }
		err := b.api(ctx, srv(), http.MethodPost, "/v1/Accounts", map[string]string{
			"name": fmt.Sprintf("bench %s %d", b.runID, i), "service_provider_sid": sp.SID, "sip_realm": realm,
		}, &a, http.StatusCreated)
		accts[i] = benchAccount{sid: a.SID, realm: realm}
		return err
	})
	if err != nil {
		return nil, err
	}
	return accts, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallelN(ctx context.Context, workers, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// --- Redis helpers -----------------------------------------------------------

// benchRecord is what the benchmarks register: a WSS client behind NAT.
func benchRecord(user string, i int, contactParams string) store.SBCRecord {
	return store.SBCRecord{
		Contact:           fmt.Sprintf("sip:%s@10.%d.%d.%d:%d;transport=ws%s", user, i>>16&255, i>>8&255, i&255, 40000+i%20000, contactParams),
		SBCAddress:        "192.0.2.10:8443",
		PrivateSBCAddress: "10.0.0.10:5060",
		Protocol:          "wss",
		Proxy:             fmt.Sprintf("sip:203.0.113.%d:%d", 1+i%254, 1024+i%60000),
		AllowDirectApp:    true,
		AllowDirectUser:   true,
	}
}

type benchAOR struct{ user, realm string }

// registerAll writes registrations as an SBC does, pipelined, and removes
// them at the end of the benchmark.
func (b *bench) registerAll(ctx context.Context, aors []benchAOR, expires time.Duration) error {
	b.onCleanup(func(ctx context.Context) { _ = b.unregisterAll(ctx, aors) })
	const chunk = 1000
	for start := 0; start < len(aors); start += chunk {
		part := aors[start:min(start+chunk, len(aors))]
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range part {
				if _, err := store.RegisterAsSBC(ctx, p, a.user, a.realm, benchRecord(a.user, start+i, ""), expires); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("register in redis: %w", err)
		}
	}
	return nil
}

// unregisterAll deletes registrations as an SBC does.
func (b *bench) unregisterAll(ctx context.Context, aors []benchAOR) error {
	const chunk = 1000
	for start := 0; start < len(aors); start += chunk {
		part := aors[start:min(start+chunk, len(aors))]
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, a := range part {
				_ = store.UnregisterAsSBC(ctx, p, a.user, a.realm)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// metric reads one sample of the server's /metrics.
func (b *bench) metric(ctx context.Context, srv *benchServer, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.url+"/metrics", nil)
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return parseMetric(resp.Body, name)
}

// parseMetric finds the value of an unlabelled sample in Prometheus text.
func parseMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not found", name)
}
