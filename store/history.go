package store

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/presencehub/presencehub/hub"
)

// End reasons of a registration session.
const (
	EndUnregistered = "unregistered"
	EndExpired      = "expired"
	EndReplaced     = "replaced" // a new contact, NAT binding or transport for the same user
)

// HistoryOptions tune a History. Zero values take the defaults.
type HistoryOptions struct {
	// Retention is how long ended sessions are kept (default 30 days),
	// enforced by dropping whole daily partitions.
	Retention time.Duration
	// Buffer bounds the changes waiting to be written (default 65536). When
	// it is full, changes are dropped, counted, and the interval is recorded
	// in registration_history_gaps.
	Buffer int
	// BatchMax bounds the changes written in one transaction (default 2000).
	BatchMax int
	// Linger is how long a batch waits for more changes after its first
	// (default 100ms).
	Linger time.Duration
	// Active, when set, is asked before every batch: a process that is not
	// the history writer (a cluster replica that does not hold the writer
	// lease) returns false and the batch is discarded. Writes are idempotent
	// by (epoch, realm, seq), so a change written twice around a handover
	// does not count twice.
	Active func() bool
	Logger *slog.Logger
	// Now is the clock for retention and gap times (default time.Now).
	Now func() time.Time
	// Heartbeat is how often the writer records in
	// registration_history_runs that it is still recording (default
	// HistoryHeartbeat).
	Heartbeat time.Duration
}

// HistoryHeartbeat is the default interval of the writer's heartbeat. A run
// whose last heartbeat is younger than historyAliveWithin is taken to be
// recording now.
const (
	HistoryHeartbeat   = 30 * time.Second
	historyAliveWithin = 3 * HistoryHeartbeat
)

// HistoryMetrics are cumulative counters of the history writer.
type HistoryMetrics struct {
	Changes    atomic.Uint64 // changes written
	Dropped    atomic.Uint64 // changes dropped because the buffer was full
	Gaps       atomic.Uint64 // gaps recorded
	Batches    atomic.Uint64 // transactions committed
	Rows       atomic.Uint64 // rows inserted or updated by change batches
	Failures   atomic.Uint64 // batch attempts that failed (and were retried)
	Reconciles atomic.Uint64 // full reconciliations against the hub
}

// History writes registration sessions into PostgreSQL, fed by the hub's
// Observe hook. Observe never blocks; Run does the writing.
type History struct {
	db   *DB
	opts HistoryOptions
	log  *slog.Logger
	// ch holds pointers: a channel of values reserved Buffer × the size
	// of an Observed (272 B) up front, 17 MiB with the default buffer,
	// the largest part of an idle server's heap.
	ch chan *hub.Observed

	dropped   atomic.Uint64 // since the last recorded gap
	firstDrop atomic.Int64  // unix ms of the first drop since the last gap

	days    map[string]bool // daily partitions known to exist; Run's goroutine only
	lastDay time.Time       // the day of days last found or made (zero: none)
	run     int64           // this run's row in registration_history_runs (0: none yet); Run's goroutine only
	// open is every stored open session, as the writer remembers it (nil:
	// to be loaded), and plan the batch being written; Run's goroutine only.
	open map[sessKey]openSess
	plan historyPlan

	Metrics HistoryMetrics
}

// NewHistory returns a writer into db. Pass its Observe to hub.Options and
// start Run.
func NewHistory(db *DB, opts HistoryOptions) *History {
	if opts.Retention <= 0 {
		opts.Retention = 30 * 24 * time.Hour
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 65536
	}
	if opts.BatchMax <= 0 {
		opts.BatchMax = 2000
	}
	if opts.Linger <= 0 {
		opts.Linger = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = HistoryHeartbeat
	}
	return &History{db: db, opts: opts, log: opts.Logger, ch: make(chan *hub.Observed, opts.Buffer), days: map[string]bool{},
		plan: historyPlan{pend: map[sessKey]*planSess{}}}
}

