//go:build browser

package web

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presencehub/presencehub/store"
)

// TestBrowserAccountChart: the account page's chart has labelled axes, a
// band without a line before the history began, switches range in place
// (the URL follows, no reload), and the flapping filter keeps only the
// users the history counts as flapping.
func TestBrowserAccountChart(t *testing.T) {
	hist := &fakeHistory{
		series: func(from, now time.Time, step time.Duration) store.OnlineSeries {
			n := int((now.Sub(from) + step - 1) / step)
			users := make([]int, n)
			for k := n / 2; k < n; k++ {
				users[k] = 2 + k%3
			}
			half := from.Add(time.Duration(n/2) * step)
			return store.OnlineSeries{From: from, Now: now, Step: step, Users: users,
				NoData: []store.Interval{{From: from, To: half, Reason: store.NoDataBefore}}}
		},
		counts: map[string]store.SessionCounts{"alice": {Sessions24h: 12, Sessions1h: 9}, "carol": {Sessions24h: 3, Sessions1h: 1}},
	}
	e := newEnv(t, func(o *Options) { o.Now = time.Now; o.History = hist })
	b := newBrowser(t, e)
	b.do(
		chromedp.Navigate(b.srv.URL+"/"),
		chromedp.WaitVisible(`input[name=api_key]`),
		chromedp.SendKeys(`input[name=api_key]`, "acct-key"),
		chromedp.Click(`[data-testid=signin-submit]`),
		chromedp.WaitVisible(`[data-testid=online-chart]`),
	)
	type chartState struct {
		Range   string   `json:"range"`
		Current string   `json:"current"`
		XTicks  []string `json:"xticks"`
		YTicks  []string `json:"yticks"`
		Lines   int      `json:"lines"`
		Gap     string   `json:"gap"`
		Zone    string   `json:"zone"`
		Search  string   `json:"search"`
		Marker  bool     `json:"marker"`
	}
	read := func() chartState {
		var s chartState
		b.eval(`(() => { const box = document.querySelector('[data-testid=chart-box]');
			return {range: box.dataset.range,
				current: box.querySelector('[data-testid=chart-range][aria-current=true]')?.dataset.range || '',
				xticks: [...box.querySelectorAll('[data-testid=chart-x-tick]')].map((e) => e.textContent),
				yticks: [...box.querySelectorAll('[data-testid=chart-y-tick]')].map((e) => e.textContent),
				lines: box.querySelectorAll('[data-testid=chart-line]').length,
				gap: box.querySelector('[data-testid=chart-gap] .chart-gap-label')?.textContent.trim() || '',
				zone: box.querySelector('[data-testid=chart-zone]').textContent,
				search: location.search,
				marker: window.__noReload === true}; })()`, &s)
		return s
	}
	// A reload would clear this marker: the range switch must not reload.
	b.eval(`window.__noReload = true`, nil)
	b.waitFor(`document.querySelector('[data-testid=chart-zone]').textContent.startsWith('your time zone')`)
	s := read()
	if s.Range != "1h" || s.Current != "1h" || len(s.XTicks) < 5 || len(s.YTicks) < 2 || s.Lines != 1 || s.Gap != "no history yet" {
		t.Errorf("1 hour chart = %+v; want range 1h, ≥5 time ticks, ≥2 count ticks, one line after a 'no history yet' band", s)
	}

	b.do(chromedp.Click(`[data-testid=chart-range][data-range="24h"]`))
	b.waitFor(`document.querySelector('[data-testid=chart-box]').dataset.range === '24h'`)
	b.waitFor(`document.querySelector('[data-testid=chart-zone]').textContent.startsWith('your time zone')`)
	s = read()
	if s.Current != "24h" || len(s.XTicks) < 5 || s.Lines != 1 || s.Search != "?range=24h" || !s.Marker {
		t.Errorf("after choosing 24 hours: %+v; want 24h current, ticks, one line, ?range=24h, no reload", s)
	}
	b.do(chromedp.Click(`[data-testid=chart-range][data-range="7d"]`))
	b.waitFor(`document.querySelector('[data-testid=chart-box]').dataset.range === '7d'`)
	if s = read(); s.Search != "?range=7d" || len(s.XTicks) < 5 || !s.Marker {
		t.Errorf("after choosing 7 days: %+v", s)
	}

	// Flapping filter: alice only, tagged.
	b.do(chromedp.Click(`[data-testid=filter-flapping]`))
	b.waitFor(`[...document.querySelectorAll('tr[data-testid=user-row]')].map((r) => r.dataset.user).join() === 'alice'`)
	var tagged bool
	b.eval(`!!document.querySelector('tr[data-user=alice] [data-testid=flapping]')`, &tagged)
	if !tagged {
		t.Errorf("alice has no flapping tag")
	}
	b.waitFor(`location.search.includes('flapping=1') && location.search.includes('range=7d')`)
	// Reload: the server applies the same filter and range.
	b.do(chromedp.Reload(), chromedp.WaitVisible(`[data-testid=online-chart]`))
	b.waitFor(`document.querySelector('[data-testid=chart-box]').dataset.range === '7d' && document.querySelector('[data-testid=filter-flapping]').checked`)
	b.waitFor(`[...document.querySelectorAll('tr[data-testid=user-row]')].map((r) => r.dataset.user).join() === 'alice'`)
}

