package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/presencehub/presencehub/hub"
)

// awkwardStrings are text values that an array encoder gets wrong when it
// quotes, escapes, splits or measures them badly.
var awkwardStrings = []string{
	"", " ", `"`, `\`, `\\"`, `a,b`, `{x}`, `{"a","b"}`, "NULL", "null", `'quoted'`, "tab\there", "new\nline",
	"ü日本🎉", "  padded  ", "sip:alice@[2001:db8::1]:5060;transport=tls", strings.Repeat("long,\"\\", 1500),
}

// roundTrip sends arr as the one parameter of SELECT $1::typ through the
// writer's path (execPrepared) and scans what PostgreSQL returns with pgx
// into dst.
func roundTrip(t *testing.T, tx pgx.Tx, a *planArgs, typ string, arrayOID uint32, arr []byte, dst any) {
	t.Helper()
	ctx := context.Background()
	name := "presencehub_test_" + strings.TrimSuffix(typ, "[]")
	rows := 0
	_, err := execPrepared(ctx, tx, a, name, "SELECT $1::"+typ, [][]byte{arr}, func(v [][]byte) error {
		rows++
		return tx.Conn().TypeMap().Scan(arrayOID, pgtype.BinaryFormatCode, v[0], dst)
	})
	if err != nil {
		t.Fatalf("SELECT $1::%s: %v", typ, err)
	}
	if rows != 1 {
		t.Fatalf("SELECT $1::%s: got %d rows, want 1", typ, rows)
	}
}

