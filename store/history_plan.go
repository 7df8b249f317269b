package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/presencehub/presencehub/hub"
)

// The writer decides in Go, not in SQL, what each change does to the
// stored sessions. It is the only writer (the lease holder in cluster
// mode), so it keeps every open session in memory (sessKey → openSess,
// loaded from registration_sessions_open at reconcile and after any
// failure) and turns a batch of changes into exactly the rows to write:
// one UPDATE of the touched stored sessions (refreshes of a session in the
// batch added up; a close moves the row to its day's partition) and one
// INSERT of the new sessions (a session opened and closed inside the batch
// goes straight to its day's partition), each a single statement over
// arrays. Before, every change queued three guarded statements, each
// planned and run against every daily partition.
//
// Idempotency by (epoch, realm, seq) stays: a change at or below the
// (epoch, seq) last applied to the user's open session is skipped in Go;
// the UPDATE still requires the session to be open with the id, and the
// INSERT skips a session some writer already opened for the same change
// (the (realm, start_epoch, start_seq) index, in the partitions the
// session can have ended in). When the stored sessions are not what the
// memory says (another writer wrote around a lease handover), the batch is
// rolled back, the memory reloaded and the batch planned again.

// sessKey identifies a user's open session.
type sessKey struct{ realm, user string }

// openSess is what the writer keeps of a stored open session: enough to
// decide whether a change continues it or replaces it, and to skip a
// change already applied.
type openSess struct {
	id                       int64
	contact, proxy, protocol string
	epoch                    string
	seq                      int64
}

// planSess is a session written by the batch being planned: a stored open
// session (id > 0) that the batch updates, or a new one (id 0).
type planSess struct {
	key                      sessKey
	id                       int64
	contact, proxy, protocol string
	epoch                    string // the last change applied
	seq                      int64
	touched                  bool

	refreshes        int32     // added to the stored count
	lastRefresh      time.Time // zero: unchanged
	cont             bool      // expires and flags below replace the stored ones
	expires          time.Time // zero: NULL
	app, queue, user int16
	ended            time.Time // zero: still open
	reason           string

	started    time.Time // new sessions
	startEpoch string
	startSeq   int64
}

// historyPlan is a batch turned into rows.
type historyPlan struct {
	pend     map[sessKey]*planSess // the user's open session after the changes so far; nil: none
	touched  []*planSess
	skipped  int
	minStart time.Time // earliest start of a new session
	args     planArgs
	opened   map[sessKey]int64 // ids of the new sessions still open, by execPlan
	slab     [][]planSess      // planSess storage, reused between batches
	used     int               // planSess handed out of slab since reset
}

const planSlab = 256

// newSess returns a zeroed planSess from the plan's storage.
func (p *historyPlan) newSess() *planSess {
	c, i := p.used/planSlab, p.used%planSlab
	if c == len(p.slab) {
		p.slab = append(p.slab, make([]planSess, planSlab))
	}
	p.used++
	s := &p.slab[c][i]
	*s = planSess{}
	return s
}

func (p *historyPlan) reset() {
	clear(p.pend)
	clear(p.touched)
	p.touched = p.touched[:0]
	p.skipped = 0
	p.minStart = time.Time{}
	for c := range p.slab[:(p.used+planSlab-1)/planSlab] {
		clear(p.slab[c]) // drop the strings of the last batch
	}
	p.used = 0
}

// current returns the user's open session as the batch left it so far.
func (h *History) current(p *historyPlan, k sessKey) *planSess {
	if s, ok := p.pend[k]; ok {
		return s
	}
	o, ok := h.open[k]
	if !ok {
		return nil
	}
	s := p.newSess()
	*s = planSess{key: k, id: o.id, contact: o.contact, proxy: o.proxy, protocol: o.protocol, epoch: o.epoch, seq: o.seq}
	p.pend[k] = s
	return s
}

func (p *historyPlan) touch(s *planSess, epoch string, seq int64) {
	if !s.touched {
		s.touched = true
		p.touched = append(p.touched, s)
	}
	s.epoch, s.seq = epoch, seq
}

// planChange adds one change to the plan.
func (h *History) planChange(p *historyPlan, o *hub.Observed) {
	r := &o.Reg
	switch o.Event {
	case hub.EventUnregistered, hub.EventExpired:
		k := sessKey{r.Realm, r.User}
		s := h.current(p, k)
		if s == nil {
			return
		}
		if s.epoch == o.Epoch && s.seq >= int64(o.Seq) {
			p.skipped++
			return
		}
		p.touch(s, o.Epoch, int64(o.Seq))
		s.ended, s.reason = o.Time, o.Event
		p.pend[k] = nil
		return
	}
	refresh := int32(0)
	if o.Event == hub.EventRefreshed {
		refresh = 1
	}
	h.planActive(p, r, o.Epoch, int64(o.Seq), o.Time, o.Time, refresh)
}

