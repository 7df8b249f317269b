package store

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
)

// testSource is a hub.Source that loads initial and then hands its sink to
// the test.
type testSource struct {
	initial []hub.Registration
	sink    chan hub.Sink
}

func (s *testSource) Watch(ctx context.Context, sink hub.Sink) error {
	sink.Resync(s.initial)
	s.sink <- sink
	<-ctx.Done()
	return ctx.Err()
}

// testClock is a settable clock shared by the hub and the writer.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// historyRig runs a hub with initial registrations and a History writing
// into db, until the test ends (or stop is called).
type historyRig struct {
	hub  *hub.Hub
	hist *History
	sink hub.Sink
	stop func()
}

func startHistory(t *testing.T, db *DB, clk *testClock, opts HistoryOptions, initial ...hub.Registration) *historyRig {
	t.Helper()
	opts.Now, opts.Logger = clk.Now, quietLog()
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour // fewer partitions to create: faster
	}
	hist := NewHistory(db, opts)
	h := hub.New(hub.Options{Now: clk.Now, Observe: hist.Observe, Logger: quietLog()})
	src := &testSource{initial: initial, sink: make(chan hub.Sink, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.Run(ctx, src) }()
	go func() { defer wg.Done(); _ = hist.Run(ctx, h) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	rig := &historyRig{hub: h, hist: hist, sink: <-src.sink, stop: stop}
	eventually(t, "the writer's first reconciliation", func() bool { return hist.Metrics.Reconciles.Load() > 0 })
	return rig
}

// apply feeds updates and waits until the writer has written n more changes.
func (r *historyRig) apply(t *testing.T, n uint64, ups ...hub.Update) {
	t.Helper()
	before := r.hist.Metrics.Changes.Load()
	r.sink.Update(ups...)
	eventually(t, "the writer to write the changes", func() bool { return r.hist.Metrics.Changes.Load() >= before+n })
}

func sipReg(user, realm, proxy string, now time.Time) hub.Registration {
	return hub.Registration{User: user, Realm: realm, Contact: "sip:" + user + "@10.0.0.5:5060", Protocol: "udp", Proxy: proxy,
		ExpiryTime: now.Add(time.Hour).UnixMilli(), Deadline: now.Add(time.Hour)}
}

func put(r hub.Registration) hub.Update { return hub.Update{AOR: r.AOR(), Reg: &r} }
func gone(aor string) hub.Update        { return hub.Update{AOR: aor} }

type sessionWant struct {
	name, proxy, reason string
	open                bool
	refreshes           int
}

func checkSessions(t *testing.T, what string, got []Session, want []sessionWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d sessions %+v, want %d", what, len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Proxy != w.proxy || g.EndReason != w.reason || g.Ended.IsZero() != w.open || g.Refreshes != w.refreshes {
			t.Errorf("%s: session %d: got %s proxy %s reason %q open %v refreshes %d, want %s proxy %s reason %q open %v refreshes %d",
				what, i, g.Name, g.Proxy, g.EndReason, g.Ended.IsZero(), g.Refreshes, w.name, w.proxy, w.reason, w.open, w.refreshes)
		}
	}
}