// Observe queues one change. It never blocks: when the buffer is full the
// change is dropped and counted, and Run records the gap. The changes of
// the hub's first load are skipped: Run's first reconciliation, which reads
// the hub once it is ready, covers them.
func (h *History) Observe(o hub.Observed) {
	if o.Initial {
		return
	}
	select {
	case h.ch <- &o:
	default:
		h.Metrics.Dropped.Add(1)
		h.dropped.Add(1)
		h.firstDrop.CompareAndSwap(0, o.Time.UnixMilli())
	}
}

// Queued returns the number of changes waiting to be written.
func (h *History) Queued() int { return len(h.ch) }

// HistoryPresence is what History reads of the hub: its state, to begin
// from and to recover after a gap.
type HistoryPresence interface {
	Ready() bool
	Epoch() string
	Realms() []string
	Stats(realm string) hub.Stats
	Users(realm string) []hub.UserView
}

// Run writes until ctx is done. It waits for the hub's first sync, then
// reconciles the stored open sessions with the hub (continuing those that
// are still registered, closing the others), then writes batches of
// changes. A failed write is retried with back-off while changes wait in
// the buffer. Partitions are created ahead and dropped after the retention
// every hour.
func (h *History) Run(ctx context.Context, pres HistoryPresence) error {
	for !pres.Ready() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Every change after the first load is in the buffer, and the
	// reconciliation below reads the hub after that load: nothing falls
	// between them.
	needReconcile := true
	nextMaint, nextBeat := time.Time{}, time.Time{}
	backoff := 100 * time.Millisecond
	var batch []hub.Observed
	for ctx.Err() == nil {
		if now := h.opts.Now(); !now.Before(nextMaint) {
			if err := h.maintain(ctx, now); err != nil {
				h.log.Warn("registration history: partition maintenance failed", "err", err)
				nextMaint = now.Add(time.Minute)
			} else {
				nextMaint = now.Add(time.Hour)
			}
		}
		if n := h.dropped.Swap(0); n > 0 {
			from := h.firstDrop.Swap(0)
			if err := h.recordGap(ctx, from, n); err != nil {
				h.dropped.Add(n)
				h.firstDrop.CompareAndSwap(0, from)
				if !h.sleep(ctx, &backoff, err, "record gap") {
					return nil
				}
				continue
			}
			needReconcile = true
		}
		if needReconcile {
			if err := h.reconcile(ctx, pres); err != nil {
				if !h.sleep(ctx, &backoff, err, "reconcile") {
					return nil
				}
				continue
			}
			needReconcile = false
		}
		if now := h.opts.Now(); !now.Before(nextBeat) {
			// A failed heartbeat only shortens the run as the chart sees it;
			// the next one extends it again.
			if err := h.heartbeat(ctx, now); err != nil && ctx.Err() == nil {
				h.log.Warn("registration history: heartbeat failed", "err", err)
			}
			nextBeat = now.Add(h.opts.Heartbeat)
		}
		if len(batch) == 0 {
			batch = h.collect(ctx, batch[:0], minTime(nextMaint, nextBeat))
			if len(batch) == 0 {
				continue
			}
		}
		if h.opts.Active != nil && !h.opts.Active() {
			// Another replica writes: what it stores is read again when
			// this one becomes the writer.
			h.open = nil
			batch = batch[:0]
			continue
		}
		if err := h.write(ctx, batch); err != nil {
			if !h.sleep(ctx, &backoff, err, "write") {
				return nil
			}
			continue // the same batch again
		}
		backoff = 100 * time.Millisecond
		batch = batch[:0]
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// heartbeat records that this writer is recording at now: it starts a row
// in registration_history_runs on its first call (after the first
// reconciliation, from when the history is complete) and extends it on the
// next. A replica that is not the writer records nothing, and starts a new
// row when it becomes the writer.
func (h *History) heartbeat(ctx context.Context, now time.Time) error {
	if h.opts.Active != nil && !h.opts.Active() {
		h.run = 0
		return nil
	}
	if h.run == 0 {
		return h.db.pool.QueryRow(ctx, `INSERT INTO registration_history_runs (started_at, alive_at) VALUES ($1, $1) RETURNING id`, now).Scan(&h.run)
	}
	_, err := h.db.pool.Exec(ctx, `UPDATE registration_history_runs SET alive_at = GREATEST(alive_at, $2) WHERE id = $1`, h.run, now)
	return err
}

// sleep logs a failure and waits before the retry; false when ctx is done.
func (h *History) sleep(ctx context.Context, backoff *time.Duration, err error, what string) bool {
	if ctx.Err() != nil {
		return false
	}
	h.Metrics.Failures.Add(1)
	h.log.Warn("registration history: "+what+" failed, retrying", "err", err, "in", *backoff, "waiting", len(h.ch))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 5*time.Second)
	return true
}

// collect waits for a first change (until ctx is done or maintenance is
// due), then gathers more for up to Linger or BatchMax changes.
func (h *History) collect(ctx context.Context, batch []hub.Observed, until time.Time) []hub.Observed {
	wait := time.NewTimer(max(time.Until(until), time.Millisecond))
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return batch
	case <-wait.C:
		return batch
	case o := <-h.ch:
		batch = append(batch, *o)
	}
	linger := time.NewTimer(h.opts.Linger)
	defer linger.Stop()
	for len(batch) < h.opts.BatchMax {
		select {
		case o := <-h.ch:
			batch = append(batch, *o)
		case <-linger.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// write applies a batch in one transaction: the changes are planned in Go
// against the open sessions in memory (see history_plan.go) and written as
// one UPDATE and one INSERT. When the stored sessions turn out not to be
// what the memory says, the memory is reloaded and the batch planned again
// (once; a second mismatch is returned as an error and retried).
func (h *History) write(ctx context.Context, batch []hub.Observed) error {
	for _, o := range batch {
		// Any change may close a session (a stale one is replaced), and a
		// closed session needs its day's partition.
		if err := h.ensureDay(ctx, o.Time); err != nil {
			return err
		}
	}
	err := h.writeOnce(ctx, batch)
	if errors.Is(err, errHistoryStale) {
		h.log.Warn("registration history: stored open sessions differ from memory (another writer?); reloading them")
		err = h.writeOnce(ctx, batch)
	}
	if err != nil {
		// Whatever the transaction did or did not commit, the memory is
		// read again from what is stored before the next attempt.
		h.open = nil
	}
	return err
}

func (h *History) writeOnce(ctx context.Context, batch []hub.Observed) error {
	if h.open == nil {
		open, err := loadOpen(ctx, h.db.pool)
		if err != nil {
			return err
		}
		h.open = open
	}
	p := &h.plan
	p.reset()
	for i := range batch {
		h.planChange(p, &batch[i])
	}
	var rows int64
	var opened map[sessKey]int64
	var reload bool
	err := h.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		rows, opened, reload, err = execPlan(ctx, tx, p, true)
		return err
	})
	if err != nil {
		if errors.Is(err, errHistoryStale) {
			h.open = nil
		}
		return err
	}
	commitPlan(p, opened, h.open)
	if reload {
		h.open = nil // a new session was already stored: read what is
	}
	h.Metrics.Batches.Add(1)
	h.Metrics.Changes.Add(uint64(len(batch)))
	h.Metrics.Rows.Add(uint64(rows))
	return nil
}

// inTx runs fn in a transaction on a connection of the pool. When it
// fails (other than as stale), the writer's prepared statements are dropped
// from that connection (see dropHistoryStatements).
func (h *History) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	c, err := h.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	err = pgx.BeginFunc(ctx, c, fn)
	if err != nil && !errors.Is(err, errHistoryStale) {
		dropHistoryStatements(ctx, c.Conn())
	}
	return err
}