// planActive makes r's session the user's open one, as of the change
// (epoch, seq) at at: the open session continues when it has r's binding,
// else it is closed as replaced and a session starting at start opened.
func (h *History) planActive(p *historyPlan, r *hub.Registration, epoch string, seq int64, at, start time.Time, refresh int32) {
	k := sessKey{r.Realm, r.User}
	s := h.current(p, k)
	if s != nil && s.contact == r.Contact && s.proxy == r.Proxy && s.protocol == r.Protocol {
		// The same binding: keep the hub's copies of the strings (shared
		// with its snapshot) rather than those read from PostgreSQL.
		s.contact, s.proxy, s.protocol = r.Contact, r.Proxy, r.Protocol
	}
	if s != nil && s.epoch == epoch && s.seq >= seq {
		p.skipped++
		return
	}
	var expires time.Time
	if r.ExpiryTime > 0 {
		expires = time.UnixMilli(r.ExpiryTime)
	}
	if s != nil && (s.contact != r.Contact || s.proxy != r.Proxy || s.protocol != r.Protocol) {
		p.touch(s, epoch, seq)
		s.ended, s.reason = at, EndReplaced
		s = nil
	}
	if s != nil {
		p.touch(s, epoch, seq)
		s.refreshes += refresh
		if refresh > 0 {
			s.lastRefresh = at
		}
		s.cont, s.expires = true, expires
		s.app, s.queue, s.user = int16(r.AllowDirectApp), int16(r.AllowDirectQueue), int16(r.AllowDirectUser)
		return
	}
	// A new session starts with no refreshes, whatever the change.
	s = p.newSess()
	*s = planSess{key: k, contact: r.Contact, proxy: r.Proxy, protocol: r.Protocol,
		cont: true, expires: expires, app: int16(r.AllowDirectApp), queue: int16(r.AllowDirectQueue), user: int16(r.AllowDirectUser),
		started: start, startEpoch: epoch, startSeq: seq}
	p.touch(s, epoch, seq)
	p.pend[k] = s
	if p.minStart.IsZero() || start.Before(p.minStart) {
		p.minStart = start
	}
}

const (
	// sqlUpdateSessions applies the batch to stored open sessions, by id
	// (found through the (realm, user_name) index of the open partition).
	sqlUpdateSessions = `UPDATE registration_sessions s SET
		refreshes = s.refreshes + u.refreshes,
		last_refresh = COALESCE(u.last_refresh, s.last_refresh),
		expires_at = CASE WHEN u.cont THEN u.expires_at ELSE s.expires_at END,
		allow_direct_app_calling = CASE WHEN u.cont THEN u.app ELSE s.allow_direct_app_calling END,
		allow_direct_queue_calling = CASE WHEN u.cont THEN u.queue ELSE s.allow_direct_queue_calling END,
		allow_direct_user_calling = CASE WHEN u.cont THEN u.usr ELSE s.allow_direct_user_calling END,
		ended_at = COALESCE(u.ended_at, s.ended_at), end_reason = COALESCE(u.end_reason, s.end_reason),
		last_epoch = u.epoch, last_seq = u.seq
	FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::bool[], $7::timestamptz[],
		$8::smallint[], $9::smallint[], $10::smallint[], $11::timestamptz[], $12::text[], $13::text[], $14::bigint[])
		AS u(id, realm, user_name, refreshes, last_refresh, cont, expires_at, app, queue, usr, ended_at, end_reason, epoch, seq)
	WHERE s.ended_at = 'infinity' AND s.realm = u.realm AND s.user_name = u.user_name AND s.id = u.id`
	// sqlInsertSessions writes the batch's new sessions, with the account
	// holding each realm now, unless a writer already opened the session
	// for the same change: such a session ended (if it did) no earlier than
	// it started, so only the partitions from $17 (the day before the
	// earliest start) are searched. $20 false skips the check (reconcile).
	sqlInsertSessions = `INSERT INTO registration_sessions (realm, account_sid, user_name, contact, proxy, protocol,
			allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling,
			started_at, ended_at, end_reason, refreshes, last_refresh, expires_at, start_epoch, start_seq, last_epoch, last_seq)
		SELECT u.realm, a.account_sid, u.user_name, u.contact, u.proxy, u.protocol, u.app, u.queue, u.usr,
			u.started_at, COALESCE(u.ended_at, 'infinity'), u.end_reason, u.refreshes, u.last_refresh, u.expires_at,
			u.start_epoch, u.start_seq, u.epoch, u.seq
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[], $7::smallint[], $8::smallint[],
			$9::timestamptz[], $10::timestamptz[], $11::text[], $12::int[], $13::timestamptz[], $14::timestamptz[],
			$15::text[], $16::bigint[], $18::text[], $19::bigint[])
			AS u(realm, user_name, contact, proxy, protocol, app, queue, usr, started_at, ended_at, end_reason, refreshes,
				last_refresh, expires_at, start_epoch, start_seq, epoch, seq)
		LEFT JOIN accounts a ON a.sip_realm = u.realm
		WHERE NOT $20::bool OR NOT EXISTS (SELECT 1 FROM registration_sessions o WHERE o.ended_at >= $17::timestamptz
			AND o.realm = u.realm AND o.start_epoch = u.start_epoch AND o.start_seq = u.start_seq)
		RETURNING id, realm, user_name, ended_at = 'infinity'`
)

