package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The read-back of notified keys (readKeys) runs at the rate of changes,
// so it avoids go-redis's per-reply allocations: the values come with MGET
// (redisMGetBatch keys each, like a load's) instead of a GET per key, and
// every reply of the pipeline (the MGETs' and the PTTLs') is written, as raw
// RESP, into one buffer that the next batch reuses (redis.RawWriteToCmd);
// respScanner walks it, and parseRecord reads each value where it lies. The
// PTTL commands and the pipeline are kept from one batch to the next too.
// A batch of 500 keys allocated 1,188 B in 8 objects per key with GET and
// PTTL commands, 316 B in 3 this way (the Registration the hub keeps, its
// contact and proxy, and a small reader inside go-redis): see
// BenchmarkReadKeys.
//
// MGET gives nil both for an absent key and for a key that is not a string,
// where GET says WRONGTYPE. The PTTL tells them apart: -2 is absent; a key
// that has a TTL or none (-1) but no value is read again with GET and PTTL
// (readKeysByGet), which says WRONGTYPE as before, or gives the value of a
// key written between the MGET and its PTTL.

// keyReader is what readKeys keeps from one batch to the next.
type keyReader struct {
	mu sync.Mutex // readKeys runs one batch at a time anyway

	// pipe is a pipeline of rdb, kept: a new one costs four allocations
	// per batch, and a batch at 5,000 changes/s holds a few keys.
	pipe  redis.Pipeliner
	rdb   *redis.Client
	keys  []string // the batch's keys, which the commands' arguments point at
	args  []any    // "pttl", &keys[i] for each i, then the MGETs' arguments
	pttls []*redis.RawWriteToCmd
	cmds  []redis.Cmder
	buf   bytes.Buffer // the pipeline's replies, raw RESP
	vals  []respValue
	out   []keyState
}

// keyReaderKeepBuf is the largest reply buffer kept for the next batch (a
// batch of huge values, malformed ones say, would otherwise pin it).
const keyReaderKeepBuf = 4 << 20

// prepare makes r ready for a batch of n keys.
func (r *keyReader) prepare(n int) {
	if n <= len(r.pttls) {
		return
	}
	// The commands point at r.keys and r.args: made again together. They
	// are made with no context of a batch's: go-redis takes the one of
	// the pipeline (a command's own serves its Clone, never called here).
	size := n
	r.keys = make([]string, size)
	r.args = make([]any, 2*size, 2*size+size+size/redisMGetBatch+1)
	r.pttls = make([]*redis.RawWriteToCmd, size)
	for i := range r.pttls {
		a := r.args[2*i : 2*i+2 : 2*i+2]
		a[0], a[1] = "pttl", &r.keys[i] // *string: no allocation to box it
		r.pttls[i] = redis.NewRawWriteToCmd(context.Background(), &r.buf, a...)
	}
}

// done drops what the batch should not keep alive.
func (r *keyReader) done() {
	clear(r.keys)
	clear(r.vals)
	if r.buf.Cap() > keyReaderKeepBuf {
		r.buf = bytes.Buffer{}
	} else {
		r.buf.Reset()
	}
}

// respValue is a bulk string of a reply; nil says the reply was nil.
type respValue struct {
	b    []byte
	null bool
}

// respError is an error reply found in raw RESP; it is a redis.Error, like
// the ones go-redis makes (isReplyError, redis.HasErrorPrefix).
type respError string

func (e respError) Error() string { return string(e) }
func (respError) RedisError()     {}

// errRESP says the raw replies are not what the commands give; a batch that
// meets it ends the session.
var errRESP = errors.New("redis: unexpected reply")

// respScanner reads the replies of MGET and PTTL from raw RESP, RESP2 or
// RESP3: arrays, bulk strings, nulls, integers and errors.
type respScanner struct {
	b []byte
}

// line returns the next line's type and text (without the CRLF).
func (sc *respScanner) line() (byte, []byte, error) {
	i := bytes.Index(sc.b, []byte("\r\n"))
	if i < 1 {
		return 0, nil, fmt.Errorf("%w: %.40q", errRESP, sc.b)
	}
	t, l := sc.b[0], sc.b[1:i]
	sc.b = sc.b[i+2:]
	return t, l, nil
}

// replyError is the error of an error reply whose line is l, or of any
// other type t, unexpected.
func (sc *respScanner) replyError(t byte, l []byte) error {
	switch t {
	case '-':
		return respError(l)
	case '!': // RESP3 blob error
		b, err := sc.bulkBody(l)
		if err != nil {
			return err
		}
		return respError(b)
	}
	return fmt.Errorf("%w: %q", errRESP, append([]byte{t}, l...))
}

