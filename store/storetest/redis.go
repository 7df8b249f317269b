// Package storetest starts the real services the store talks to, for tests
// of every package: a private redis-server and PostgreSQL on free loopback
// ports with temporary data folders. Nothing is skipped when a service cannot
// be started: the test fails and says how to install it.
package storetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server started by StartRedis.
type RedisServer struct {
	URL  string // redis://127.0.0.1:<port>/0
	Addr string // 127.0.0.1:<port>

	t    testing.TB
	bin  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *syncBuffer
}

// RedisOption changes how StartRedis starts the server.
type RedisOption func(*redisConfig)

type redisConfig struct {
	notifications bool
	extra         []string
}

// WithoutNotifications starts the server with notify-keyspace-events left
// empty, as a stock Redis is.
func WithoutNotifications() RedisOption {
	return func(c *redisConfig) { c.notifications = false }
}

// WithArgs passes extra arguments to redis-server, such as
// "--rename-command", "CONFIG", "" to act like a managed Redis.
func WithArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.extra = append(c.extra, args...) }
}

// RedisNotifyFlags are the notify-keyspace-events StartRedis sets unless
// told otherwise: keyspace events of generic, string and expired commands.
const RedisNotifyFlags = "Kg$x"

// StartRedis starts a private redis-server on a free loopback port, with its
// folder in a temporary directory, no persistence (--save "" --appendonly
// no) and keyspace notifications on (see WithoutNotifications). The server
// is killed in t.Cleanup. The test fails with install advice when
// redis-server is not on PATH.
func StartRedis(t testing.TB, opts ...RedisOption) *RedisServer {
	t.Helper()
	cfg := redisConfig{notifications: true}
	for _, o := range opts {
		o(&cfg)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (%v): the store's tests need a real Redis. "+
			"Install it: apt-get install redis-server (Debian/Ubuntu), brew install redis (macOS), "+
			"or put a redis-server binary on PATH", err)
	}
	dir := t.TempDir()
	var lastErr error
	// A free port can be taken by someone else before redis-server binds
	// it; try a few.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("storetest: find a free port: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--dir", dir,
			"--save", "",
			"--appendonly", "no",
			"--daemonize", "no",
			"--logfile", "",
			"--databases", "16",
		}
		if cfg.notifications {
			args = append(args, "--notify-keyspace-events", RedisNotifyFlags)
		}
		args = append(args, cfg.extra...)
		r := &RedisServer{
			URL:  "redis://" + addr + "/0",
			Addr: addr,
			t:    t,
			bin:  bin,
			args: args,
		}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.Stop)
			return r
		}
	}
	t.Fatalf("storetest: start redis-server: %v", lastErr)
	return nil
}

// Stop kills the server, like a crash: with no persistence its data is
// lost. Stopping a stopped server does nothing.
func (r *RedisServer) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Start starts the server again, on the same port, empty.
func (r *RedisServer) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("storetest: restart redis-server: %v", err)
	}
}

// StartWithoutNotifications starts the server again, on the same port,
// empty and with notify-keyspace-events left empty: a Redis restarted by
// someone who forgot the setting.
func (r *RedisServer) StartWithoutNotifications() {
	r.t.Helper()
	r.mu.Lock()
	var args []string
	for i := 0; i < len(r.args); i++ {
		if r.args[i] == "--notify-keyspace-events" {
			i++
			continue
		}
		args = append(args, r.args[i])
	}
	r.args = args
	r.mu.Unlock()
	r.Start()
}

func (r *RedisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("already running")
	}
	log := &syncBuffer{}
	cmd := exec.Command(r.bin, r.args...)
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(r.Addr); err == nil {
			break
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("not answering on %s after 10s: %v; its log:\n%s", r.Addr, err, log.String())
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited at start (port %s taken?); its log:\n%s", r.Addr, log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.cmd, r.done, r.log = cmd, done, log
	return nil
}

// Client returns a client of the server, closed in t.Cleanup.
func (r *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Log returns what the server has logged since it last started.
func (r *RedisServer) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.log == nil {
		return ""
	}
	return r.log.String()
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// freePort returns a loopback port that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
