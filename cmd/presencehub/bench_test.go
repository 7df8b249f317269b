package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// The benchmarks themselves are run by make bench, never by go test: their
// timings mean nothing on a shared, noisy machine. These tests cover the
// pure helpers the numbers depend on.

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		line string
		want time.Duration
	}{
		{"plain", "1234 (presencehub) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 12 0 100 0 0", 3 * time.Second},
		{"spaces and brackets in the name", "77 (a b) (c)) R 1 77 77 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0", 30 * time.Millisecond},
	}
	for _, tt := range tests {
		got, err := parseProcStat([]byte(tt.line))
		if err != nil || got != tt.want {
			t.Errorf("%s: parseProcStat = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q): no error", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tpresencehub\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n"
	if got, err := parseVmRSS([]byte(status)); err != nil || got != 20480<<10 {
		t.Errorf("parseVmRSS = %d, %v; want %d", got, err, 20480<<10)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		p    float64
		want float64
	}{{0, 1}, {10, 1}, {50, 5}, {51, 6}, {99, 10}, {100, 10}}
	for _, tt := range tests {
		if got := percentile(v, tt.p); got != tt.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile([]time.Duration(nil), 99); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

func TestSpreadFormat(t *testing.T) {
	tests := []struct {
		s    spread
		want string
	}{
		{nil, "n/a"},
		{spread{6543.2}, "6,543/s"},
		{spread{6000, 7000, 6500}, "6,500/s (6,000/s–7,000/s)"},
		{spread{1, 3}, "2/s (1/s–3/s)"},
	}
	for _, tt := range tests {
		if got := tt.s.format(fmtRate); got != tt.want {
			t.Errorf("%v.format = %q, want %q", tt.s, got, tt.want)
		}
	}
	if got := fmtMs(0.4321); got != "0.43 ms" {
		t.Errorf("fmtMs(0.4321) = %q", got)
	}
	if got := fmtMs(1234); got != "1234 ms" {
		t.Errorf("fmtMs(1234) = %q", got)
	}
	if got := groupThousands(-1234567); got != "-1,234,567" {
		t.Errorf("groupThousands = %q", got)
	}
}

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

func TestParseMetric(t *testing.T) {
	text := "# HELP presencehub_resyncs_total Full resyncs.\n# TYPE presencehub_resyncs_total counter\npresencehub_resyncs_total 3\npresencehub_resyncs_total_other 9\n"
	if v, err := parseMetric(strings.NewReader(text), "presencehub_resyncs_total"); err != nil || v != 3 {
		t.Errorf("parseMetric = %v, %v; want 3", v, err)
	}
	if _, err := parseMetric(strings.NewReader(text), "nope"); err == nil {
		t.Error("parseMetric of a missing metric: no error")
	}
}

func TestBenchLongForm(t *testing.T) {
	var stderr bytes.Buffer
	b, fs := newBench("x", "", func(string) string { return "" }, &stderr, &stderr)
	n := fs.Int("subscribers", 1000, "")
	d := fs.Duration("duration", 10*time.Second, "")
	if err := fs.parse([]string{"--long", "--duration", "5s"}); err != nil {
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
	if err := run(t.Context(), []string{"bench"}, env, &stdout, &stderr); err == nil {
		t.Error("bench without a name: no error")
	}
	if err := run(t.Context(), []string{"bench", "nope"}, env, &stdout, &stderr); err == nil {
		t.Error("unknown benchmark: no error")
	}
	if err := run(t.Context(), []string{"bench", "stream", "--clock", "wall"}, env, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "--clock") {
		t.Errorf("bench stream --clock wall: got %v, want an error naming --clock", err)
	}
	for _, name := range []string{"rest", "stream", "idle", "resync", "expiry", "floor"} {
		stderr.Reset()
		if err := run(t.Context(), []string{"bench", name, "--help"}, env, &stdout, &stderr); err != nil {
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
	stderr := &lockedBuffer{} // the reading process writes to it too
	args := []string{"bench", "floor", "--tsv", "--runs", "1", "--connections", "20", "--rates", "2000", "--duration", "300ms"}
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
		in      stringList
		want    []float64
		wantErr bool
	}{
		{nil, []float64{1000, 5000}, false},
		{stringList{"200", "2.5"}, []float64{200, 2.5}, false},
		{stringList{"0"}, nil, true},
		{stringList{"fast"}, nil, true},
	}
	for _, tt := range tests {
		got, err := parseRates(tt.in, 1000, 5000)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseRates(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