// bulkBody returns the n bytes (n given by l) that follow.
func (sc *respScanner) bulkBody(l []byte) ([]byte, error) {
	n, ok := respInt(l)
	if !ok || n < 0 || n > int64(len(sc.b))-2 || sc.b[n] != '\r' || sc.b[n+1] != '\n' {
		return nil, fmt.Errorf("%w: bulk of %q bytes", errRESP, l)
	}
	b := sc.b[:n:n]
	sc.b = sc.b[n+2:]
	return b, nil
}

// arrayLen reads an array's header.
func (sc *respScanner) arrayLen() (int, error) {
	t, l, err := sc.line()
	if err != nil {
		return 0, err
	}
	if t != '*' {
		return 0, sc.replyError(t, l)
	}
	n, ok := respInt(l)
	if !ok || n < 0 || n > int64(len(sc.b)) {
		return 0, fmt.Errorf("%w: array of %q", errRESP, l)
	}
	return int(n), nil
}

// bulk reads a bulk string or a nil.
func (sc *respScanner) bulk() (respValue, error) {
	t, l, err := sc.line()
	if err != nil {
		return respValue{}, err
	}
	switch {
	case t == '$' && len(l) == 2 && l[0] == '-' && l[1] == '1', t == '_' && len(l) == 0:
		return respValue{null: true}, nil
	case t == '$':
		b, err := sc.bulkBody(l)
		return respValue{b: b}, err
	}
	return respValue{}, sc.replyError(t, l)
}

// integer reads an integer.
func (sc *respScanner) integer() (int64, error) {
	t, l, err := sc.line()
	if err != nil {
		return 0, err
	}
	if t != ':' {
		return 0, sc.replyError(t, l)
	}
	n, ok := respInt(l)
	if !ok {
		return 0, fmt.Errorf("%w: integer %q", errRESP, l)
	}
	return n, nil
}

