package store

import (
	"encoding/binary"
	"time"
)

// pgArray builds one array parameter in PostgreSQL's binary array format
// (what array_recv reads), appending each element to a buffer kept between
// batches. The history writer sends its arrays this way, as bytes to
// pgconn, rather than as Go slices to pgx: pgx encodes a slice element by
// element through its generic plans, boxing every string, time and
// pgtype value into an interface on the way (most of the writer's
// allocations and about half of its CPU, per BenchmarkHistoryWrite).
//
// The format: a header of the number of dimensions (1, or 0 when empty),
// a flag saying whether any element is NULL, the element type's OID, and
// for the one dimension its length and lower bound (1); then each element
// as its length (-1: NULL) and its binary value. PostgreSQL rejects an
// array whose element OID is not the one of the parameter's type.
type pgArray struct {
	buf   []byte
	n     int32
	nulls bool
}

// OIDs of the element types the writer sends.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidTimestamptz = 1184
)

const pgArrayHeader = 20

// start empties a and begins an array of elements of type oid.
func (a *pgArray) start(oid uint32) {
	a.buf = append(a.buf[:0], make([]byte, pgArrayHeader)...)
	binary.BigEndian.PutUint32(a.buf[8:], oid)
	a.n, a.nulls = 0, false
}

// bytes finishes the array and returns it; valid until the next start.
func (a *pgArray) bytes() []byte {
	if a.n == 0 {
		// No dimensions: the empty array.
		binary.BigEndian.PutUint32(a.buf[0:], 0)
		binary.BigEndian.PutUint32(a.buf[4:], 0)
		return a.buf[:12]
	}
	binary.BigEndian.PutUint32(a.buf[0:], 1)
	var nulls uint32
	if a.nulls {
		nulls = 1
	}
	binary.BigEndian.PutUint32(a.buf[4:], nulls)
	binary.BigEndian.PutUint32(a.buf[12:], uint32(a.n))
	binary.BigEndian.PutUint32(a.buf[16:], 1)
	return a.buf
}

func (a *pgArray) null() {
	a.buf = binary.BigEndian.AppendUint32(a.buf, 0xffffffff)
	a.n++
	a.nulls = true
}

// text appends s as it is (text's binary form is its characters;
// PostgreSQL checks that they are valid in its encoding).
func (a *pgArray) text(s string) {
	a.buf = binary.BigEndian.AppendUint32(a.buf, uint32(len(s)))
	a.buf = append(a.buf, s...)
	a.n++
}

// textOrNull appends s, or NULL for "".
func (a *pgArray) textOrNull(s string) {
	if s == "" {
		a.null()
		return
	}
	a.text(s)
}

func (a *pgArray) int8(v int64) {
	a.buf = binary.BigEndian.AppendUint32(a.buf, 8)
	a.buf = binary.BigEndian.AppendUint64(a.buf, uint64(v))
	a.n++
}

func (a *pgArray) int4(v int32) {
	a.buf = binary.BigEndian.AppendUint32(a.buf, 4)
	a.buf = binary.BigEndian.AppendUint32(a.buf, uint32(v))
	a.n++
}

func (a *pgArray) int2(v int16) {
	a.buf = binary.BigEndian.AppendUint32(a.buf, 2)
	a.buf = binary.BigEndian.AppendUint16(a.buf, uint16(v))
	a.n++
}

func (a *pgArray) bool(v bool) {
	a.buf = binary.BigEndian.AppendUint32(a.buf, 1)
	if v {
		a.buf = append(a.buf, 1)
	} else {
		a.buf = append(a.buf, 0)
	}
	a.n++
}

// timestamptz appends t, or NULL for the zero time.
func (a *pgArray) timestamptz(t time.Time) {
	if t.IsZero() {
		a.null()
		return
	}
	a.buf = binary.BigEndian.AppendUint32(a.buf, 8)
	a.buf = binary.BigEndian.AppendUint64(a.buf, uint64(pgMicros(t)))
	a.n++
}

// pgMicros is t in timestamptz's binary form: microseconds since
// 2000-01-01 00:00 UTC, the nanoseconds truncated (as pgx encodes a
// time.Time).
func pgMicros(t time.Time) int64 {
	const unixToY2K = 946684800 * 1_000_000
	return t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - unixToY2K
}

// pgBool and pgTimestamptz are scalar parameters in binary form.
func pgBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func pgTimestamptz(dst []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(pgMicros(t)))
}