func TestHistorySessions(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	acct := mustAccount(t, db, sp, "acct", "example.com")
	other := mustAccount(t, db, sp, "other", "other.com")
	clk := &testClock{t: time.Now().Truncate(time.Millisecond)}
	const realm = "example.com"

	alice := sipReg("alice", realm, "sip:203.0.113.1:4000", clk.Now())
	rig := startHistory(t, db, clk, HistoryOptions{Linger: time.Millisecond}, alice)

	step := func() time.Time { clk.Add(time.Second); return clk.Now() }
	step()
	refreshed := alice
	refreshed.ExpiryTime += 60_000
	rig.apply(t, 1, put(refreshed))
	step()
	refreshed.ExpiryTime += 60_000
	rig.apply(t, 1, put(refreshed))
	step()
	moved := refreshed
	moved.Proxy = "sip:203.0.113.1:4001" // a new NAT binding
	rig.apply(t, 1, put(moved))
	step()
	bob := sipReg("bob", realm, "sip:198.51.100.2:5000", clk.Now())
	rig.apply(t, 1, put(bob))
	step()
	rig.apply(t, 1, gone(bob.AOR()))
	step()
	carol := sipReg("carol", realm, "sip:198.51.100.3:5000", clk.Now())
	carol.Deadline = clk.Now().Add(500 * time.Millisecond)
	rig.apply(t, 1, put(carol))
	step()
	rig.apply(t, 1, gone(carol.AOR())) // after its deadline: expired
	step()
	stranger := sipReg("zed", "other.com", "sip:192.0.2.9:1", clk.Now())
	rig.apply(t, 1, put(stranger))

	all, next, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 100})
	if err != nil || next != nil {
		t.Fatalf("RegistrationHistory: %v, next %v", err, next)
	}
	checkSessions(t, "account", all, []sessionWant{
		{name: "carol", proxy: carol.Proxy, reason: EndExpired},
		{name: "bob", proxy: bob.Proxy, reason: EndUnregistered},
		{name: "alice", proxy: moved.Proxy, open: true},
		{name: "alice", proxy: alice.Proxy, reason: EndReplaced, refreshes: 2},
	})
	users, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{User: "alice", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkSessions(t, "user alice", users, []sessionWant{
		{name: "alice", proxy: moved.Proxy, open: true},
		{name: "alice", proxy: alice.Proxy, reason: EndReplaced, refreshes: 2},
	})
	otherSessions, _, err := db.RegistrationHistory(ctx, other.SID, HistoryQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkSessions(t, "other account", otherSessions, []sessionWant{{name: "zed", proxy: stranger.Proxy, open: true}})

	// Pages of one follow each other without repeats or holes.
	var paged []Session
	q := HistoryQuery{Limit: 1}
	for range 10 {
		page, next, err := db.RegistrationHistory(ctx, acct.SID, q)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if next == nil {
			break
		}
		c, err := ParseHistoryCursor(next.String())
		if err != nil || c != *next {
			t.Fatalf("cursor round trip: got %+v, %v, want %+v", c, err, *next)
		}
		q.After = &c
	}
	if len(paged) != len(all) {
		t.Fatalf("paged listing: got %d sessions, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i].ID != all[i].ID {
			t.Errorf("paged listing: session %d is %d, want %d", i, paged[i].ID, all[i].ID)
		}
	}

	// since/until select the sessions running in the interval.
	bobSessions, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 100,
		Since: all[1].Started, Until: all[1].Ended})
	if err != nil {
		t.Fatal(err)
	}
	checkSessions(t, "while bob was registered", bobSessions, []sessionWant{
		{name: "bob", proxy: bob.Proxy, reason: EndUnregistered},
		{name: "alice", proxy: moved.Proxy, open: true},
	})

	u, err := db.UserHistory(ctx, acct.SID, "alice", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !u.Open || u.Sessions24h != 2 || u.Sessions1h != 2 || u.NATChanges1h != 1 || u.Flapping(2) || !u.Flapping(1) {
		t.Errorf("UserHistory(alice) = %+v; want open, 2 sessions in 24h and 1h, 1 NAT change, flapping over 1 but not over 2", u)
	}
	u, err = db.UserHistory(ctx, acct.SID, "bob", clk.Now())
	if err != nil || u.Open || !u.LastSeen.Equal(all[1].Ended) {
		t.Errorf("UserHistory(bob) = %+v, %v; want closed, last seen %v", u, err, all[1].Ended)
	}
	u, err = db.UserHistory(ctx, acct.SID, "nobody", clk.Now())
	if err != nil || !u.LastSeen.IsZero() || u.Sessions24h != 0 {
		t.Errorf("UserHistory(nobody) = %+v, %v; want never seen", u, err)
	}

	// A restart: alice is still registered with the same binding (her
	// session continues), dave was open before the stop but is no longer in
	// Redis (his session is closed as expired), erin is new.
	rig.stop()
	sqlExec(t, db, `INSERT INTO registration_sessions (realm, account_sid, user_name, started_at, expires_at, start_epoch, start_seq, last_epoch, last_seq)
		VALUES ($1, $2, 'dave', $3, $4, 'old', 1, 'old', 1)`, realm, acct.SID, clk.Now().Add(-time.Minute), clk.Now().Add(-time.Second))
	step()
	erin := sipReg("erin", realm, "sip:198.51.100.5:5000", clk.Now())
	startHistory(t, db, clk, HistoryOptions{Linger: time.Millisecond}, moved, erin)
	after, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkSessions(t, "after a restart", after, []sessionWant{
		{name: "erin", proxy: erin.Proxy, open: true},
		{name: "carol", proxy: carol.Proxy, reason: EndExpired},
		{name: "bob", proxy: bob.Proxy, reason: EndUnregistered},
		{name: "alice", proxy: moved.Proxy, open: true},
		{name: "alice", proxy: alice.Proxy, reason: EndReplaced, refreshes: 2},
		{name: "dave", proxy: "", reason: EndExpired}, // started a minute before the stop
	})
	if after[3].ID != all[2].ID {
		t.Errorf("alice's open session after the restart is %d, want the continued %d", after[3].ID, all[2].ID)
	}
	if want := clk.Now().Add(-time.Second - time.Second); !after[5].Ended.Equal(want) {
		t.Errorf("dave's session ended at %v, want its expiry %v", after[5].Ended, want)
	}
}