// planArgs are the parameters of a plan's statements in PostgreSQL's
// binary form, built by execPlan (see pgArray) and kept between batches so
// that their buffers are reused.
type planArgs struct {
	upd     [len(updateOIDs)]pgArray
	ins     [len(insertOIDs)]pgArray
	since   []byte
	guard   []byte
	params  [][]byte
	formats []int16
}

// The element types of the arrays of sqlUpdateSessions ($1 to $14) and of
// sqlInsertSessions ($1 to $16, $18 and $19; $17 and $20 are scalars), in
// the order of their parameters.
var (
	updateOIDs = [...]uint32{oidInt8, oidText, oidText, oidInt4, oidTimestamptz, oidBool, oidTimestamptz,
		oidInt2, oidInt2, oidInt2, oidTimestamptz, oidText, oidText, oidInt8}
	insertOIDs = [...]uint32{oidText, oidText, oidText, oidText, oidText, oidInt2, oidInt2, oidInt2,
		oidTimestamptz, oidTimestamptz, oidText, oidInt4, oidTimestamptz, oidTimestamptz, oidText, oidInt8, oidText, oidInt8}
)

// The writer's statements are prepared under these names on each
// connection they run on (pgx.Conn.Prepare, once per connection) and run
// with pgconn, their parameters passed as bytes.
const (
	stmtUpdateSessions = "presencehub_history_update"
	stmtInsertSessions = "presencehub_history_insert"
)

// dropHistoryStatements deallocates the writer's prepared statements on c
// after a failed transaction, as pgx drops its cached statements after an
// error: a statement PostgreSQL can no longer run as prepared ("cached plan
// must not change result type" after a schema change) is prepared again by
// the next attempt. Errors are ignored: a broken connection is closed by
// the pool.
func dropHistoryStatements(ctx context.Context, c *pgx.Conn) {
	for _, name := range [...]string{stmtUpdateSessions, stmtInsertSessions} {
		_ = c.Deallocate(ctx, name)
	}
}

// errHistoryStale says the stored open sessions are not what the writer
// remembers: the batch was rolled back and is planned again after a reload.
var errHistoryStale = errors.New("registration history: stored open sessions differ from the writer's memory")

// execPrepared runs the prepared statement name (preparing it on tx's
// connection first if need be) with params in binary form, calling row
// with each result row's values (binary; valid only during the call).
func execPrepared(ctx context.Context, tx pgx.Tx, a *planArgs, name, sql string, params [][]byte, row func([][]byte) error) (pgconn.CommandTag, error) {
	conn := tx.Conn()
	sd, err := conn.Prepare(ctx, name, sql)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	for len(a.formats) < len(params) {
		a.formats = append(a.formats, pgx.BinaryFormatCode)
	}
	rr := conn.PgConn().ExecPrepared(ctx, sd.Name, params, a.formats[:len(params)], a.formats[:1])
	var rowErr error
	for rr.NextRow() {
		if rowErr == nil && row != nil {
			rowErr = row(rr.Values())
		}
	}
	tag, err := rr.Close()
	if err == nil {
		err = rowErr
	}
	return tag, err
}

