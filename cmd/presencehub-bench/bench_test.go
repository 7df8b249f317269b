package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// The benchmarks themselves are run by make bench, never by go test: their
// timings mean nothing on a shared, noisy machine. These tests cover the
// pure helpers the numbers depend on.

func TestSubscriberCountsFrames(t *testing.T) {
	w := &streamWindow{}
	w.from.Store(1000)
	w.until.Store(2000)
	s := &wsSub{w: w, snap: make(chan struct{})}
	now := time.Unix(0, 3000)
	frames := []string{
		`{"type":"snapshot","id":"s","account_sid":"x","epoch":"e","seq":7,"users":[]}`,
		// before the window: not counted, but its seq is followed
		`{"type":"change","id":"s","account_sid":"x","seq":8,"event":"updated","user":{"name":"u","contact":"sip:u@h;transport=ws;ts=999"}}`,
		`{"type":"change","id":"s","account_sid":"x","seq":9,"event":"updated","user":{"name":"u","contact":"sip:u@h;transport=ws;ts=1500"}}`,
		// a gap (seq 10 missing)
		`{"type":"change","id":"s","account_sid":"x","seq":11,"event":"registered","user":{"name":"v","contact":"sip:v@h;ts=1999"}}`,
		// a jump the server marked as conflated is no gap
		`{"type":"change","id":"s","conflated":true,"account_sid":"x","seq":14,"event":"updated","user":{"name":"v","contact":"sip:v@h;ts=1000"}}`,
		// after the window, and a change without a write time
		`{"type":"change","id":"s","account_sid":"x","seq":15,"event":"updated","user":{"name":"v","contact":"sip:v@h;ts=2000"}}`,
		`{"type":"change","id":"s","account_sid":"x","seq":16,"event":"expired","user":{"name":"w","contact":null}}`,
		// a resync snapshot
		`{"type":"snapshot","id":"s","account_sid":"x","epoch":"e","seq":20,"resync":true,"users":[]}`,
		`{"type":"change","id":"s","account_sid":"x","seq":21,"event":"updated","user":{"name":"v","contact":"sip:v@h;ts=1200"}}`,
	}
	for _, f := range frames {
		s.handle([]byte(f), now)
	}
	select {
	case <-s.snap:
	default:
		t.Fatal("first snapshot not signalled")
	}
	if s.recv != 4 || s.gaps != 1 || s.resyncs != 1 {
		t.Fatalf("recv %d gaps %d resyncs %d; want 4, 1, 1", s.recv, s.gaps, s.resyncs)
	}
	want := []time.Duration{1500, 1001, 2000, 1800}
	for i, d := range s.lat {
		if d != want[i] {
			t.Errorf("latency %d = %v, want %v", i, d, want[i])
		}
	}
}