// TestHistoryIdempotent writes the same changes twice: the second time
// changes nothing.
func TestHistoryIdempotent(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "example.com")
	now := time.Now().Truncate(time.Millisecond)
	h := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return now }})
	a := sipReg("alice", "example.com", "sip:203.0.113.1:4000", now)
	b := a
	b.Proxy = "sip:203.0.113.1:4001"
	batch := []hub.Observed{
		{Epoch: "e1", Seq: 1, Event: hub.EventRegistered, Time: now, Reg: a},
		{Epoch: "e1", Seq: 2, Event: hub.EventRefreshed, Time: now.Add(time.Second), Reg: a},
		{Epoch: "e1", Seq: 3, Event: hub.EventUpdated, Time: now.Add(2 * time.Second), Reg: b},
		{Epoch: "e1", Seq: 4, Event: hub.EventRefreshed, Time: now.Add(3 * time.Second), Reg: b},
	}
	for i := range 2 {
		if err := h.write(ctx, batch); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		checkSessions(t, "after writing the batch", got, []sessionWant{
			{name: "alice", proxy: b.Proxy, open: true, refreshes: 1},
			{name: "alice", proxy: a.Proxy, reason: EndReplaced, refreshes: 1},
		})
	}
}

// TestHistoryGap overflows the buffer: the dropped changes are counted and
// recorded as a gap, and the writer then reconciles with the hub.
func TestHistoryGap(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	mustAccount(t, db, mustSP(t, db, "sp"), "acct", "example.com")
	now := time.Now().Truncate(time.Millisecond)
	h := NewHistory(db, HistoryOptions{Buffer: 1, Logger: quietLog(), Now: func() time.Time { return now }})
	for i := range 3 {
		h.Observe(hub.Observed{Epoch: "e", Seq: uint64(i + 1), Event: hub.EventRegistered, Time: now.Add(time.Duration(i-10) * time.Second),
			Reg: sipReg("alice", "example.com", "p", now)})
	}
	if got := h.Metrics.Dropped.Load(); got != 2 {
		t.Fatalf("dropped %d changes, want 2", got)
	}
	if err := h.recordGap(ctx, h.firstDrop.Load(), h.dropped.Load()); err != nil {
		t.Fatal(err)
	}
	var from, to time.Time
	var dropped int64
	if err := db.pool.QueryRow(ctx, `SELECT from_ts, to_ts, dropped FROM registration_history_gaps`).Scan(&from, &to, &dropped); err != nil {
		t.Fatal(err)
	}
	if !from.Equal(now.Add(-9*time.Second)) || !to.Equal(now) || dropped != 2 {
		t.Errorf("gap from %v to %v, %d dropped; want from %v to %v, 2 dropped", from, to, dropped, now.Add(-9*time.Second), now)
	}
}

