package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store/storetest"
)

func TestRespScanner(t *testing.T) {
	type op int
	const (
		bulk op = iota
		integer
		array
	)
	cases := []struct {
		name     string
		raw      string
		op       op
		want     string // bulk: the value, "<nil>" for a nil
		wantInt  int64
		wantErr  string // "" for none; "reply:" prefix for a redis.Error
		leftOver string
	}{
		{name: "bulk", raw: "$5\r\nhello\r\n:1\r\n", op: bulk, want: "hello", leftOver: ":1\r\n"},
		{name: "bulk holding CRLF", raw: "$4\r\na\r\nb\r\n", op: bulk, want: "a\r\nb"},
		{name: "empty bulk", raw: "$0\r\n\r\n", op: bulk, want: ""},
		{name: "RESP2 nil", raw: "$-1\r\n", op: bulk, want: "<nil>"},
		{name: "RESP3 nil", raw: "_\r\n", op: bulk, want: "<nil>"},
		{name: "error for a bulk", raw: "-WRONGTYPE Operation against a key\r\n", op: bulk, wantErr: "reply:WRONGTYPE Operation against a key"},
		{name: "RESP3 blob error", raw: "!9\r\nERR b\r\nad\r\n", op: bulk, wantErr: "reply:ERR b\r\nad"},
		{name: "bulk cut short", raw: "$5\r\nhel", op: bulk, wantErr: "unexpected"},
		{name: "bulk without its CRLF", raw: "$2\r\nhello\r\n", op: bulk, wantErr: "unexpected"},
		{name: "bulk of a negative length", raw: "$-2\r\n", op: bulk, wantErr: "unexpected"},
		{name: "bulk of no length", raw: "$\r\n", op: bulk, wantErr: "unexpected"},
		{name: "integer for a bulk", raw: ":1\r\n", op: bulk, wantErr: "unexpected"},
		{name: "no line", raw: "$5", op: bulk, wantErr: "unexpected"},
		{name: "empty", raw: "", op: bulk, wantErr: "unexpected"},
		{name: "integer", raw: ":3599123\r\n", op: integer, wantInt: 3599123},
		{name: "negative integer", raw: ":-2\r\n", op: integer, wantInt: -2},
		{name: "integer not a number", raw: ":12a\r\n", op: integer, wantErr: "unexpected"},
		{name: "integer too long", raw: ":1234567890123456789\r\n", op: integer, wantErr: "unexpected"},
		{name: "error for an integer", raw: "-NOPERM no\r\n", op: integer, wantErr: "reply:NOPERM no"},
		{name: "bulk for an integer", raw: "$1\r\n1\r\n", op: integer, wantErr: "unexpected"},
		{name: "array", raw: "*2\r\n$1\r\na\r\n_\r\n", op: array, wantInt: 2, leftOver: "$1\r\na\r\n_\r\n"},
		{name: "empty array", raw: "*0\r\n", op: array, wantInt: 0},
		{name: "nil array", raw: "*-1\r\n", op: array, wantErr: "unexpected"},
		{name: "array longer than the replies", raw: "*9\r\n_\r\n", op: array, wantErr: "unexpected"},
		{name: "error for an array", raw: "-LOADING later\r\n", op: array, wantErr: "reply:LOADING later"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := respScanner{b: []byte(c.raw)}
			var got string
			var gotInt int64
			var err error
			switch c.op {
			case bulk:
				var v respValue
				v, err = sc.bulk()
				got = string(v.b)
				if v.null {
					got = "<nil>"
				}
			case integer:
				gotInt, err = sc.integer()
			case array:
				var n int
				n, err = sc.arrayLen()
				gotInt = int64(n)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("reading %q: error %v, want none", c.raw, err)
			case strings.HasPrefix(c.wantErr, "reply:"):
				if !isReplyError(err) || err.Error() != strings.TrimPrefix(c.wantErr, "reply:") {
					t.Fatalf("reading %q: error %v (a redis.Error: %v), want the reply error %q", c.raw, err, isReplyError(err), strings.TrimPrefix(c.wantErr, "reply:"))
				}
				return
			case c.wantErr != "":
				if !errors.Is(err, errRESP) || isReplyError(err) {
					t.Fatalf("reading %q: error %v, want one wrapping errRESP", c.raw, err)
				}
				return
			}
			if got != c.want || gotInt != c.wantInt {
				t.Errorf("reading %q: got %q / %d, want %q / %d", c.raw, got, gotInt, c.want, c.wantInt)
			}
			if string(sc.b) != c.leftOver {
				t.Errorf("reading %q left %q, want %q", c.raw, sc.b, c.leftOver)
			}
		})
	}
}

