package benchkit

import (
	"strings"
	"testing"
	"time"
)

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
		got, err := ParseProcStat([]byte(tt.line))
		if err != nil || got != tt.want {
			t.Errorf("%s: ParseProcStat = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := ParseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q): no error", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tpresencehub\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n"
	if got, err := ParseVmRSS([]byte(status)); err != nil || got != 20480<<10 {
		t.Errorf("parseVmRSS = %d, %v; want %d", got, err, 20480<<10)
	}
	if _, err := ParseVmRSS([]byte("Name:\tx\n")); err == nil {
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
		if got := Percentile(v, tt.p); got != tt.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := Percentile([]time.Duration(nil), 99); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

func TestSpreadFormat(t *testing.T) {
	tests := []struct {
		s    Spread
		want string
	}{
		{nil, "n/a"},
		{Spread{6543.2}, "6,543/s"},
		{Spread{6000, 7000, 6500}, "6,500/s (6,000/s–7,000/s)"},
		{Spread{1, 3}, "2/s (1/s–3/s)"},
	}
	for _, tt := range tests {
		if got := tt.s.Format(FmtRate); got != tt.want {
			t.Errorf("%v.format = %q, want %q", tt.s, got, tt.want)
		}
	}
	if got := FmtMs(0.4321); got != "0.43 ms" {
		t.Errorf("fmtMs(0.4321) = %q", got)
	}
	if got := FmtMs(1234); got != "1234 ms" {
		t.Errorf("fmtMs(1234) = %q", got)
	}
	if got := GroupThousands(-1234567); got != "-1,234,567" {
		t.Errorf("groupThousands = %q", got)
	}
}

func TestParseMetric(t *testing.T) {
	text := "# HELP presencehub_resyncs_total Full resyncs.\n# TYPE presencehub_resyncs_total counter\npresencehub_resyncs_total 3\npresencehub_resyncs_total_other 9\n"
	if v, err := ParseMetric(strings.NewReader(text), "presencehub_resyncs_total"); err != nil || v != 3 {
		t.Errorf("parseMetric = %v, %v; want 3", v, err)
	}
	if _, err := ParseMetric(strings.NewReader(text), "nope"); err == nil {
		t.Error("parseMetric of a missing metric: no error")
	}
}

func TestLongestPause(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	tests := []struct {
		name       string
		times      []time.Time
		from, to   int
		want       time.Duration
		start, end int
	}{
		{"longest inside", at(0, 10, 20, 500, 510), 0, 1000, 480 * time.Millisecond, 20, 500},
		{"a pause that began before the window", at(0, 900, 910), 100, 1000, 900 * time.Millisecond, 0, 900},
		{"after the window is ignored", at(0, 10, 5000), 0, 1000, 10 * time.Millisecond, 0, 10},
		{"nothing", nil, 0, 1000, 0, 0, 0},
		{"one time", at(50), 0, 1000, 0, 0, 0},
	}
	for _, tt := range tests {
		d, start, end := LongestPause(tt.times, t0.Add(time.Duration(tt.from)*time.Millisecond), t0.Add(time.Duration(tt.to)*time.Millisecond))
		if d != tt.want || (d > 0 && (!start.Equal(at(tt.start)[0]) || !end.Equal(at(tt.end)[0]))) {
			t.Errorf("%s: LongestPause = %v from %v to %v, want %v from %dms to %dms", tt.name, d, start.Sub(t0), end.Sub(t0), tt.want, tt.start, tt.end)
		}
	}
}