// TestHistoryRetention drops the daily partitions past the retention and
// creates those ahead.
func TestHistoryRetention(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	now := time.Date(2030, 5, 10, 12, 0, 0, 0, time.UTC)
	h := NewHistory(db, HistoryOptions{Retention: 3 * 24 * time.Hour, Logger: quietLog()})
	if err := h.maintain(ctx, now); err != nil {
		t.Fatal(err)
	}
	// A session that ended on the oldest kept day.
	sqlExec(t, db, `INSERT INTO registration_sessions (realm, user_name, started_at, ended_at, end_reason, start_epoch, start_seq, last_epoch, last_seq)
		VALUES ('r', 'u', '2030-05-07 10:00Z', '2030-05-07 11:00Z', 'expired', 'e', 1, 'e', 1)`)
	got, err := db.historyPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"registration_sessions_20300507", "registration_sessions_20300508", "registration_sessions_20300509",
		"registration_sessions_20300510", "registration_sessions_20300511", "registration_sessions_20300512"}
	if !equalStrings(got, want) {
		t.Fatalf("partitions %v, want %v", got, want)
	}
	if err := h.maintain(ctx, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err = db.historyPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want[1:], "registration_sessions_20300513")
	if !equalStrings(got, want) {
		t.Fatalf("a day later: partitions %v, want %v", got, want)
	}
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM registration_sessions`).Scan(&n); err != nil || n != 0 {
		t.Errorf("sessions left after their day was dropped: %d, %v", n, err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHistoryWriters writes changes through two writers in turn, as around
// a lease handover in cluster mode: each writer keeps the open sessions in
// memory, and what the other stored in between is found (the batch is
// planned again) or skipped as already written, never written twice.
func TestHistoryWriters(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "example.com")
	now := time.Now().Truncate(time.Millisecond)
	a := sipReg("alice", "example.com", "sip:203.0.113.1:4000", now)
	b := a
	b.Proxy = "sip:203.0.113.1:4001"
	c := a
	c.Proxy = "sip:203.0.113.1:4002"
	ch := func(seq uint64, event string, r hub.Registration) hub.Observed {
		return hub.Observed{Epoch: "e1", Seq: seq, Event: event, Time: now.Add(time.Duration(seq) * time.Second), Reg: r}
	}
	for _, tc := range []struct {
		name  string
		first []hub.Observed // by the first writer, then by the second
		then  []hub.Observed // by the second writer, then by the first
		want  []sessionWant
	}{{
		name:  "the other writer replaced the session",
		first: []hub.Observed{ch(1, hub.EventRegistered, a)},
		then:  []hub.Observed{ch(2, hub.EventUpdated, b), ch(3, hub.EventRefreshed, b)},
		want: []sessionWant{
			{name: "alice", proxy: b.Proxy, open: true, refreshes: 1},
			{name: "alice", proxy: a.Proxy, reason: EndReplaced},
		},
	}, {
		name:  "the other writer closed the session",
		first: []hub.Observed{ch(1, hub.EventRegistered, a), ch(2, hub.EventRefreshed, a)},
		then:  []hub.Observed{ch(3, hub.EventUnregistered, a), ch(4, hub.EventRegistered, c)},
		want: []sessionWant{
			{name: "alice", proxy: c.Proxy, open: true},
			{name: "alice", proxy: a.Proxy, reason: EndUnregistered, refreshes: 1},
		},
	}, {
		name:  "sessions opened and closed inside a batch",
		first: []hub.Observed{ch(1, hub.EventRegistered, a), ch(2, hub.EventUpdated, b), ch(3, hub.EventExpired, b)},
		then:  []hub.Observed{ch(4, hub.EventRegistered, c), ch(5, hub.EventRefreshed, c), ch(6, hub.EventRefreshed, c)},
		want: []sessionWant{
			{name: "alice", proxy: c.Proxy, open: true, refreshes: 2},
			{name: "alice", proxy: b.Proxy, reason: EndExpired},
			{name: "alice", proxy: a.Proxy, reason: EndReplaced},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sqlExec(t, db, `DELETE FROM registration_sessions`)
			h1 := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return now }})
			h2 := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return now }})
			// Each writer writes each batch, in the order of a handover and
			// back: every batch reaches PostgreSQL twice.
			for i, step := range []struct {
				h     *History
				batch []hub.Observed
			}{{h1, tc.first}, {h2, tc.first}, {h2, tc.then}, {h1, tc.first}, {h1, tc.then}, {h2, tc.then}} {
				if err := step.h.write(ctx, step.batch); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			got, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			checkSessions(t, "after both writers", got, tc.want)
		})
	}
}

// TestHistoryReconcileOpensEverySession starts the writer on a hub that
// already has several users of one realm registered and nothing stored:
// the reconciliation opens a session for each of them (they share the
// realm's seq, which must not make the first one hide the others).
func TestHistoryReconcileOpensEverySession(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "example.com")
	clk := &testClock{t: time.Now().Truncate(time.Millisecond)}
	var initial []hub.Registration
	var want []sessionWant
	for _, name := range []string{"carol", "bob", "alice"} {
		r := sipReg(name, "example.com", "sip:203.0.113.1:4000", clk.Now())
		initial = append(initial, r)
		want = append(want, sessionWant{name: name, proxy: r.Proxy, open: true})
	}
	startHistory(t, db, clk, HistoryOptions{Linger: time.Millisecond}, initial...)
	got, _, err := db.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b Session) int { return strings.Compare(b.Name, a.Name) })
	checkSessions(t, "after the first reconciliation", got, want)
}
