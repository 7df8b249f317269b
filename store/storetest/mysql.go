package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// fallbackMySQLDSN is tried when no private MariaDB/MySQL can be started.
const fallbackMySQLDSN = "root@tcp(127.0.0.1:3306)/"

var (
	myOnce     sync.Once
	myAdminDSN string // DSN without a database, of the chosen server
	myErr      error

	myMu  sync.Mutex
	mySrv *MySQLServer // the shared private server, if one was started
)

// MySQLServer is a private mariadbd (or mysqld) on a free loopback port,
// with its data in a temporary folder. Stop and Start let a test take it
// away and bring it back with the same data and port.
type MySQLServer struct {
	DSN  string // root@tcp(127.0.0.1:<port>)/ (no database)
	Addr string

	bin, dir string
	port     int

	mu   sync.Mutex
	proc *process // nil while stopped
}

// StartMySQL starts a private MariaDB (mariadbd, else mysqld) for one test
// and stops it in t.Cleanup. The server runs with --skip-grant-tables: it is
// a throwaway reached only on loopback, and without grant tables it needs no
// mariadb-install-db (which costs several seconds) and accepts root with no
// password. The test fails with install advice when no server binary exists.
func StartMySQL(t testing.TB) *MySQLServer {
	t.Helper()
	s, err := startMySQL()
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

func startMySQL() (*MySQLServer, error) {
	bin, err := mysqlBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempParent(), "presencehub-mysql-")
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &MySQLServer{bin: bin, dir: dir, port: port,
			Addr: fmt.Sprintf("127.0.0.1:%d", port),
			DSN:  fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func mysqlBinary() (string, error) {
	for _, name := range []string{"mariadbd", "mysqld"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/usr/libexec"} {
			if p := filepath.Join(d, name); fileExists(p) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("neither mariadbd nor mysqld is installed: the jambonz tests need a real MariaDB/MySQL. " +
		"Install it (Debian/Ubuntu: apt-get install mariadb-server), or set PRESENCE_TEST_MYSQL_URL")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Start starts the server (again, after Stop) on its port and waits until it
// accepts connections.
func (s *MySQLServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	args := []string{"--no-defaults",
		"--datadir=" + filepath.Join(s.dir, "data"),
		"--port=" + strconv.Itoa(s.port),
		"--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(s.dir, "sock"),
		"--pid-file=" + filepath.Join(s.dir, "pid"),
		"--skip-grant-tables", "--skip-log-bin", "--skip-name-resolve",
		// A throwaway server: durability buys nothing and costs time.
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M",
		"--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
		"--max-connections=300",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	proc, err := startProcess(s.bin, cmd, 30*time.Second, 50*time.Millisecond, func() error { return mysqlPing(s.DSN) })
	if err != nil {
		return err
	}
	s.proc = proc
	return nil
}

// Stop shuts the server down (keeping its data) and waits until it is gone.
func (s *MySQLServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	s.proc.stop(syscall.SIGTERM, 20*time.Second)
	s.proc = nil
}

func (s *MySQLServer) stop() {
	s.Stop()
	os.RemoveAll(s.dir)
}

func mysqlPing(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// chooseMySQL sets myAdminDSN, or myErr.
func chooseMySQL() {
	if u := os.Getenv("PRESENCE_TEST_MYSQL_URL"); u != "" {
		cfg, err := mysql.ParseDSN(strings.TrimPrefix(u, "mysql://"))
		if err != nil {
			myErr = fmt.Errorf("PRESENCE_TEST_MYSQL_URL %q: want a go-sql-driver DSN such as root@tcp(127.0.0.1:3306)/: %w", u, err)
			return
		}
		cfg.DBName = ""
		if err := mysqlPing(cfg.FormatDSN()); err != nil {
			myErr = fmt.Errorf("PRESENCE_TEST_MYSQL_URL does not answer: %w", err)
			return
		}
		myAdminDSN = cfg.FormatDSN()
		return
	}
	s, err := startMySQL()
	if err == nil {
		myMu.Lock()
		mySrv = s
		myMu.Unlock()
		myAdminDSN = s.DSN
		return
	}
	if mysqlPing(fallbackMySQLDSN) == nil {
		fmt.Fprintf(os.Stderr, "storetest: cannot start a private MariaDB (%v); using %s\n", err, fallbackMySQLDSN)
		myAdminDSN = fallbackMySQLDSN
		return
	}
	myErr = fmt.Errorf(`these tests need MariaDB or MySQL and none is available.
  Cannot start a private server: %v
  and nothing answers at %s.
Install it (Debian/Ubuntu: apt-get install mariadb-server), or set
PRESENCE_TEST_MYSQL_URL to a DSN whose user may CREATE DATABASE`, err, fallbackMySQLDSN)
}

func stopMySQL() {
	myMu.Lock()
	defer myMu.Unlock()
	if mySrv != nil {
		mySrv.stop()
	}
}

// NewMySQLDatabase creates a fresh database on the package's MariaDB (a
// private one started on first use, PRESENCE_TEST_MYSQL_URL, or the one at
// 127.0.0.1:3306), drops it when the test ends, and returns a go-sql-driver
// DSN for it.
func NewMySQLDatabase(t testing.TB) string {
	t.Helper()
	chosen(t, "NewMySQLDatabase", &myOnce, chooseMySQL, &myErr)
	return NewMySQLDatabaseOn(t, myAdminDSN)
}

// NewMySQLDatabaseOn is NewMySQLDatabase on a given server (such as one from
// StartMySQL).
func NewMySQLDatabaseOn(t testing.TB, adminDSN string) string {
	t.Helper()
	name := databaseName(t.Name())
	db, err := sql.Open("mysql", adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("storetest: create mysql database %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", adminDSN)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The server may be stopped by now (a test's own); ignore that.
		db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
	})
	cfg, err := mysql.ParseDSN(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	return cfg.FormatDSN()
}
