package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// ChartRange is one range of the account page's chart.
type ChartRange struct {
	Key    string        // the ?range= value
	Label  string        // what the selector says
	Span   time.Duration // how far back
	Step   time.Duration // one bucket
	Tick   time.Duration // between labelled times
	Layout string        // time.Format layout of a tick label
}

// ChartRanges are the chart's ranges; the first is the default.
var ChartRanges = []ChartRange{
	{Key: "1h", Label: "1 hour", Span: time.Hour, Step: time.Minute, Tick: 10 * time.Minute, Layout: "15:04"},
	{Key: "24h", Label: "24 hours", Span: 24 * time.Hour, Step: 15 * time.Minute, Tick: 3 * time.Hour, Layout: "15:04"},
	{Key: "7d", Label: "7 days", Span: 7 * 24 * time.Hour, Step: time.Hour, Tick: 24 * time.Hour, Layout: "Mon 02"},
}

// chartRange returns the range called key, or the default.
func chartRange(key string) ChartRange {
	for _, r := range ChartRanges {
		if r.Key == key {
			return r
		}
	}
	return ChartRanges[0]
}

// Chart geometry (SVG units). The plot is the area inside the axes.
const (
	chartW      = 600
	chartH      = 160
	plotLeft    = 36
	plotRight   = 592
	plotTop     = 8
	plotBottom  = 134
	gapLabelMin = 70 // a no-data band narrower than this has only a tooltip
)

// Chart is the account page's chart of registered users over time, laid
// out for SVG: one step path per stretch with data, a shaded band per
// stretch without, and labelled axes.
type Chart struct {
	AccountSID  string
	Range       ChartRange
	FromHistory bool // from the registration history (else the hub's last hour)
	Paths       []string
	Gaps        []ChartGap
	XTicks      []ChartTick
	YTicks      []ChartTick
	Peak        int    // the largest bucket with data
	Now         int    // registered now (the live counter)
	Error       string // the history could not be read
	Empty       bool   // no bucket has data
}

// ChartGap is a band of the chart without data.
type ChartGap struct {
	X, W   float64
	Reason string // store.NoData*
	Label  string // shown when the band is wide enough
	Title  string
	Wide   bool
}

// ChartTick is one labelled value on an axis.
type ChartTick struct {
	Pos   float64 // x for time ticks, y for count ticks
	Label string
	MS    int64 // time ticks: epoch ms, for the browser's own time zone
}

var noDataLabels = map[string]string{
	store.NoDataBefore: "no history yet",
	store.NoDataDown:   "not recording",
	store.NoDataGap:    "history incomplete",
}

// BuildChart lays out s over [s.From, s.Now] for r. now is the live count.
func BuildChart(accountSID string, r ChartRange, s store.OnlineSeries, fromHistory bool, now int) Chart {
	c := Chart{AccountSID: accountSID, Range: r, FromHistory: fromHistory, Now: now, Empty: true}
	span := s.Now.Sub(s.From)
	if span <= 0 || s.Step <= 0 {
		return c
	}
	x := func(t time.Time) float64 {
		f := float64(t.Sub(s.From)) / float64(span)
		return plotLeft + min(max(f, 0), 1)*(plotRight-plotLeft)
	}
	for k, n := range s.Users {
		if s.Covered(k) {
			c.Peak = max(c.Peak, n)
		}
	}
	top := niceTop(c.Peak)
	y := func(n int) float64 { return plotBottom - float64(n)/float64(top)*(plotBottom-plotTop) }
	ticks := []int{0, top}
	if top%2 == 0 {
		ticks = []int{0, top / 2, top}
	}
	for _, v := range ticks {
		c.YTicks = append(c.YTicks, ChartTick{Pos: y(v), Label: strconv.Itoa(v)})
	}
	// A step line: each bucket is a horizontal run at its count; the path
	// breaks at every bucket without data.
	var b strings.Builder
	open := false
	for k, n := range s.Users {
		from := s.From.Add(time.Duration(k) * s.Step)
		to := from.Add(s.Step)
		if to.After(s.Now) {
			to = s.Now
		}
		if !s.Covered(k) {
			if open {
				c.Paths = append(c.Paths, b.String())
				b.Reset()
				open = false
			}
			continue
		}
		c.Empty = false
		if !open {
			fmt.Fprintf(&b, "M%s %s", fmtSVG(x(from)), fmtSVG(y(n)))
			open = true
		} else {
			fmt.Fprintf(&b, "V%s", fmtSVG(y(n)))
		}
		fmt.Fprintf(&b, "H%s", fmtSVG(x(to)))
	}
	if open {
		c.Paths = append(c.Paths, b.String())
	}
	for _, iv := range s.NoData {
		g := ChartGap{X: x(iv.From), Reason: iv.Reason, Label: noDataLabels[iv.Reason]}
		g.W = max(x(iv.To)-g.X, 1)
		g.Wide = g.W >= gapLabelMin
		g.Title = fmt.Sprintf("%s: %s – %s UTC", g.Label, iv.From.UTC().Format("2006-01-02 15:04"), iv.To.UTC().Format("2006-01-02 15:04"))
		c.Gaps = append(c.Gaps, g)
	}
	for t := s.From.Truncate(r.Tick).Add(r.Tick); t.Before(s.Now); t = t.Add(r.Tick) {
		c.XTicks = append(c.XTicks, ChartTick{Pos: x(t), Label: t.UTC().Format(r.Layout), MS: t.UnixMilli()})
	}
	return c
}