// TestPGArrayRoundTrip sends arrays built by pgArray to PostgreSQL and
// checks that it reads back every element as written: awkward strings,
// NULLs, the bounds of the integer types, times before 1970 and 2000 and
// with nanoseconds (truncated to microseconds, as pgx does), empty arrays
// and a big one.
func TestPGArrayRoundTrip(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var a planArgs
	var arr pgArray

	t.Run("text", func(t *testing.T) {
		for _, n := range []int{0, 1, len(awkwardStrings), 5000} {
			want := make([]string, n)
			arr.start(oidText)
			for i := range want {
				want[i] = awkwardStrings[i%len(awkwardStrings)]
				if n == 5000 {
					want[i] += fmt.Sprint(i)
				}
				arr.text(want[i])
			}
			var got []pgtype.Text
			roundTrip(t, tx, &a, "text[]", pgtype.TextArrayOID, arr.bytes(), &got)
			if len(got) != n {
				t.Fatalf("%d strings: got %d elements back", n, len(got))
			}
			for i := range want {
				if !got[i].Valid || got[i].String != want[i] {
					t.Errorf("%d strings: element %d: got %q (valid %v), want %q", n, i, got[i].String, got[i].Valid, want[i])
				}
			}
		}
	})
	t.Run("text or NULL", func(t *testing.T) {
		in := []string{"", "replaced", "", `"NULL"`, ""}
		arr.start(oidText)
		for _, s := range in {
			arr.textOrNull(s)
		}
		var got []pgtype.Text
		roundTrip(t, tx, &a, "text[]", pgtype.TextArrayOID, arr.bytes(), &got)
		if len(got) != len(in) {
			t.Fatalf("got %d elements back, want %d", len(got), len(in))
		}
		for i, s := range in {
			if want := (pgtype.Text{String: s, Valid: s != ""}); got[i] != want {
				t.Errorf("element %d: got %+v, want %+v", i, got[i], want)
			}
		}
	})
	t.Run("integers and booleans", func(t *testing.T) {
		i8 := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 40}
		arr.start(oidInt8)
		for _, v := range i8 {
			arr.int8(v)
		}
		var g8 []int64
		roundTrip(t, tx, &a, "bigint[]", pgtype.Int8ArrayOID, arr.bytes(), &g8)
		if fmt.Sprint(g8) != fmt.Sprint(i8) {
			t.Errorf("bigint[]: got %v, want %v", g8, i8)
		}
		i4 := []int32{0, 1, -1, math.MaxInt32, math.MinInt32}
		arr.start(oidInt4)
		for _, v := range i4 {
			arr.int4(v)
		}
		var g4 []int32
		roundTrip(t, tx, &a, "int[]", pgtype.Int4ArrayOID, arr.bytes(), &g4)
		if fmt.Sprint(g4) != fmt.Sprint(i4) {
			t.Errorf("int[]: got %v, want %v", g4, i4)
		}
		i2 := []int16{0, 1, -1, math.MaxInt16, math.MinInt16}
		arr.start(oidInt2)
		for _, v := range i2 {
			arr.int2(v)
		}
		var g2 []int16
		roundTrip(t, tx, &a, "smallint[]", pgtype.Int2ArrayOID, arr.bytes(), &g2)
		if fmt.Sprint(g2) != fmt.Sprint(i2) {
			t.Errorf("smallint[]: got %v, want %v", g2, i2)
		}
		bs := []bool{true, false, false, true}
		arr.start(oidBool)
		for _, v := range bs {
			arr.bool(v)
		}
		var gb []bool
		roundTrip(t, tx, &a, "bool[]", pgtype.BoolArrayOID, arr.bytes(), &gb)
		if fmt.Sprint(gb) != fmt.Sprint(bs) {
			t.Errorf("bool[]: got %v, want %v", gb, bs)
		}
	})
	t.Run("timestamptz", func(t *testing.T) {
		in := []time.Time{
			{}, // NULL
			time.Unix(0, 0),
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
			time.Date(1969, 7, 20, 20, 17, 40, 1_500, time.UTC),
			time.Date(2026, 11, 30, 12, 0, 0, 123_456_789, time.FixedZone("x", -7*3600)),
			time.Date(9999, 12, 31, 23, 59, 59, 999_999_000, time.UTC),
		}
		arr.start(oidTimestamptz)
		for _, v := range in {
			arr.timestamptz(v)
		}
		var got []pgtype.Timestamptz
		roundTrip(t, tx, &a, "timestamptz[]", pgtype.TimestamptzArrayOID, arr.bytes(), &got)
		if len(got) != len(in) {
			t.Fatalf("got %d elements back, want %d", len(got), len(in))
		}
		for i, v := range in {
			if got[i].Valid == v.IsZero() || (got[i].Valid && !got[i].Time.Equal(v.Truncate(time.Microsecond))) {
				t.Errorf("element %d: got %v (valid %v), want %v", i, got[i].Time, got[i].Valid, v.Truncate(time.Microsecond))
			}
		}
	})
	t.Run("scalars", func(t *testing.T) {
		at := time.Date(1987, 6, 5, 4, 3, 2, 1_234_567, time.UTC)
		var gotT time.Time
		var gotB bool
		_, err := execPrepared(ctx, tx, &a, "presencehub_test_scalars", "SELECT $1::timestamptz, $2::bool", [][]byte{pgTimestamptz(nil, at), pgBool(nil, true)},
			func(v [][]byte) error {
				if err := tx.Conn().TypeMap().Scan(pgtype.TimestamptzOID, pgtype.BinaryFormatCode, v[0], &gotT); err != nil {
					return err
				}
				return tx.Conn().TypeMap().Scan(pgtype.BoolOID, pgtype.BinaryFormatCode, v[1], &gotB)
			})
		if err != nil {
			t.Fatal(err)
		}
		if !gotT.Equal(at.Truncate(time.Microsecond)) || !gotB {
			t.Errorf("got %v and %v, want %v and true", gotT, gotB, at.Truncate(time.Microsecond))
		}
	})
}

