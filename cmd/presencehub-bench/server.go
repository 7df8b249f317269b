package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

// benchServer is the presencehub serving the benchmark: a child process, or
// one given by --server-url.
type benchServer struct {
	url     string
	pid     int
	started time.Time
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *benchkit.TailBuffer
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
	bin, err := serverBinary(*b.serverBin)
	if err != nil {
		return nil, err
	}
	key := *b.c.EncryptionKey
	if key == "" {
		// The benchmarks read no SIP client password, but serve needs a
		// strong key: a fixed one (SHA-256 of "presencehub-bench-placeholder").
		key = "919e637b2f4de8c85f2f9afdf5d53a37e103166c58a35ffccd833c1742005712"
	}
	// The benchmarks open all their sockets with one key (bench idle and
	// bench stream --long: 10,000), past serve's default cap of sockets
	// per key, which is meant for a tenant's key. The cap stays on, higher.
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--stream-max-conns-per-key", "100000")
	// Its own process group keeps a Ctrl-C on the terminal from reaching
	// it: the benchmark still needs it to clean up, then stops it. Should
	// the benchmark die, the server is told to stop too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Env = append(os.Environ(),
		"PRESENCEHUB_REDIS_URL="+*b.c.RedisURL,
		"PRESENCEHUB_DATABASE_URL="+*b.c.DatabaseURL,
		"PRESENCEHUB_ENCRYPTION_KEY="+key,
	)
	cmd.Env = append(cmd.Env, b.serverEnv...)
	// The load generators send from one address with one key, far above the
	// per-IP and per-key REST limits: the benchmarks measure the server, not
	// its limiter, unless the environment asks for limits.
	for _, k := range []string{"PRESENCEHUB_RATE_IP", "PRESENCEHUB_RATE_KEY", "PRESENCEHUB_RATE_TICKETS"} {
		if os.Getenv(k) == "" {
			cmd.Env = append(cmd.Env, k+"=0")
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &benchServer{cmd: cmd, exited: make(chan struct{}), log: &benchkit.TailBuffer{Max: 64 << 10}}
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

// serverBinary is the presencehub binary to start: bin if given, else the
// presencehub next to this binary (make build puts both in bin/), else the
// one on PATH.
func serverBinary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if exe, err := os.Executable(); err == nil {
		next := filepath.Join(filepath.Dir(exe), "presencehub")
		if st, err := os.Stat(next); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return next, nil
		}
	}
	p, err := exec.LookPath("presencehub")
	if err != nil {
		return "", errors.New("no presencehub binary next to this one or on PATH: run make build, or give --server-bin")
	}
	return p, nil
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
		case <-time.After(5 * time.Millisecond): // each poll costs the server a request: polling faster shows in its CPU
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
	d, _ := benchkit.ProcCPU(s.pid)
	return d
}

// rss is the server's resident memory in bytes (0 when unknown).
func (s *benchServer) rss() int64 {
	if s.pid == 0 {
		return 0
	}
	n, _ := benchkit.ProcRSS(s.pid)
	return n
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
		if opts, err := redis.ParseURL(*b.c.RedisURL); err != nil || !isLoopback(opts.Addr) {
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
	m.machine0, m.server0 = benchkit.MachineBusy(), m.srv.cpu()
	m.self0, _ = benchkit.ProcCPU(os.Getpid())
	if m.redisPID != 0 {
		m.redis0, _ = benchkit.ProcCPU(m.redisPID)
	}
}

// stop ends the measurement and records its noise in b.
func (b *bench) stopMeter(m *cpuMeter) {
	m.stop()
	b.noise = append(b.noise, m.Rest)
}

func (m *cpuMeter) stop() {
	secs := time.Since(m.t0).Seconds()
	self, _ := benchkit.ProcCPU(os.Getpid())
	var red time.Duration
	if m.redisPID != 0 {
		red, _ = benchkit.ProcCPU(m.redisPID)
		red -= m.redis0
	}
	m.Machine = (benchkit.MachineBusy() - m.machine0).Seconds() / secs
	m.Server = (m.srv.cpu() - m.server0).Seconds() / secs
	m.Self = (self - m.self0).Seconds() / secs
	m.Redis = red.Seconds() / secs
	m.Rest = max(m.Machine-m.Server-m.Self-m.Redis, 0)
}

func (m *cpuMeter) String() string {
	return fmt.Sprintf("machine %.2f cores busy: server %.2f, bench %.2f, redis %.2f, other processes %.2f",
		m.Machine, m.Server, m.Self, m.Redis, m.Rest)
}

// metric reads one sample of the server's /metrics.
func (b *bench) metric(ctx context.Context, srv *benchServer, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.url+"/metrics", nil)
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return benchkit.ParseMetric(resp.Body, name)
}