func TestRespInt(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"-1", -1, true}, {"999999999999999999", 999999999999999999, true},
		{"", 0, false}, {"-", 0, false}, {"+1", 0, false}, {"1 ", 0, false}, {"1e3", 0, false},
		{"1000000000000000000", 0, false},
	} {
		got, ok := respInt([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("respInt(%q) = %d, %v, want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestReadKeysAgreesWithGET reads keys of every kind (valid, absent,
// without TTL, not a string, malformed, not an AOR) with readKeys (MGET,
// PTTL, raw replies, commands reused from batch to batch) and with
// readKeysByGet (GET and PTTL, go-redis's own replies), in batches of
// several sizes, one after the other, over RESP2 and RESP3: both must give
// the same states and count the same malformed keys.
func TestReadKeysAgreesWithGET(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	var keys []string
	add := func(key string, write func(key string) error) {
		t.Helper()
		if err := write(key); err != nil {
			t.Fatalf("write %s: %v", key, err)
		}
		keys = append(keys, key)
	}
	str := func(value string, ttl time.Duration) func(string) error {
		return func(key string) error { return rdb.Set(ctx, key, value, ttl).Err() }
	}
	// More than two MGETs' worth, the kinds interleaved so that every
	// MGET holds some of each.
	for i := range 2*redisMGetBatch + 37 {
		switch i % 8 {
		case 0, 1, 2:
			add(fmt.Sprintf("user:u%d@Example.COM", i), str(string(SBCValue(SBCRecord{
				Contact: fmt.Sprintf("sip:u%d@10.0.0.%d:5060", i, i%250), Proxy: "sip:203.0.113.1",
				SBCAddress: "192.0.2.10:8443", Protocol: "udp", AllowDirectApp: i%2 == 0,
			}, time.Now().Add(time.Hour).UnixMilli())), time.Duration(1+i)*time.Minute))
		case 3:
			keys = append(keys, fmt.Sprintf("user:absent%d@example.com", i))
		case 4:
			add(fmt.Sprintf("user:nottl%d@example.com", i), str(`{"contact":"sip:a"}`, 0))
		case 5:
			add(fmt.Sprintf("user:hash%d@example.com", i), func(key string) error {
				if err := rdb.HSet(ctx, key, "contact", "sip:a").Err(); err != nil {
					return err
				}
				return rdb.Expire(ctx, key, time.Hour).Err()
			})
		case 6:
			add(fmt.Sprintf("user:bad%d@example.com", i), str(`{"contact":`, time.Hour))
		case 7:
			add(fmt.Sprintf("user:noat%d", i), str(`{"contact":"sip:a"}`, time.Hour))
		}
	}

	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			src, err := NewRedisSource(RedisOptions{URL: srv.URL + fmt.Sprintf("?protocol=%d", proto)})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			// Growing, shrinking and growing again: the reused commands
			// must read the keys of the batch at hand.
			from := 0
			for _, size := range []int{1, 3, len(keys) - 10, 2, redisMGetBatch, 7} {
				batch := make([]string, size)
				for i := range batch {
					batch[i] = keys[(from+i)%len(keys)]
				}
				from += size

				m0 := src.Metrics().Malformed
				start := time.Now()
				got, err := src.readKeys(ctx, batch)
				if err != nil {
					t.Fatalf("readKeys of %d keys: %v", size, err)
				}
				got = append([]keyState(nil), got...) // valid until the next read
				m1 := src.Metrics().Malformed
				want, err := src.readKeysByGet(ctx, batch)
				if err != nil {
					t.Fatalf("readKeysByGet of %d keys: %v", size, err)
				}
				m2 := src.Metrics().Malformed
				if m1-m0 != m2-m1 {
					t.Errorf("batch of %d: readKeys counted %d malformed keys, readKeysByGet %d", size, m1-m0, m2-m1)
				}
				if len(got) != len(want) {
					t.Fatalf("batch of %d: readKeys gave %d states, readKeysByGet %d", size, len(got), len(want))
				}
				valid := 0
				for i := range got {
					g, w := got[i], want[i]
					if g.aor != w.aor || (g.reg == nil) != (w.reg == nil) {
						t.Errorf("%s: readKeys gave %q %v, readKeysByGet %q %v", batch[i], g.aor, g.reg != nil, w.aor, w.reg != nil)
						continue
					}
					if g.reg == nil {
						continue
					}
					valid++
					// The deadline is the PTTL read on this clock, after start.
					ttl, _ := rdb.PTTL(ctx, batch[i]).Result()
					if !g.reg.Deadline.After(start) || g.reg.Deadline.After(time.Now().Add(ttl+time.Second)) {
						t.Errorf("%s: deadline %v, want after %v and about %v from now", batch[i], g.reg.Deadline, start, ttl)
					}
					gr, wr := *g.reg, *w.reg
					gr.Deadline, wr.Deadline = time.Time{}, time.Time{}
					if gr != wr {
						t.Errorf("%s: readKeys gave %+v, readKeysByGet %+v", batch[i], gr, wr)
					}
				}
				if size > 8 && valid == 0 {
					t.Errorf("batch of %d: no valid registration read: the test reads nothing", size)
				}
			}
		})
	}
}

// TestReadKeysErrors: a reply error for the whole MGET (here, the ACL
// refuses it) and a broken connection are errors of the read, as for GET.
func TestReadKeysErrors(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.Do(ctx, "ACL", "SETUSER", "nomget", "on", ">pw", "~*", "+@all", "-mget").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "user:a@example.com", `{"contact":"sip:a"}`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	src, err := NewRedisSource(RedisOptions{URL: srv.URL, Username: "nomget", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = src.readKeys(ctx, []string{"user:a@example.com"})
	if !redis.HasErrorPrefix(err, "NOPERM") {
		t.Errorf("MGET refused: readKeys error %v, want the NOPERM reply", err)
	}

	ok, err := NewRedisSource(RedisOptions{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	if _, err := ok.readKeys(ctx, []string{"user:a@example.com"}); err != nil {
		t.Fatalf("readKeys: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ok.readKeys(cctx, []string{"user:a@example.com"}); !errors.Is(err, context.Canceled) {
		t.Errorf("readKeys with a canceled context: error %v, want context.Canceled", err)
	}
	st, err := ok.readKeys(ctx, []string{"user:a@example.com"})
	if err != nil || len(st) != 1 || st[0].reg == nil {
		t.Errorf("readKeys after a failed read: %v, %v, want the registration (the failed batch left nothing behind)", st, err)
	}
}

// TestPendingKeysTake: keys come out oldest first, once each however often
// they were notified, up to the limit; a key notified again after it was
// taken comes out again; the slice handed out is reused but keeps no key of
// an earlier, longer batch beyond its length.
func TestPendingKeysTake(t *testing.T) {
	p := newPendingKeys()
	for _, k := range []string{"a", "b", "a", "c", "b", "d"} {
		p.add(k)
	}
	steps := []struct {
		add   []string
		limit int
		want  string
	}{
		{limit: 3, want: "a b c"},
		{add: []string{"a"}, limit: 10, want: "d a"},
		{limit: 10, want: ""},
		{add: []string{"e", "f", "g"}, limit: 1, want: "e"},
		{limit: 5, want: "f g"},
	}
	for i, st := range steps {
		for _, k := range st.add {
			p.add(k)
		}
		got := p.take(st.limit)
		if s := strings.Join(got, " "); s != st.want {
			t.Fatalf("step %d: take(%d) = %q, want %q", i, st.limit, s, st.want)
		}
		if tail := got[len(got):cap(got)]; len(got) > 0 && strings.Join(tail, "") != "" {
			t.Errorf("step %d: the slice still holds %q past its length", i, tail)
		}
	}
}