// TestHistoryAwkwardValues writes sessions whose realms, users, bindings
// and epochs are awkward strings through the writer, in one big batch and
// then a batch that refreshes, replaces and ends them, and checks every
// stored row and the ids the writer remembers.
func TestHistoryAwkwardValues(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	realms := []string{"r.example.com", `wëird,"realm"\{}`}
	if _, err := db.CreateAccount(ctx, Account{Name: "r", ServiceProviderSID: sp.SID, SIPRealm: realms[0]}); err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Hour).Add(123_456_789) // sub-microsecond digits: truncated
	h := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return start }})
	if err := h.maintain(ctx, start); err != nil {
		t.Fatal(err)
	}
	type want struct {
		contact, proxy, protocol, epoch, reason string
		seq, startSeq                           int64
		refreshes                               int
		started, expires                        time.Time
	}
	const n = 2500
	regs := make([]hub.Registration, n)
	wants := map[sessKey]*want{}
	seqs := map[string]uint64{}
	epoch := `ep"och\,{1}`
	var batch []hub.Observed
	for i := range regs {
		awk := awkwardStrings[i%len(awkwardStrings)]
		r := &regs[i]
		*r = hub.Registration{Realm: realms[i%2], User: fmt.Sprintf("%s·%d", awk, i), Contact: awk, Proxy: awkwardStrings[(i+1)%len(awkwardStrings)],
			Protocol: awkwardStrings[(i+2)%len(awkwardStrings)], ExpiryTime: start.Add(time.Hour).UnixMilli(), AllowDirectApp: i % 2, AllowDirectUser: 1}
		seqs[r.Realm]++
		batch = append(batch, hub.Observed{Epoch: epoch, Seq: seqs[r.Realm], Event: hub.EventRegistered, Time: start, Reg: *r})
		wants[sessKey{r.Realm, r.User}] = &want{contact: r.Contact, proxy: r.Proxy, protocol: r.Protocol, epoch: epoch,
			seq: int64(seqs[r.Realm]), startSeq: int64(seqs[r.Realm]), started: start, expires: time.UnixMilli(r.ExpiryTime)}
	}
	if err := h.write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	checkAwkward := func(what string, closed map[sessKey]*want) {
		t.Helper()
		rows, err := db.pool.Query(ctx, `SELECT id, realm, user_name, contact, proxy, protocol, last_epoch, last_seq, start_seq, refreshes,
			started_at, expires_at, COALESCE(end_reason, ''), ended_at = 'infinity', account_sid IS NOT NULL FROM registration_sessions`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		seen := 0
		for rows.Next() {
			var id, seq, startSeq int64
			var k sessKey
			var g want
			var open, account bool
			if err := rows.Scan(&id, &k.realm, &k.user, &g.contact, &g.proxy, &g.protocol, &g.epoch, &seq, &startSeq, &g.refreshes,
				&g.started, &g.expires, &g.reason, &open, &account); err != nil {
				t.Fatal(err)
			}
			g.seq, g.startSeq = seq, startSeq
			seen++
			w := wants[k]
			if !open {
				w = closed[k]
			}
			if w == nil {
				t.Errorf("%s: unexpected session %q/%q (open %v)", what, k.realm, k.user, open)
				continue
			}
			g.started, g.expires = g.started.UTC(), g.expires.UTC()
			ww := *w
			ww.started, ww.expires = w.started.Truncate(time.Microsecond).UTC(), w.expires.UTC()
			if g != ww {
				t.Errorf("%s: session %q/%q: got %+v, want %+v", what, k.realm, k.user, g, ww)
			}
			if account != (k.realm == realms[0]) {
				t.Errorf("%s: session %q/%q: has an account %v, want %v", what, k.realm, k.user, account, !account)
			}
			if open && h.open[k].id != id {
				t.Errorf("%s: session %q/%q: the writer remembers id %d, stored %d", what, k.realm, k.user, h.open[k].id, id)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if want := len(wants) + len(closed); seen != want || len(h.open) != len(wants) {
			t.Errorf("%s: got %d sessions stored and %d open in memory, want %d and %d", what, seen, len(h.open), want, len(wants))
		}
	}
	checkAwkward("after registering", nil)

	// Refresh the first third, replace the second third's proxy, end the
	// last third, in one batch (updates and inserts).
	later := start.Add(time.Minute)
	closed := map[sessKey]*want{}
	batch = batch[:0]
	for i := range regs {
		r := &regs[i]
		k := sessKey{r.Realm, r.User}
		w := wants[k]
		seqs[r.Realm]++
		seq := int64(seqs[r.Realm])
		o := hub.Observed{Epoch: epoch, Seq: uint64(seq), Time: later}
		switch i % 3 {
		case 0:
			r.ExpiryTime = later.Add(time.Hour).UnixMilli()
			o.Event = hub.EventRefreshed
			w.seq, w.refreshes, w.expires = seq, 1, time.UnixMilli(r.ExpiryTime)
		case 1:
			r.Proxy = awkwardStrings[(i+5)%len(awkwardStrings)] + "→new"
			o.Event = hub.EventUpdated
			old := *w
			old.seq, old.reason = seq, EndReplaced
			closed[k] = &old
			wants[k] = &want{contact: r.Contact, proxy: r.Proxy, protocol: r.Protocol, epoch: epoch, seq: seq, startSeq: seq,
				started: later, expires: w.expires}
		case 2:
			o.Event = hub.EventUnregistered
			w.seq, w.reason = seq, EndUnregistered
			closed[k] = w
			delete(wants, k)
		}
		o.Reg = *r
		batch = append(batch, o)
	}
	if err := h.write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	checkAwkward("after refreshing, replacing and ending", closed)
}

// TestHistoryStatementsReprepared changes the type of a column the
// writer's INSERT returns, which PostgreSQL refuses to run the statement
// prepared before ("cached plan must not change result type"): the write
// fails once, the writer drops its statements from the connection, and the
// retry prepares them again and succeeds (as pgx does with its own cached
// statements).
func TestHistoryStatementsReprepared(t *testing.T) {
	_, u := openTestDB(t)
	// One connection: the retry runs where the statements were prepared.
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		q := pu.Query()
		q.Set("pool_max_conns", "1")
		pu.RawQuery = q.Encode()
		u = pu.String()
	} else {
		u += " pool_max_conns=1"
	}
	db := openDB(t, u, testKey)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	h := NewHistory(db, HistoryOptions{Logger: quietLog(), Now: func() time.Time { return now }})
	if err := h.maintain(ctx, now); err != nil {
		t.Fatal(err)
	}
	reg := func(user string, seq uint64) hub.Observed {
		return hub.Observed{Epoch: "e", Seq: seq, Event: hub.EventRegistered, Time: now, Reg: sipReg(user, "r.example.com", "sip:p", now)}
	}
	if err := h.write(ctx, []hub.Observed{reg("a", 1)}); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, db, `ALTER TABLE registration_sessions ALTER COLUMN user_name TYPE varchar(200)`)
	batch := []hub.Observed{reg("b", 2), reg("c", 3)}
	var pgErr *pgconn.PgError
	if err := h.write(ctx, batch); !errors.As(err, &pgErr) || pgErr.Code != "0A000" {
		t.Fatalf("first write after the change: got %v, want the error of a prepared statement whose result type changed (0A000)", err)
	}
	// The retry may meet another statement prepared before the change
	// (pgx's cached one reading the open sessions, which pgx drops after
	// its error): a few attempts, as Run would make.
	var err error
	for range 3 {
		if err = h.write(ctx, batch); err == nil {
			break
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "0A000" {
			t.Fatalf("retry: %v", err)
		}
	}
	if err != nil {
		t.Fatalf("3 retries: %v (a statement was not prepared again)", err)
	}
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM registration_sessions_open`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(h.open) != 3 {
		t.Errorf("got %d open sessions stored and %d in memory, want 3 and 3", n, len(h.open))
	}
}
