package store

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
)

// BenchmarkHistoryWrite pushes changes through the history writer into the
// test PostgreSQL, in batches of 100 and of 500 (what the writer collects in
// its 100 ms linger at 1,000 and 5,000 changes/s), over 10,000 registered
// users in 100 accounts, and reports what PostgreSQL spent on them:
//
//   - pg-cpu-ms/1k-changes: user+system CPU of the server's processes (its
//     backends and background workers, from /proc) per 1,000 changes; the
//     figure that decides whether PostgreSQL shares the 2 cores with the hub;
//   - rows/change: rows inserted or updated, as the writer counts them;
//   - wal-B/change: WAL written per change (pg_current_wal_lsn);
//   - go-cpu-ms/1k-changes: the CPU of this process (the writer, pgx) per
//     1,000 changes, what the server spends on the history;
//   - the writer's own Go allocations per change (-benchmem).
//
// new-binding is bench stream's and bench history's shape, the writer's
// worst case: every change a new binding (a session closed as replaced, one
// opened). refresh is a refresh-heavy mix: 9 refreshes of an unchanged
// binding for 1 new binding. Run it with a fixed count so that both
// sub-benchmarks write the same changes:
//
//	go test ./store -run '^$' -bench HistoryWrite -benchtime 20000x -benchmem
func BenchmarkHistoryWrite(b *testing.B) {
	for _, mix := range []struct {
		name   string
		newOne int // every newOne-th change is a new binding, the others refreshes
	}{{"new-binding", 1}, {"refresh", 10}} {
		for _, batchLen := range []int{100, 500} {
			b.Run(fmt.Sprintf("%s/batch=%d", mix.name, batchLen), func(b *testing.B) { benchHistoryWrite(b, mix.newOne, batchLen) })
		}
	}
}

func benchHistoryWrite(b *testing.B, newOne, batchLen int) {
	const realms, perRealm = 100, 100
	ctx := context.Background()
	db, _ := openTestDB(b)
	sp := mustSP(b, db, "sp")
	start := time.Now().UTC().Truncate(time.Millisecond)
	if start.Hour() == 23 {
		start = start.Add(-time.Hour) // every write within the day: one partition, made ahead
	}
	h := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return start }})
	if err := h.maintain(ctx, start); err != nil {
		b.Fatal(err)
	}
	regs := make([]hub.Registration, 0, realms*perRealm)
	seqs := map[string]uint64{}
	for r := range realms {
		realm := fmt.Sprintf("r%03d.example.com", r)
		if _, err := db.CreateAccount(ctx, Account{Name: realm, ServiceProviderSID: sp.SID, SIPRealm: realm}); err != nil {
			b.Fatal(err)
		}
		for u := range perRealm {
			regs = append(regs, sipReg(fmt.Sprintf("u%03d", u), realm, "sip:203.0.113.1:1", start))
		}
	}
	at := start
	change := func(i int, event string) hub.Observed {
		r := &regs[i%len(regs)]
		seqs[r.Realm]++
		at = at.Add(100 * time.Microsecond)
		switch event {
		case hub.EventUpdated:
			r.Proxy = "sip:203.0.113.1:" + strconv.Itoa(i+2)
		case hub.EventRefreshed:
			r.ExpiryTime += 1000
		}
		return hub.Observed{Epoch: "bench", Seq: seqs[r.Realm], Event: event, Time: at, Reg: *r}
	}
	write := func(batch []hub.Observed) {
		if err := h.write(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	batch := make([]hub.Observed, 0, batchLen)
	for i := range regs {
		if batch = append(batch, change(i, hub.EventRegistered)); len(batch) == batchLen {
			write(batch)
			batch = batch[:0]
		}
	}
	// What autovacuum does once the open sessions are written; the daily
	// partition of today stays unanalyzed, as it is until it has rows.
	if _, err := db.pool.Exec(ctx, `ANALYZE registration_sessions_open`); err != nil {
		b.Fatal(err)
	}
	cpu0, err := pgCPU(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	var wal0 int64
	if err := db.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'`).Scan(&wal0); err != nil {
		b.Fatal(err)
	}
	rows0 := h.Metrics.Rows.Load()
	self0 := selfCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		event := hub.EventRefreshed
		if i%newOne == 0 {
			event = hub.EventUpdated
		}
		if batch = append(batch, change(i, event)); len(batch) == batchLen || i == b.N-1 {
			write(batch)
			batch = batch[:0]
		}
	}
	b.StopTimer()
	self1 := selfCPU()
	cpu1, err := pgCPU(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	var wal1 int64
	if err := db.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'`).Scan(&wal1); err != nil {
		b.Fatal(err)
	}
	var pgMs float64
	for pid, t1 := range cpu1 {
		pgMs += (t1 - cpu0[pid]) * 1000 // a process started since counts whole
	}
	n := float64(b.N)
	b.ReportMetric(pgMs/n*1000, "pg-cpu-ms/1k-changes")
	b.ReportMetric(float64(h.Metrics.Rows.Load()-rows0)/n, "rows/change")
	b.ReportMetric((self1-self0).Seconds()*1000/n*1000, "go-cpu-ms/1k-changes")
	b.ReportMetric(float64(wal1-wal0)/n, "wal-B/change")
}

