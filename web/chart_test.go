package web

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
)

func TestBuildChart(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 30, 0, time.UTC)
	from := now.Add(-3*time.Minute - 30*time.Second) // 4 buckets: 11:57 … 12:00
	series := func(users []int, noData ...store.Interval) store.OnlineSeries {
		return store.OnlineSeries{From: from, Step: time.Minute, Now: now, Users: users, NoData: noData}
	}
	at := func(min int) time.Time { return from.Add(time.Duration(min) * time.Minute) }
	// x of the plot: 36 + f·556 over 3.5 minutes.
	tests := []struct {
		name   string
		s      store.OnlineSeries
		paths  []string
		gaps   []string // reason@x
		peak   int
		yTicks []string
		empty  bool
	}{
		{"steps", series([]int{1, 3, 2, 0}), []string{"M36.0 108.8H194.9V58.4H353.7V83.6H512.6V134.0H592.0"}, nil, 3, []string{"0", "5"}, false},
		{"nothing before history began", series([]int{0, 0, 4, 4}, store.Interval{From: from, To: at(2).Add(10 * time.Second), Reason: store.NoDataBefore}),
			[]string{"M353.7 33.2H512.6V33.2H592.0"}, []string{"before@36.0"}, 4, []string{"0", "5"}, false},
		{"a gap breaks the line", series([]int{2, 0, 0, 2}, store.Interval{From: at(1), To: at(2), Reason: store.NoDataGap}),
			[]string{"M36.0 8.0H194.9", "M353.7 134.0H512.6V8.0H592.0"}, []string{"gap@194.9"}, 2, []string{"0", "1", "2"}, false},
		{"no data at all", series([]int{0, 0, 0, 0}, store.Interval{From: from, To: now, Reason: store.NoDataBefore}),
			nil, []string{"before@36.0"}, 0, []string{"0", "1"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := BuildChart(acctA, ChartRanges[0], tc.s, true, 7)
			if !slices.Equal(c.Paths, tc.paths) {
				t.Errorf("paths = %q\nwant    %q", c.Paths, tc.paths)
			}
			var gaps []string
			for _, g := range c.Gaps {
				gaps = append(gaps, g.Reason+"@"+fmtSVG(g.X))
			}
			if !slices.Equal(gaps, tc.gaps) {
				t.Errorf("gaps = %v, want %v", gaps, tc.gaps)
			}
			var ys []string
			for _, y := range c.YTicks {
				ys = append(ys, y.Label)
			}
			if c.Peak != tc.peak || !slices.Equal(ys, tc.yTicks) || c.Empty != tc.empty {
				t.Errorf("peak %d, y ticks %v, empty %v; want %d, %v, %v", c.Peak, ys, c.Empty, tc.peak, tc.yTicks, tc.empty)
			}
		})
	}
}