// TestBrowserOverviewPaging: with more than a page of accounts the
// overview's second page shows the rest, subscribes to exactly those with
// a realm on its socket, and keeps their counts live.
func TestBrowserOverviewPaging(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Now = time.Now })
	e.dir.mu.Lock()
	for i := range 60 {
		sid := fmt.Sprintf("d0000000-0000-4000-8000-%012d", i)
		e.dir.accounts[sid] = store.Account{SID: sid, Name: fmt.Sprintf("Acct %02d", i), ServiceProviderSID: spA, SIPRealm: fmt.Sprintf("r%02d.example", i)}
	}
	e.dir.mu.Unlock()
	// Sorted by name: Acct 00 … Acct 59, Alpha, Beta, Gamma: page 2 holds
	// Acct 50 … Acct 59, Alpha, Beta and Gamma (no realm).
	want := []string{}
	for i := 50; i < 60; i++ {
		want = append(want, fmt.Sprintf("d0000000-0000-4000-8000-%012d", i))
	}
	want = append(want, acctA, acctB, acctC)
	b := newBrowser(t, e)
	b.do(
		chromedp.Navigate(b.srv.URL+"/"),
		chromedp.WaitVisible(`input[name=api_key]`),
		chromedp.SendKeys(`input[name=api_key]`, "admin-key"),
		chromedp.Click(`[data-testid=signin-submit]`),
		chromedp.WaitVisible(`[data-testid=overview-pager]`),
	)
	var n int
	b.eval(`document.querySelectorAll('tr[data-testid=account-row]').length`, &n)
	if n != OverviewPageSize {
		t.Errorf("page 1: %d rows, want %d", n, OverviewPageSize)
	}
	first := b.conn()
	b.do(chromedp.Click(`[data-testid=overview-pager] a[rel=next]`))
	b.waitFor(`location.search === '?page=2' && document.querySelectorAll('tr[data-testid=account-row]').length === 13`)
	var got []string
	b.eval(`[...document.querySelectorAll('tr[data-testid=account-row]')].map((r) => r.dataset.account)`, &got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("page 2 rows = %v\nwant %v", got, want)
	}
	_ = first.CloseNow()

	conn := b.conn()
	ids := map[string]any{}
	for len(ids) < 12 { // every row of the page with a realm
		f := readFrame(t, conn)
		if f["type"] == "subscribe" {
			ids[f["account_sid"].(string)] = f["id"]
		}
	}
	subscribed := make([]string, 0, len(ids))
	for sid := range ids {
		subscribed = append(subscribed, sid)
	}
	sort.Strings(subscribed)
	wantSubs := append([]string(nil), want[:12]...)
	sort.Strings(wantSubs)
	if fmt.Sprint(subscribed) != fmt.Sprint(wantSubs) {
		t.Errorf("page 2 subscribed to %v\nwant %v", subscribed, wantSubs)
	}
	last := want[9] // Acct 59
	ms := time.Now().UnixMilli()
	send(t, conn, `{"type":"snapshot","id":%q,"account_sid":%q,"epoch":"e1","seq":3,"users":[%s,%s,%s]}`, ids[last], last,
		streamUserJSON("u1", true, ms+600_000, ms), streamUserJSON("u2", true, ms+600_000, ms), streamUserJSON("u3", true, ms+600_000, ms))
	row := `document.querySelector('tr[data-testid=account-row][data-account="` + last + `"]')`
	b.waitFor(row + `.dataset.online === '3' && ` + row + `.querySelector('[data-testid=account-online]').textContent === '3'`)
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":4,"event":"expired","user":%s}`, ids[last], last, streamUserJSON("u2", false, 0, ms))
	b.waitFor(row + `.dataset.online === '2'`)
}