// respInt parses a RESP length or integer without allocating.
func respInt(l []byte) (int64, bool) {
	neg := len(l) > 0 && l[0] == '-'
	if neg {
		l = l[1:]
	}
	if len(l) == 0 || len(l) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range l {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// readKeys reads keys with one pipeline of MGETs (redisMGetBatch keys each)
// and a PTTL per key (see keyReader). The slice returned is valid until the
// next call.
func (s *RedisSource) readKeys(ctx context.Context, keys []string) ([]keyState, error) {
	r := &s.reader
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.done()
	n := len(keys)
	r.prepare(n)
	copy(r.keys, keys)
	r.cmds = r.cmds[:0]
	margs := r.args[2*len(r.pttls) : cap(r.args) : cap(r.args)] // room for every MGET's
	for from := 0; from < n; from += redisMGetBatch {
		to := min(n, from+redisMGetBatch)
		a := margs[: 1+to-from : 1+to-from]
		margs = margs[1+to-from:]
		a[0] = "mget"
		for i := from; i < to; i++ {
			a[1+i-from] = &r.keys[i]
		}
		// The MGET, then its keys' PTTLs: a value and its TTL are read
		// close together.
		r.cmds = append(r.cmds, redis.NewRawWriteToCmd(ctx, &r.buf, a...))
		for i := from; i < to; i++ {
			r.pttls[i].SetErr(nil) // set again by the pipeline; a failed batch's must not stay
			r.cmds = append(r.cmds, r.pttls[i])
		}
	}
	now := time.Now() // before the round trip: the deadline errs on the early side
	// The raw commands keep no reply error (the replies are in r.buf): an
	// error here is the connection's, or the context's.
	if r.rdb != s.rdb { // a session's own client, with Sentinel (useNode)
		r.pipe, r.rdb = s.rdb.Pipeline(), s.rdb
	}
	_ = r.pipe.BatchProcess(ctx, r.cmds...)
	_, err := r.pipe.Exec(ctx) // (Exec empties the pipeline, even on error)
	s.m.reads.Add(uint64(n))
	if err != nil {
		return nil, fmt.Errorf("redis %s: mget and pttl: %w", s.addr, err)
	}
	for _, c := range r.cmds {
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("redis %s: mget and pttl: %w", s.addr, err)
		}
	}
	if cap(r.out) < n {
		r.out = make([]keyState, n)
	}
	out := r.out[:n]
	clear(out)
	var again []int // indexes of keys to read again with GET
	sc := respScanner{b: r.buf.Bytes()}
	for from := 0; from < n; from += redisMGetBatch {
		to := min(n, from+redisMGetBatch)
		m, err := sc.arrayLen()
		if err != nil {
			return nil, fmt.Errorf("redis %s: mget: %w", s.addr, err)
		}
		if m != to-from {
			return nil, fmt.Errorf("redis %s: mget of %d keys gave %d values", s.addr, to-from, m)
		}
		r.vals = r.vals[:0]
		for range m {
			v, err := sc.bulk()
			if err != nil {
				return nil, fmt.Errorf("redis %s: mget: %w", s.addr, err)
			}
			r.vals = append(r.vals, v)
		}
		for i := from; i < to; i++ {
			key := keys[i]
			if user, realm, ok := aorOfKey(key); ok {
				out[i].aor = aorIn(key, user, realm)
			}
			ms, err := sc.integer()
			if err != nil && !isReplyError(err) {
				return nil, fmt.Errorf("redis %s: pttl: %w", s.addr, err)
			}
			val := r.vals[i-from]
			switch {
			case err != nil:
				return nil, fmt.Errorf("redis %s: pttl %s: %w", s.addr, key, err)
			case val.null && ms == -2:
				s.notMalformed(key) // absent
			case val.null:
				// Not a string, or written since the MGET.
				again = append(again, i)
			case ms == -1:
				// An SBC always writes with SETEX; a key that never lapses
				// would show a ghost registration forever.
				s.malformed(key, "the key has no TTL")
			case ms <= 0:
				s.notMalformed(key) // lapsed between MGET and PTTL
			default:
				reg, err := parseRecord(key, val.b)
				if err != nil {
					s.malformed(key, err.Error())
					continue
				}
				s.notMalformed(key)
				reg.Deadline = now.Add(time.Duration(ms) * time.Millisecond)
				out[i].reg = &reg
			}
		}
	}
	if len(sc.b) != 0 {
		return nil, fmt.Errorf("redis %s: mget and pttl: %w: %d bytes left over", s.addr, errRESP, len(sc.b))
	}
	if len(again) > 0 {
		ks := make([]string, len(again))
		for j, i := range again {
			ks[j] = keys[i]
		}
		st, err := s.readKeysByGet(ctx, ks)
		if err != nil {
			return nil, err
		}
		for j, i := range again {
			out[i] = st[j]
		}
	}
	return out, nil
}

// readKeysByGet reads keys with one pipeline of GET and PTTL each.
func (s *RedisSource) readKeysByGet(ctx context.Context, keys []string) ([]keyState, error) {
	gets := make([]*redis.StringCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	cmds := make([]redis.Cmder, 0, 2*len(keys))
	for i, k := range keys {
		gets[i] = redis.NewStringCmd(ctx, "get", k)
		ttls[i] = redis.NewDurationCmd(ctx, time.Millisecond, "pttl", k)
		cmds = append(cmds, gets[i], ttls[i])
	}
	now := time.Now() // before the round trip: the deadline errs on the early side
	// Each command's own error is looked at below; the pipeline's first
	// error could be a harmless redis.Nil hiding a broken connection.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		return p.BatchProcess(ctx, cmds...)
	})
	s.m.reads.Add(uint64(len(keys)))
	out := make([]keyState, len(keys))
	for i, key := range keys {
		if user, realm, ok := aorOfKey(key); ok {
			out[i].aor = aorIn(key, user, realm)
		}
		val, gerr := gets[i].Bytes()
		ttl, terr := ttls[i].Result()
		switch {
		case gerr != nil && !isReplyError(gerr):
			return nil, fmt.Errorf("redis %s: get: %w", s.addr, gerr)
		case terr != nil && !isReplyError(terr):
			return nil, fmt.Errorf("redis %s: pttl: %w", s.addr, terr)
		case errors.Is(gerr, redis.Nil):
			s.notMalformed(key)
		case gerr != nil && redis.HasErrorPrefix(gerr, "WRONGTYPE"): // (it allocates even for nil)
			s.malformed(key, "the key is not a string (a hash, list or set?)")
		case gerr != nil:
			return nil, fmt.Errorf("redis %s: get %s: %w", s.addr, key, gerr)
		case terr != nil:
			return nil, fmt.Errorf("redis %s: pttl %s: %w", s.addr, key, terr)
		case ttl == -1:
			s.malformed(key, "the key has no TTL")
		case ttl <= 0:
			s.notMalformed(key) // lapsed between GET and PTTL
		default:
			reg, err := parseRecord(key, val)
			if err != nil {
				s.malformed(key, err.Error())
				continue
			}
			s.notMalformed(key)
			reg.Deadline = now.Add(ttl)
			out[i].reg = &reg
		}
	}
	return out, nil
}