// niceTop is the top of the count axis: at least 1, and the next of 1, 2,
// 5 × a power of ten at or above peak (even above 1, so the midpoint is a
// whole number).
func niceTop(peak int) int {
	if peak <= 1 {
		return 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{2, 5, 10} {
			if m*p >= peak {
				return m * p
			}
		}
	}
}

// hubSeries turns the hub's last hour (the online count at the end of each
// minute, oldest first) into a series of one-minute buckets ending now.
// The hub keeps no record of when it began counting, so no band marks time
// before it started: the registration history does that.
func hubSeries(series []int, now time.Time) store.OnlineSeries {
	from := now.Truncate(time.Minute).Add(-time.Duration(len(series)-1) * time.Minute)
	return store.OnlineSeries{From: from, Step: time.Minute, Now: now, Users: series}
}

// buildAccountChart reads the chart of account a for range key: from the
// registration history when it is on, else the hub's last hour.
func (s *server) buildAccountChart(r *http.Request, a store.Account, key string, st hub.Stats, now time.Time) Chart {
	rng := chartRange(key)
	if s.hist == nil {
		return BuildChart(a.SID, ChartRanges[0], hubSeries(st.Series, now), false, st.Online)
	}
	from := now.Add(-rng.Span).Truncate(rng.Step).Add(rng.Step)
	series, err := s.hist.OnlineSeries(r.Context(), a.SID, from, now, rng.Step)
	if err != nil {
		s.log.Error("account chart: registration history", "account", a.SID, "err", err)
		c := BuildChart(a.SID, rng, store.OnlineSeries{}, true, st.Online)
		c.Error = "The registration history could not be read."
		return c
	}
	return BuildChart(a.SID, rng, series, true, st.Online)
}

// handleChart answers the chart alone (GET /accounts/{sid}/chart?range=),
// for dashboard.js to switch ranges and refresh it without a reload.
func (s *server) handleChart() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.loadAccount(w, r)
		if !ok {
			return
		}
		st := hub.Stats{Series: make([]int, 60)}
		if a.SIPRealm != "" {
			st = s.pres.Stats(a.SIPRealm)
		}
		s.render(w, r, http.StatusOK, accountChart(s.buildAccountChart(r, a, r.URL.Query().Get("range"), st, s.now())))
	}
}

func chartURL(accountSID, key string) string {
	return "/accounts/" + accountSID + "/chart?range=" + key
}

func chartPageURL(accountSID, key string) string {
	if key == ChartRanges[0].Key {
		return accountURL(accountSID)
	}
	return accountURL(accountSID) + "?range=" + key
}

func stepLabel(r ChartRange) string {
	switch r.Step {
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return strconv.Itoa(int(r.Step/time.Minute)) + " minutes"
}

func flapTitle(n int) string {
	return "Users with more than " + strconv.Itoa(n) + " sessions, or NAT binding changes, in the last hour"
}
