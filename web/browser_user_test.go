//go:build browser

package web

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presencehub/presencehub/store"
)

// TestBrowserUserPage: a user who appears live gets a history link in the
// table and in the feed, and the link opens the user page with the
// session timeline, with no CSP violation.
func TestBrowserUserPage(t *testing.T) {
	now := time.Now()
	hist := &fakeHistory{
		sessions: map[string][]store.Session{"erin": {
			{Name: "erin", Protocol: "udp", Proxy: "sip:192.0.2.4:5060", Started: now.Add(-time.Minute)},
			{Name: "erin", Protocol: "udp", Proxy: "sip:192.0.2.4:4000", Started: now.Add(-2 * time.Hour), Ended: now.Add(-time.Hour), EndReason: store.EndExpired},
		}},
		summary: map[string]store.UserHistory{"erin": {LastSeen: now, Open: true, Sessions24h: 2, Sessions1h: 9}},
	}
	e := newEnv(t, func(o *Options) { o.Now = time.Now; o.History = hist })
	b := newBrowser(t, e)
	b.do(
		chromedp.Navigate(b.srv.URL+"/"),
		chromedp.WaitVisible(`input[name=api_key]`),
		chromedp.SendKeys(`input[name=api_key]`, "acct-key"),
		chromedp.Click(`[data-testid=signin-submit]`),
		chromedp.WaitVisible(`[data-testid=users-table]`),
	)
	conn := b.conn()
	id := readFrame(t, conn)["id"]
	send(t, conn, `{"type":"resumed","id":%q,"account_sid":%q,"epoch":"e1","seq":17}`, id, acctA)
	ms := time.Now().UnixMilli()
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":18,"event":"registered","user":%s}`, id, acctA, streamUserJSON("erin", true, ms+600_000, ms))
	want := "/accounts/" + acctA + "/users/erin"
	b.waitFor(`document.querySelector('tr[data-user=erin] [data-testid=user-link]')?.getAttribute('href') === '` + want + `'`)
	b.waitFor(`document.querySelector('[data-testid=feed-item][data-user=erin] [data-testid=feed-user-link]')?.getAttribute('href') === '` + want + `'`)

	b.do(chromedp.Click(`[data-testid=feed-item][data-user=erin] [data-testid=feed-user-link]`), chromedp.WaitVisible(`[data-testid=user-name]`))
	var got struct {
		Name     string `json:"name"`
		Flapping bool   `json:"flapping"`
		Day      int    `json:"day"`
		Week     int    `json:"week"`
		Rows     int    `json:"rows"`
	}
	b.eval(`({name: document.querySelector('[data-testid=user-name]').textContent,
		flapping: !!document.querySelector('[data-testid=user-flapping]'),
		day: document.querySelectorAll('[data-testid=timeline-day] [data-testid=timeline-bar]').length,
		week: document.querySelectorAll('[data-testid=timeline-week] [data-testid=timeline-bar]').length,
		rows: document.querySelectorAll('[data-testid=session-row]').length})`, &got)
	if got.Name != "erin" || !got.Flapping || got.Day != 2 || got.Week != 2 || got.Rows != 2 {
		t.Errorf("user page = %+v; want erin, flapping, 2 bars on each timeline, 2 session rows", got)
	}
}

// TestBrowserLiveOverview: the overview follows every visible account on one
// socket; a row's online count (and data-online) changes without a reload.
func TestBrowserLiveOverview(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Now = time.Now })
	b := newBrowser(t, e)
	b.do(
		chromedp.Navigate(b.srv.URL+"/"),
		chromedp.WaitVisible(`input[name=api_key]`),
		chromedp.SendKeys(`input[name=api_key]`, "admin-key"),
		chromedp.Click(`[data-testid=signin-submit]`),
		chromedp.WaitVisible(`[data-testid=accounts-table]`),
	)
	row := `document.querySelector('tr[data-testid=account-row][data-account="` + acctA + `"]')`
	conn := b.conn()
	var id any
	for id == nil {
		f := readFrame(t, conn)
		if f["type"] == "subscribe" && f["account_sid"] == acctA {
			id = f["id"]
		}
	}
	ms := time.Now().UnixMilli()
	send(t, conn, `{"type":"snapshot","id":%q,"account_sid":%q,"epoch":"e9","seq":5,"users":[%s,%s]}`, id, acctA,
		streamUserJSON("ann", true, ms+600_000, ms), streamUserJSON("ben", true, ms+30_000, ms))
	b.waitFor(row + `.dataset.online === '2' && ` + row + `.querySelector('[data-testid=account-online]').textContent === '2'`)
	b.waitFor(row + `.querySelector('[data-testid=account-expiring]').textContent === '1'`)
	b.waitFor(`document.querySelector('[data-testid=connection-state]').dataset.state === 'live'`)
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":6,"event":"unregistered","user":%s}`, id, acctA, streamUserJSON("ann", false, 0, ms))
	b.waitFor(row + `.dataset.online === '1'`)
	var changes string
	b.eval(row+`.querySelector('[data-testid=account-changes]').textContent`, &changes)
	if changes == "0" {
		t.Errorf("changes in the last minute still 0 after a change")
	}
}
