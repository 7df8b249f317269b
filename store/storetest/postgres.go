package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// fallbackDatabaseURL is tried when no private server can be started.
const fallbackDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres"

var (
	mainCalled bool

	// The server is chosen (and a private one started) by the first
	// NewDatabase, so that tests which need no PostgreSQL (the Redis ones
	// beside them) do not wait for initdb.
	pgOnce   sync.Once
	adminURL string // maintenance database of the chosen server
	pgErr    error  // why there is none

	pgMu  sync.Mutex
	pgSrv *server // the private server, if one was started
)

// Main runs a package's tests with a PostgreSQL available: if
// PRESENCE_TEST_DATABASE_URL is set it is used; otherwise a private
// PostgreSQL is started (initdb into a temporary folder, free loopback port,
// fsync off, unix socket in the temporary folder) when the first test asks
// for a database, and stopped after m.Run(), or on SIGINT/SIGTERM.
//
// Server binaries are looked up in PATH, then in /usr/lib/postgresql/*/bin
// (newest version). As root, where PostgreSQL refuses to run, the server runs
// as user "nobody". If no private server can be started, the tests fall back
// to postgres://postgres@127.0.0.1:5432/postgres when that answers;
// otherwise every test that needs a database fails and says how to install
// PostgreSQL. Nothing is skipped.
func Main(m *testing.M) {
	mainCalled = true
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		stopServer()
		stopMySQL()
		fmt.Fprintf(os.Stderr, "storetest: %v: stopped PostgreSQL\n", s)
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	stopServer()
	stopMySQL()
	os.Exit(code)
}

func stopServer() {
	pgMu.Lock()
	defer pgMu.Unlock()
	if pgSrv != nil {
		pgSrv.stop()
	}
}

// chooseServer sets adminURL, or pgErr explaining why there is no server.
func chooseServer() {
	if u := os.Getenv("PRESENCE_TEST_DATABASE_URL"); u != "" {
		if err := pgPing(u, 5*time.Second); err != nil {
			pgErr = fmt.Errorf("PRESENCE_TEST_DATABASE_URL does not answer: %w", err)
			return
		}
		adminURL = u
		return
	}
	pgMu.Lock()
	defer pgMu.Unlock()
	srv, err := startPostgres()
	if err == nil {
		pgSrv, adminURL = srv, srv.url
		return
	}
	if pgPing(fallbackDatabaseURL, 2*time.Second) == nil {
		fmt.Fprintf(os.Stderr, "storetest: cannot start a private PostgreSQL (%v); using %s\n", err, fallbackDatabaseURL)
		adminURL = fallbackDatabaseURL
		return
	}
	pgErr = fmt.Errorf(`these tests need PostgreSQL and none is available.
  Cannot start a private server: %v
  and nothing answers at %s.
Install the server (Debian/Ubuntu: apt-get install postgresql; the tests find
initdb and postgres in PATH or /usr/lib/postgresql/*/bin), or set
PRESENCE_TEST_DATABASE_URL to a server where the test user may CREATE DATABASE`, err, fallbackDatabaseURL)
}

// chosen runs choose once per test binary (it picks or starts the server
// and sets *err) and fails t if that failed, or if Main was not called (it
// stops the servers started).
func chosen(t testing.TB, fn string, once *sync.Once, choose func(), err *error) {
	t.Helper()
	if !mainCalled {
		t.Fatalf("storetest.%s: call storetest.Main(m) from the package's TestMain", fn)
	}
	once.Do(choose)
	if *err != nil {
		t.Fatalf("storetest: %v", *err)
	}
}