// pgCPU returns the CPU seconds (user+system) so far of every process of
// the server db is connected to (its backends and background workers), by
// pid.
func pgCPU(ctx context.Context, db *DB) (map[int]float64, error) {
	rows, err := db.pool.Query(ctx, `SELECT pid FROM pg_stat_activity`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cpu := map[int]float64{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL's processes must run on this machine: %w", err)
		}
		// Fields after the command (which may hold spaces), from field 3.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		cpu[pid] = (ut + st) / 100 // USER_HZ
	}
	return cpu, rows.Err()
}

// benchPresence is a HistoryPresence of fixed users.
type benchPresence struct {
	realms []string
	users  map[string][]hub.UserView
	seq    uint64 // advanced by every reconciliation, as changes would
}

func (p *benchPresence) Ready() bool      { return true }
func (p *benchPresence) Epoch() string    { return "bench" }
func (p *benchPresence) Realms() []string { return p.realms }
func (p *benchPresence) Stats(realm string) hub.Stats {
	return hub.Stats{Epoch: "bench", Seq: 1_000_000}
}
func (p *benchPresence) Users(realm string) []hub.UserView {
	return p.users[realm]
}

// BenchmarkHistoryReconcile reconciles 20,000 registered users (100
// accounts of 200) whose sessions are all stored open and continue (the
// hub's seq advanced since): what the writer does at every restart, and
// after a gap. It reports PostgreSQL's CPU per
// 1,000 users, and the writer's memory per open session it keeps (heap
// after a GC with and without them).
//
//	go test ./store -run '^$' -bench HistoryReconcile -benchtime 3x -benchmem
func BenchmarkHistoryReconcile(b *testing.B) {
	const realms, perRealm = 100, 200
	ctx := context.Background()
	db, _ := openTestDB(b)
	sp := mustSP(b, db, "sp")
	now := time.Now().UTC().Truncate(time.Millisecond)
	h := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return now }})
	pres := &benchPresence{users: map[string][]hub.UserView{}}
	var batch []hub.Observed
	for r := range realms {
		realm := fmt.Sprintf("r%03d.example.com", r)
		if _, err := db.CreateAccount(ctx, Account{Name: realm, ServiceProviderSID: sp.SID, SIPRealm: realm}); err != nil {
			b.Fatal(err)
		}
		pres.realms = append(pres.realms, realm)
		for u := range perRealm {
			reg := sipReg(fmt.Sprintf("u%03d", u), realm, "sip:203.0.113.1:1", now)
			pres.users[realm] = append(pres.users[realm], hub.UserView{Name: reg.User, Contact: reg.Contact, Protocol: reg.Protocol,
				Proxy: reg.Proxy, ExpiryTime: reg.ExpiryTime, Since: now, EventTime: now, LastEvent: hub.EventRegistered})
			batch = append(batch, hub.Observed{Epoch: "seed", Seq: uint64(u + 1), Event: hub.EventRegistered, Time: now, Reg: reg})
		}
		if err := h.write(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	if _, err := db.pool.Exec(ctx, `ANALYZE registration_sessions_open`); err != nil {
		b.Fatal(err)
	}
	cpu0, err := pgCPU(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		pres.seq += 1000
		if err := h.reconcile(ctx, pres); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu1, err := pgCPU(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	var pgMs float64
	for pid, t1 := range cpu1 {
		pgMs += (t1 - cpu0[pid]) * 1000
	}
	b.ReportMetric(pgMs/float64(b.N*realms*perRealm)*1000, "pg-cpu-ms/1k-users")
	var open, closed int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE ended_at = 'infinity'), count(*) FILTER (WHERE ended_at <> 'infinity') FROM registration_sessions`).Scan(&open, &closed); err != nil {
		b.Fatal(err)
	}
	if open != realms*perRealm || closed != 0 {
		b.Fatalf("after the reconciliations: %d open and %d closed sessions, want %d and 0", open, closed, realms*perRealm)
	}
	// The hub's snapshot stays: the strings the writer shares with it are
	// not the writer's.
	b.ReportMetric(heapPerOpenSession(h), "heap-B/open-session")
	runtime.KeepAlive(pres)
}

// heapPerOpenSession is the heap the writer's memory of the open sessions
// takes, per session.
func heapPerOpenSession(h *History) float64 {
	var with, without runtime.MemStats
	n := len(h.open)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&with)
	h.open = nil
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&without)
	return float64(int64(with.HeapAlloc)-int64(without.HeapAlloc)) / float64(n)
}

// selfCPU returns the CPU (user+system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