// execPlan writes a plan in tx and returns the rows written, the ids of
// the new sessions still open, and whether a new session was skipped as
// already written (the memory must then be reloaded).
func execPlan(ctx context.Context, tx pgx.Tx, p *historyPlan, guard bool) (rows int64, opened map[sessKey]int64, skippedNew bool, err error) {
	a := &p.args
	// Every statement of the writer finds its rows by index. A daily
	// partition analyzed while it was empty (or before it grew) would
	// otherwise be scanned whole for each new session's idempotency probe:
	// writing grew with the partition (2.3 ms per change after 20,000 in
	// BenchmarkHistoryWrite with batches of 100).
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
		return 0, nil, false, err
	}
	u, n := &a.upd, &a.ins
	for i, oid := range updateOIDs {
		u[i].start(oid)
	}
	for i, oid := range insertOIDs {
		n[i].start(oid)
	}
	var nUpd, nIns int64
	for _, s := range p.touched {
		if s.id > 0 {
			nUpd++
			u[0].int8(s.id)
			u[1].text(s.key.realm)
			u[2].text(s.key.user)
			u[3].int4(s.refreshes)
			u[4].timestamptz(s.lastRefresh)
			u[5].bool(s.cont)
			u[6].timestamptz(s.expires)
			u[7].int2(s.app)
			u[8].int2(s.queue)
			u[9].int2(s.user)
			u[10].timestamptz(s.ended)
			u[11].textOrNull(s.reason)
			u[12].text(s.epoch)
			u[13].int8(s.seq)
			continue
		}
		nIns++
		n[0].text(s.key.realm)
		n[1].text(s.key.user)
		n[2].text(s.contact)
		n[3].text(s.proxy)
		n[4].text(s.protocol)
		n[5].int2(s.app)
		n[6].int2(s.queue)
		n[7].int2(s.user)
		n[8].timestamptz(s.started)
		n[9].timestamptz(s.ended)
		n[10].textOrNull(s.reason)
		n[11].int4(s.refreshes)
		n[12].timestamptz(s.lastRefresh)
		n[13].timestamptz(s.expires)
		n[14].text(s.startEpoch)
		n[15].int8(s.startSeq)
		n[16].text(s.epoch)
		n[17].int8(s.seq)
	}
	if nUpd > 0 {
		a.params = a.params[:0]
		for i := range u {
			a.params = append(a.params, u[i].bytes())
		}
		tag, err := execPrepared(ctx, tx, a, stmtUpdateSessions, sqlUpdateSessions, a.params, nil)
		if err != nil {
			return 0, nil, false, err
		}
		if tag.RowsAffected() != nUpd {
			return 0, nil, false, errHistoryStale
		}
		rows += tag.RowsAffected()
	}
	if nIns == 0 {
		return rows, nil, false, nil
	}
	since := dayStart(p.minStart).AddDate(0, 0, -1)
	a.since = pgTimestamptz(a.since[:0], since)
	a.guard = pgBool(a.guard[:0], guard)
	a.params = a.params[:0]
	for i := range n[:16] {
		a.params = append(a.params, n[i].bytes())
	}
	a.params = append(a.params, a.since, n[16].bytes(), n[17].bytes(), a.guard)
	if p.opened == nil {
		p.opened = map[sessKey]int64{}
	}
	opened = p.opened
	clear(opened)
	var got int64
	_, err = execPrepared(ctx, tx, a, stmtInsertSessions, sqlInsertSessions, a.params, func(v [][]byte) error {
		// id bigint, realm text, user_name text, open bool
		if len(v) != 4 || len(v[0]) != 8 || len(v[3]) != 1 {
			return fmt.Errorf("registration history: unexpected row from the insert (%d values)", len(v))
		}
		got++
		if v[3][0] == 0 {
			return nil
		}
		id := int64(binary.BigEndian.Uint64(v[0]))
		// The planned session of the user is the one just opened: key the
		// id by its strings rather than by copies of the row's.
		if s := p.pend[sessKey{bytesString(v[1]), bytesString(v[2])}]; s != nil && s.id == 0 {
			opened[s.key] = id
		} else {
			opened[sessKey{string(v[1]), string(v[2])}] = id
		}
		return nil
	})
	if err != nil {
		return 0, nil, false, err
	}
	return rows + got, opened, got != nIns, nil
}

// bytesString is b as a string without a copy, for a map lookup only: the
// string must not outlive b's contents.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// commitPlan makes dst (the memory) what the committed plan wrote: every
// user the plan looked at gets its open session, or none.
func commitPlan(p *historyPlan, opened map[sessKey]int64, dst map[sessKey]openSess) {
	for k, s := range p.pend {
		if s == nil {
			delete(dst, k)
			continue
		}
		id := s.id
		if id == 0 {
			if id = opened[k]; id == 0 {
				continue // not written: the memory is reloaded
			}
		}
		dst[k] = openSess{id: id, contact: s.contact, proxy: s.proxy, protocol: s.protocol, epoch: s.epoch, seq: s.seq}
	}
}

// loadOpen reads the stored open sessions into memory.
func loadOpen(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[sessKey]openSess, error) {
	rows, err := q.Query(ctx, `SELECT id, realm, user_name, contact, proxy, protocol, last_epoch, last_seq FROM registration_sessions_open`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	open := map[sessKey]openSess{}
	epochs := map[string]string{} // one copy of each epoch
	for rows.Next() {
		var k sessKey
		var s openSess
		if err := rows.Scan(&s.id, &k.realm, &k.user, &s.contact, &s.proxy, &s.protocol, &s.epoch, &s.seq); err != nil {
			return nil, err
		}
		if e, ok := epochs[s.epoch]; ok {
			s.epoch = e
		} else {
			epochs[s.epoch] = s.epoch
		}
		open[k] = s
	}
	return open, rows.Err()
}