// NewDatabase creates a fresh, uniquely named database on the server Main
// selected, drops it (WITH (FORCE), which ends leftover connections) when the
// test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	chosen(t, "NewDatabase", &pgOnce, chooseServer, &pgErr)
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("storetest: drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName makes a valid, unique identifier from a test name: readable
// for whoever finds it left behind, 63 bytes at most.
func databaseName(testName string) string {
	var b [4]byte
	rand.Read(b[:])
	base := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(testName), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return "phtest_" + base + "_" + hex.EncodeToString(b[:])
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns connURL pointing at database name. It accepts both
// URL and keyword/value connection strings.
func withDatabase(connURL, name string) (string, error) {
	if strings.HasPrefix(connURL, "postgres://") || strings.HasPrefix(connURL, "postgresql://") {
		u, err := url.Parse(connURL)
		if err != nil {
			return "", fmt.Errorf("storetest: parse database url: %w", err)
		}
		u.Path = "/" + name
		q := u.Query()
		q.Del("dbname") // would override the path
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return connURL + " dbname=" + name, nil
}

// pgPing connects to u within timeout, retrying while the server starts.
func pgPing(u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		c, err := pgx.Connect(ctx, u)
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// server is a private PostgreSQL.
type server struct {
	url     string
	dir     string
	proc    *process
	stopped sync.Once
}

func startPostgres() (*server, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	parent := tempParent()
	sweepStale(parent)
	dir, err := os.MkdirTemp(parent, serverDirPrefix)
	if err != nil {
		return nil, err
	}
	cred, err := runAs(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "--pgdata", data, "--username", "postgres",
		"--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	// The port is free when we look; another process could take it before
	// the server binds it, hence a few attempts.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s, err := launch(bin, dir, data, port, cred)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

const serverDirPrefix = "presencehub-pg-"

// sweepStale removes the folders of private servers that are gone without
// cleaning up (their test binary was killed: Pdeathsig stopped the server,
// but nobody removed its folder, which in /dev/shm holds memory). A live
// server has a postmaster.pid; the age check spares a folder that another
// test binary is still initialising.
func sweepStale(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, serverDirPrefix+"*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "data", "postmaster.pid")); os.IsNotExist(err) {
			os.RemoveAll(d)
		}
	}
}

func launch(bin, dir, data string, port int, cred *syscall.Credential) (*server, error) {
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+dir,
		// A throwaway server: durability buys nothing and costs time.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
	)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Pdeathsig: if the test binary dies (killed, timed out), the kernel
	// tells the server to shut down immediately, so none is left running.
	// The server is our direct child (no runuser/su in between) so that the
	// signal reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	s := &server{url: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), dir: dir}
	proc, err := startProcess("postgres", cmd, 15*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, s.url)
		if err == nil {
			c.Close(context.Background())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.proc = proc
	return s, nil
}

// stop shuts the server down (fast shutdown: ends sessions, no waiting for
// clients) and removes its folder.
func (s *server) stop() {
	s.stopped.Do(func() {
		s.proc.stop(syscall.SIGINT, 10*time.Second)
		os.RemoveAll(s.dir)
	})
}

// runAs returns the credentials to run the server with: none normally, and
// user "nobody" as root (PostgreSQL refuses to run as root), in which case
// dir is handed over to nobody.
func runAs(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to: need user nobody to run it as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	// The parent folders must be traversable by nobody; os.MkdirTemp
	// makes dir 0700, which is fine once nobody owns it.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// findBinDir returns the folder holding initdb and postgres: the one in
// PATH, else the newest /usr/lib/postgresql/<version>/bin.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks (Debian links only some tools into PATH) and
		// require postgres beside it.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			d := filepath.Dir(real)
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("initdb and postgres not found in PATH or /usr/lib/postgresql/*/bin")
}

// pgVersion extracts the major version from /usr/lib/postgresql/<v>/bin.
func pgVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// tempParent is where the server's folder goes: /dev/shm when it has room,
// since a server in memory starts in half the time and creates databases
// five times faster than on a disk; else the usual temporary folder, unless
// we are root and nobody cannot reach it (TMPDIR under /root): then /tmp.
func tempParent() string {
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && uint64(st.Bavail)*uint64(st.Bsize) >= 1<<30 &&
		syscall.Access("/dev/shm", 0o7) == nil {
		return "/dev/shm"
	}
	d := os.TempDir()
	if os.Geteuid() != 0 {
		return d
	}
	for p := d; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if p == filepath.Dir(p) {
			return d
		}
	}
}