func TestNumberAfter(t *testing.T) {
	tests := []struct {
		f, marker string
		want      uint64
		ok        bool
	}{
		{`{"seq":123,"x":1}`, `"seq":`, 123, true},
		{`{"seq":x}`, `"seq":`, 0, false},
		{`{"a":1}`, `"seq":`, 0, false},
		{`sip:u@h;ts=1700000000123456789"`, `;ts=`, 1700000000123456789, true},
	}
	for _, tt := range tests {
		got, ok := numberAfter([]byte(tt.f), []byte(tt.marker))
		if got != tt.want || ok != tt.ok {
			t.Errorf("numberAfter(%q, %q) = %d, %v; want %d, %v", tt.f, tt.marker, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPubsubIDs(t *testing.T) {
	list := "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=presencehub age=4 idle=0 flags=P\n" +
		"id=4 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=9 name=presencehub age=500 idle=0 flags=P\n" +
		"id=5 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=10 name=other age=1 idle=0 flags=P\n"
	got := pubsubIDs(list, "presencehub", 10*time.Second)
	if strings.Join(got, ",") != "3" {
		t.Errorf("pubsubIDs = %v, want [3] (id 4 is an older server's, id 5 someone else's)", got)
	}
}

func TestBenchLongForm(t *testing.T) {
	var stderr bytes.Buffer
	b, fs := newBench("x", "", func(string) string { return "" }, &stderr, &stderr)
	n := fs.Int("subscribers", 1000, "")
	d := fs.Duration("duration", 10*time.Second, "")
	if err := fs.ParseArgs([]string{"--long", "--duration", "5s"}); err != nil {
		t.Fatal(err)
	}
	if err := setLong(fs, *b.long, map[string]string{"subscribers": "10000", "duration": "30s"}); err != nil {
		t.Fatal(err)
	}
	if *n != 10000 || *d != 5*time.Second {
		t.Errorf("--long gave subscribers %d duration %v; want 10000 and the given 5s", *n, *d)
	}
}

func TestBenchUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := func(string) string { return "" }
	if err := run(t.Context(), []string{}, env, &stdout, &stderr); err == nil {
		t.Error("no benchmark name: no error")
	}
	if err := run(t.Context(), []string{"nope"}, env, &stdout, &stderr); err == nil {
		t.Error("unknown benchmark: no error")
	}
	if err := run(t.Context(), []string{"stream", "--clock", "wall"}, env, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "--clock") {
		t.Errorf("bench stream --clock wall: got %v, want an error naming --clock", err)
	}
	for _, name := range []string{"rest", "stream", "idle", "resync", "expiry", "floor"} {
		stderr.Reset()
		if err := run(t.Context(), []string{name, "--help"}, env, &stdout, &stderr); err != nil {
			t.Errorf("bench %s --help: %v", name, err)
		}
		if !strings.Contains(stderr.String(), "-long") || !strings.Contains(stderr.String(), "Short form") {
			t.Errorf("bench %s --help does not explain the short and long forms:\n%s", name, stderr.String())
		}
	}
}

// TestBenchFloor runs a small bench floor end to end (its second process is
// this test binary again, see TestMain) and checks that every byte written
// arrived and that both processes' CPU was measured.
func TestBenchFloor(t *testing.T) {
	var stdout bytes.Buffer
	stderr := &benchkit.TailBuffer{Max: 1 << 20} // the reading process writes to it too
	args := []string{"floor", "--tsv", "--runs", "1", "--connections", "20", "--rates", "2000", "--duration", "300ms"}
	if err := run(t.Context(), args, func(string) string { return "" }, &stdout, stderr); err != nil {
		t.Fatalf("bench floor: %v\n%s", err, stderr.String())
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 5 {
			rows[f[1]] = f
		}
	}
	if r := rows["bytes read / written"]; r == nil || r[4] != "yes" {
		t.Errorf("bytes read / written: got row %q, want read = written (ok yes)\n%s", r, stdout.String())
	}
	for _, m := range []string{"2,000 msgs/s: writing process CPU", "2,000 msgs/s: reading process CPU"} {
		if r := rows[m]; r == nil || !strings.HasSuffix(r[2], " cores") {
			t.Errorf("%s: got row %q, want a CPU figure\n%s", m, r, stdout.String())
		}
	}
}

func TestParseRates(t *testing.T) {
	tests := []struct {
		in      cli.StringList
		want    []float64
		wantErr bool
	}{
		{nil, []float64{1000, 5000}, false},
		{cli.StringList{"200", "2.5"}, []float64{200, 2.5}, false},
		{cli.StringList{"0"}, nil, true},
		{cli.StringList{"fast"}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseRates(tt.in, 1000, 5000)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseRates(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSummarizeCommands(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	var logs []redis.SlowLog
	for i := range 200 {
		logs = append(logs, redis.SlowLog{ClientName: "presencehub", Args: []string{"mget", "user:a"}, Duration: ms(0.2)})
		if i%2 == 0 {
			logs = append(logs, redis.SlowLog{ClientName: "presencehub", Args: []string{"scan", "0"}, Duration: ms(0.1)})
		}
	}
	logs = append(logs,
		redis.SlowLog{ClientName: "presencehub", Args: []string{"pttl", "user:a"}, Duration: ms(30)}, // descheduled mid-command
		redis.SlowLog{ClientName: "bench", Args: []string{"flushdb"}, Duration: ms(90)},              // not the server's
	)
	st, err := summarizeCommands(logs)
	if err != nil {
		t.Fatal(err)
	}
	if got := commandName(st.worst.Args); got != "PTTL" || st.worst.Duration != ms(30) {
		t.Errorf("worst = %s %v, want PTTL 30ms (the bench's own FLUSHDB does not count)", got, st.worst.Duration)
	}
	if st.p99 != ms(0.2) {
		t.Errorf("p99 = %v, want 0.2ms: one slow command in 301 is above the 99th percentile", st.p99)
	}
	want := "MGET 200× 0.20 ms/0.20 ms, PTTL 1× 30.0 ms/30.0 ms, SCAN 100× 0.10 ms/0.10 ms"
	if st.byName != want {
		t.Errorf("byName = %q, want %q (the most total time first)", st.byName, want)
	}
	if _, err := summarizeCommands(logs[len(logs)-1:]); err == nil {
		t.Error("no command of the server: want an error, got none")
	}
}

func TestFloorWriterCores(t *testing.T) {
	tests := []struct {
		name, tsv string
		want      float64
		ok        bool
	}{
		{"bench floor's rows", "floor\t9,876 msgs/s: writing process CPU\t0.27 cores\t-\t-\nfloor\t9,876 msgs/s: reading process CPU\t0.24 cores\t-\t-\n", 0.27, true},
		{"no writer row", "floor\tbytes read / written\t1 / 1\tequal\tyes\n", 0, false},
		{"zero CPU is no measurement", "floor\t10 msgs/s: writing process CPU\t0.00 cores\t-\t-\n", 0, false},
	}
	for _, tc := range tests {
		got, err := floorWriterCores([]byte(tc.tsv))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v, ok=%v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestRESTReferenceAnswers(t *testing.T) {
	h := restReferenceHandler([]byte(`["a@r"]`), []byte(`{"name":"a"}`), []byte(`[{"name":"a"},{"name":"b"}]`))
	const path = "/v1/Accounts/0d4b6b43-8f3f-4ac2-9f3c-1b2a6c7d8e9f/RegisteredSipUsers"
	tests := []struct{ method, path, body, want string }{
		{"GET", path, "", `["a@r"]`},
		{"GET", path + "/alice", "", `{"name":"a"}`},
		{"POST", path, `["a","b"]`, `[{"name":"a"},{"name":"b"}]`},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if rec.Code != 200 || rec.Body.String() != tc.want {
			t.Errorf("%s %s: %d %q, want 200 %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.want)
		}
	}
}

func TestSummarizePlan(t *testing.T) {
	plan := `Limit  (cost=0.29..40.1 rows=101 width=100) (actual time=0.1..0.5 rows=101 loops=1)
  Buffers: shared hit=74 read=3
  ->  Merge Append  (cost=0.29..4000 rows=10000 width=100) (actual time=0.1..0.4 rows=101 loops=1)
        ->  Index Scan using registration_sessions_20261101_account_sid_user_name_started_idx on registration_sessions_20261101 s_1  (cost=0.29..8 rows=1 width=100)
        ->  Index Scan using registration_sessions_2026110_account_sid_user_name_starte_idx1 on registration_sessions_20261102 s_2  (cost=0.29..8 rows=1 width=100)
        ->  Seq Scan on registration_sessions_20261201 s_3  (cost=0.00..0.00 rows=1 width=26)
Planning Time: 1.0 ms
Execution Time: 0.612 ms`
	want := "Index Scan (account_sid, user_name, started_at DESC, id DESC) ×2, Seq Scan ×1; buffers hit=74 read=3; executed in 0.612 ms"
	if got := summarizePlan(plan); got != want {
		t.Errorf("summarizePlan =\n%s\nwant\n%s", got, want)
	}
}

// TestCloseMessage names why a subscriber's reader ended, as bench stream
// reports it next to the missing deliveries.
func TestCloseMessage(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: status %d %s", benchkit.ErrWSClosed, 1008, "client too slow"), "close 1008 client too slow"},
		{fmt.Errorf("%w: status %d %s", benchkit.ErrWSClosed, 4008, "output budget exceeded"), "close 4008 output budget exceeded"},
		{benchkit.ErrWSClosed, "close without a status"},
		{io.ErrUnexpectedEOF, "read error: unexpected EOF"},
	}
	for _, c := range cases {
		if got := closeMessage(c.err); got != c.want {
			t.Errorf("closeMessage(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestHostileFrameFitsReadLimit: the hostile subscribe frames must reach
// the server's subscribe code, i.e. fit its default read limit of 64 KiB
// (72 KB frames were refused with 1009 at the first one, which attacked
// nothing), and be the issue's ~63 KB of 8,000 names.
func TestHostileFrameFitsReadLimit(t *testing.T) {
	frame := hostileFrame(hostileSubscribes-1, "aa000000-0000-4000-8000-0000000000a1", hostileWatchlist())
	if n := len(frame); n > 64<<10 || n < 60_000 {
		t.Errorf("hostile frame is %d bytes, want 60,000–65,536", n)
	}
	var f struct{ Users []string }
	if err := json.Unmarshal([]byte(frame), &f); err != nil || len(f.Users) != hostileNames {
		t.Errorf("hostile frame has %d names (%v), want %d", len(f.Users), err, hostileNames)
	}
}