func TestChartTicks(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 7, 0, 0, time.UTC) // a Tuesday
	for _, tc := range []struct {
		key  string
		want []string
	}{
		{"1h", []string{"11:10", "11:20", "11:30", "11:40", "11:50", "12:00"}},
		{"24h", []string{"15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"}},
		{"7d", []string{"Wed 04", "Thu 05", "Fri 06", "Sat 07", "Sun 08", "Mon 09", "Tue 10"}},
	} {
		r := chartRange(tc.key)
		from := now.Add(-r.Span).Truncate(r.Step).Add(r.Step)
		c := BuildChart(acctA, r, store.OnlineSeries{From: from, Step: r.Step, Now: now, Users: make([]int, int(r.Span/r.Step))}, true, 0)
		var got []string
		for _, tk := range c.XTicks {
			got = append(got, tk.Label)
			if tk.Pos < plotLeft || tk.Pos > plotRight {
				t.Errorf("%s: tick %s at x %.1f, outside the plot", tc.key, tk.Label, tk.Pos)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s ticks = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestNiceTop(t *testing.T) {
	for peak, want := range map[int]int{0: 1, 1: 1, 2: 2, 3: 5, 5: 5, 6: 10, 11: 20, 99: 100, 101: 200, 4000: 5000} {
		if got := niceTop(peak); got != want {
			t.Errorf("niceTop(%d) = %d, want %d", peak, got, want)
		}
	}
}

// TestAccountChart: the account page and the chart endpoint draw the chart
// from the registration history for the range asked for, with axes and
// no-data bands; another tenant's chart is refused.
func TestAccountChart(t *testing.T) {
	hist := &fakeHistory{series: func(from, now time.Time, step time.Duration) store.OnlineSeries {
		n := int((now.Sub(from) + step - 1) / step)
		users := make([]int, n)
		users[n-1] = 3
		return store.OnlineSeries{From: from, Now: now, Step: step, Users: users,
			NoData: []store.Interval{{From: from, To: now.Add(-step * 2), Reason: store.NoDataBefore}}}
	}}
	e := newEnv(t, func(o *Options) { o.History = hist })
	tok := e.session("acct-key")
	for _, tc := range []struct {
		target string
		step   time.Duration
		rng    string
	}{
		{"/accounts/" + acctA, time.Minute, "1h"},
		{"/accounts/" + acctA + "?range=24h", 15 * time.Minute, "24h"},
		{"/accounts/" + acctA + "?range=bogus", time.Minute, "1h"},
		{"/accounts/" + acctA + "/chart?range=7d", time.Hour, "7d"},
	} {
		hist.asked = nil
		w := e.do(http.MethodGet, tc.target, nil, tok)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d", tc.target, w.Code)
		}
		doc := parseHTML(t, w.Body.String())
		box := oneByTestID(t, doc, "chart-box")
		if attrVal(box, "data-range") != tc.rng || !slices.Equal(hist.asked, []time.Duration{tc.step}) {
			t.Errorf("%s: range %s, steps asked %v; want %s, [%v]", tc.target, attrVal(box, "data-range"), hist.asked, tc.rng, tc.step)
		}
		if len(byTestID(doc, "chart-x-tick")) < 3 || len(byTestID(doc, "chart-y-tick")) < 2 {
			t.Errorf("%s: %d time ticks, %d count ticks; want labelled axes", tc.target, len(byTestID(doc, "chart-x-tick")), len(byTestID(doc, "chart-y-tick")))
		}
		gaps := byTestID(doc, "chart-gap")
		if len(gaps) != 1 || attrVal(gaps[0], "data-reason") != store.NoDataBefore || !strings.Contains(textOf(gaps[0]), "no history yet") {
			t.Errorf("%s: no-data bands = %d, want one labelled 'no history yet'", tc.target, len(gaps))
		}
		if n := len(byTestID(doc, "chart-line")); n != 1 {
			t.Errorf("%s: %d line segments, want 1 (after history began)", tc.target, n)
		}
		if !strings.HasSuffix(tc.target, "7d") {
			continue
		}
		if strings.Contains(w.Body.String(), "<html") {
			t.Errorf("%s: the chart endpoint answered a whole page", tc.target)
		}
	}
	if w := e.do(http.MethodGet, "/accounts/"+acctB+"/chart", nil, tok); w.Code != http.StatusForbidden {
		t.Errorf("another tenant's chart: status %d, want 403", w.Code)
	}
	if w := e.do(http.MethodGet, "/accounts/"+acctA+"/chart", nil, ""); w.Code != http.StatusSeeOther {
		t.Errorf("chart without a session: status %d, want 303 to sign in", w.Code)
	}
}

// TestAccountChartWithoutHistory: with the history off the chart is the
// hub's last hour, with axes and no range selector.
func TestAccountChartWithoutHistory(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodGet, "/accounts/"+acctA, nil, e.session("acct-key"))
	doc := parseHTML(t, w.Body.String())
	if len(byTestID(doc, "chart-ranges")) != 0 || len(byTestID(doc, "filter-flapping")) != 0 {
		t.Errorf("range selector or flapping filter shown without the history")
	}
	if len(byTestID(doc, "chart-x-tick")) < 3 || len(byTestID(doc, "chart-line")) != 1 {
		t.Errorf("chart without history: %d ticks, %d lines", len(byTestID(doc, "chart-x-tick")), len(byTestID(doc, "chart-line")))
	}
}

// TestFlappingFilter: ?flapping=1 keeps the users the registration history
// counts as flapping (more than FlapSessions sessions or NAT changes in
// the last hour), matched to the table's names like the table merges them.
func TestFlappingFilter(t *testing.T) {
	hist := &fakeHistory{counts: map[string]store.SessionCounts{
		"alice": {Sessions24h: 9, Sessions1h: 7},                   // flapping: 7 > 6 sessions
		"bob":   {Sessions24h: 8, Sessions1h: 2, NATChanges1h: 7},  // flapping by NAT changes; the table has "Bob"
		"carol": {Sessions24h: 20, Sessions1h: 6, NATChanges1h: 6}, // at the limit: not flapping
	}}
	e := newEnv(t, func(o *Options) { o.History = hist })
	tok := e.session("acct-key")
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"alice", "Bob", "carol", "dave"}},
		{"?flapping=1", []string{"alice", "Bob"}},
		{"?flapping=1&status=online", []string{"alice"}},
	} {
		w := e.do(http.MethodGet, "/accounts/"+acctA+tc.query, nil, tok)
		doc := parseHTML(t, w.Body.String())
		var got, tagged []string
		for _, r := range byTestID(doc, "user-row") {
			got = append(got, attrVal(r, "data-user"))
			if len(byTestID(r, "flapping")) == 1 {
				tagged = append(tagged, attrVal(r, "data-user"))
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: rows %v, want %v", tc.query, got, tc.want)
		}
		for _, n := range tagged {
			if n != "alice" && n != "Bob" {
				t.Errorf("%q: %s tagged flapping", tc.query, n)
			}
		}
		if len(tagged) != min(2, len(tc.want)) && tc.query != "?flapping=1&status=online" {
			t.Errorf("%q: tagged %v, want alice and Bob", tc.query, tagged)
		}
		box := oneByTestID(t, doc, "filter-flapping")
		if _, checked := attr(box, "checked"); checked != strings.Contains(tc.query, "flapping=1") {
			t.Errorf("%q: checkbox checked = %v", tc.query, checked)
		}
	}
}