// reconcile makes the stored open sessions match the hub: every registered
// user has an open session with its binding (continued, or opened at the
// time the hub has it registered since), every other open session is closed
// as expired at its own expiry (or now, if that is later).
func (h *History) reconcile(ctx context.Context, pres HistoryPresence) error {
	epoch := pres.Epoch()
	now := h.opts.Now()
	cutoff := h.cutoff(now)
	if err := h.ensureDays(ctx, cutoff, now); err != nil {
		return err
	}
	var realms, users []string
	// The open sessions after the reconciliation: those of the registered
	// users, keyed by the hub's strings (shared with its snapshot).
	var open map[sessKey]openSess
	h.open = nil
	err := h.inTx(ctx, func(tx pgx.Tx) error {
		// The hub's users are planned against the stored open sessions
		// (read in this transaction) like changes, and written in chunks
		// of historyReconcileChunk users: a few statements each, with
		// bounded arguments. One transaction still.
		var err error
		if h.open, err = loadOpen(ctx, tx); err != nil {
			return err
		}
		open = make(map[sessKey]openSess, len(h.open))
		p := &h.plan
		p.reset()
		flush := func() error {
			// No insert guard: the memory was read in this transaction, and
			// every new session of a realm has the same (epoch, seq).
			_, opened, _, err := execPlan(ctx, tx, p, false)
			if err == nil {
				commitPlan(p, opened, open)
			}
			p.reset()
			return err
		}
		for _, realm := range pres.Realms() {
			// The seq before the users: a queued change at or below it is
			// already in what Users returns and is skipped as applied.
			seq := int64(pres.Stats(realm).Seq)
			for _, u := range pres.Users(realm) {
				start := u.Since
				if u.LastEvent == hub.EventUpdated {
					start = u.EventTime // the current binding began with the update
				}
				reg := hub.Registration{User: u.Name, Realm: realm, Contact: u.Contact, Protocol: u.Protocol, Proxy: u.Proxy,
					AllowDirectApp: flagBit(u.Flags.App), AllowDirectQueue: flagBit(u.Flags.Queue), AllowDirectUser: flagBit(u.Flags.User), ExpiryTime: u.ExpiryTime}
				h.planActive(p, &reg, epoch, seq, now, start, 0)
				realms = append(realms, realm)
				users = append(users, u.Name)
				if len(p.touched) >= historyReconcileChunk {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
		b := &pgx.Batch{}
		// Sessions that ended before the retention would land in no partition:
		// they are past keeping anyway.
		b.Queue(`DELETE FROM registration_sessions_open o
		WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS l(realm, user_name) WHERE l.realm = o.realm AND l.user_name = o.user_name)
		AND LEAST(COALESCE(o.expires_at, o.last_refresh, o.started_at), $3::timestamptz) < $4::timestamptz`, realms, users, now, cutoff)
		b.Queue(`UPDATE registration_sessions s SET end_reason = 'expired',
		ended_at = GREATEST(s.started_at, LEAST(COALESCE(s.expires_at, s.last_refresh, s.started_at), $3::timestamptz)), last_epoch = $4
		WHERE s.ended_at = 'infinity'
		AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS l(realm, user_name) WHERE l.realm = s.realm AND l.user_name = s.user_name)`,
			realms, users, now, epoch)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		h.open = nil
		return err
	}
	h.open = open
	h.Metrics.Reconciles.Add(1)
	h.log.Info("registration history reconciled with the hub", "registered", len(users))
	return nil
}

// historyReconcileChunk is how many users' sessions a reconcile writes in
// one UPDATE and one INSERT.
const historyReconcileChunk = 2000

func flagBit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// recordGap writes the interval in which n changes were dropped.
func (h *History) recordGap(ctx context.Context, fromMillis int64, n uint64) error {
	to := h.opts.Now()
	from := to
	if fromMillis > 0 {
		from = time.UnixMilli(fromMillis)
	}
	if from.After(to) {
		from = to
	}
	_, err := h.db.pool.Exec(ctx, `INSERT INTO registration_history_gaps (from_ts, to_ts, dropped) VALUES ($1, $2, $3)`, from, to, int64(n))
	if err != nil {
		return err
	}
	h.Metrics.Gaps.Add(1)
	h.log.Warn("registration history incomplete: buffer overflowed", "from", from, "to", to, "dropped", n)
	return nil
}
