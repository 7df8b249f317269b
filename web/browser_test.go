//go:build browser

// Browser tests of static/dashboard.js and static/presence.js against a fake
// /v1/stream that speaks the stream protocol, so the client's resume, gap,
// conflation, countdown and paging logic is checked in a real browser
// without Redis or Postgres. Run with: go test -tags browser ./web/
// (needs Chrome or Chromium on PATH).
package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// fakeStream accepts websocket connections authenticated by the session
// cookie and hands them to the test.
type fakeStream struct {
	dir   *fakeDB
	conns chan *websocket.Conn
}

func (f *fakeStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(store.SessionCookie)
	if err != nil {
		http.Error(w, "no session", http.StatusUnauthorized)
		return
	}
	if _, err := f.dir.Session(r.Context(), c.Value); err != nil {
		http.Error(w, "bad session", http.StatusUnauthorized)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	f.conns <- conn
	<-r.Context().Done()
}

type browser struct {
	t       *testing.T
	ctx     context.Context
	srv     *httptest.Server
	stream  *fakeStream
	mu      sync.Mutex
	console []string
}

func newBrowser(t *testing.T, e *env) *browser {
	t.Helper()
	b := &browser{t: t, stream: &fakeStream{dir: e.dir, conns: make(chan *websocket.Conn, 4)}}
	mux := http.NewServeMux()
	mux.Handle("/v1/stream", b.stream)
	mux.Handle("/", e.h)
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.NoSandbox)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	b.ctx = ctx
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, string(m.Type)+": "+m.String())
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.console {
			if strings.Contains(c, "Content Security Policy") || strings.HasPrefix(c, "exception") || strings.HasPrefix(c, "error") {
				t.Errorf("browser console: %s", c)
			}
		}
	})
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) eval(js string, out any) {
	b.t.Helper()
	raw, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.t.Fatalf("eval %s: %v (%s)", js, err, raw)
		}
	}
}

// waitFor polls a boolean JS expression.
func (b *browser) waitFor(js string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var ok bool
		b.eval("!!("+js+")", &ok)
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var html string
	b.eval(`document.querySelector('#users-body')?.outerHTML + document.querySelector('#conn-state')?.outerHTML`, &html)
	b.t.Fatalf("timeout waiting for %s\n%s", js, html)
}

func (b *browser) conn() *websocket.Conn {
	b.t.Helper()
	select {
	case c := <-b.stream.conns:
		return c
	case <-time.After(10 * time.Second):
		b.t.Fatal("the page did not open the stream")
		return nil
	}
}

func readFrame(t *testing.T, conn *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, raw, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func send(t *testing.T, conn *websocket.Conn, format string, args ...any) {
	t.Helper()
	if err := conn.Write(context.Background(), websocket.MessageText, fmt.Appendf(nil, format, args...)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// streamUser encodes U: active with expiry (epoch ms), or inactive.
func streamUserJSON(name string, active bool, expiry, eventTime int64) string {
	if !active {
		return fmt.Sprintf(`{"name":%q,"contact":null,"expiryTime":0,"protocol":null,"allow_direct_app_calling":1,"allow_direct_queue_calling":1,"allow_direct_user_calling":1,"registered_status":"inactive","proxy":null,"event_time":%d}`, name, eventTime)
	}
	return fmt.Sprintf(`{"name":%q,"contact":"sip:%s@10.1.1.1","expiryTime":%d,"protocol":"udp","allow_direct_app_calling":1,"allow_direct_queue_calling":0,"allow_direct_user_calling":1,"registered_status":"active","proxy":"sip:192.0.2.4:5060","event_time":%d}`, name, name, expiry, eventTime)
}

func TestBrowserLiveAccountPage(t *testing.T) {
	now := time.Now()
	e := newEnv(t, func(o *Options) { o.Now = time.Now })
	e.pres.users["a.example"] = []hub.UserView{
		{Name: "alice", Contact: "sip:alice@x", Protocol: "udp", ExpiryTime: now.Add(time.Hour).UnixMilli(), Since: now, EventTime: now, LastEvent: "registered"},
	}
	b := newBrowser(t, e)

	// Sign in through the form; an account key lands on its account.
	b.do(
		chromedp.Navigate(b.srv.URL+"/"),
		chromedp.WaitVisible(`input[name=api_key]`),
		chromedp.SendKeys(`input[name=api_key]`, "acct-key"),
		chromedp.Click(`[data-testid=signin-submit]`),
		chromedp.WaitVisible(`[data-testid=users-table]`),
	)
	var cookies string
	b.eval(`document.cookie`, &cookies)
	if cookies != "" {
		t.Errorf("cookies visible to scripts: %q", cookies)
	}

	// The page resumes from the snapshot it was rendered from.
	conn := b.conn()
	sub := readFrame(t, conn)
	since, _ := sub["since"].(map[string]any)
	if sub["type"] != "subscribe" || sub["account_sid"] != acctA || since["epoch"] != "e1" || since["seq"] != float64(17) {
		t.Fatalf("subscribe = %v", sub)
	}
	id := sub["id"]
	send(t, conn, `{"type":"resumed","id":%q,"account_sid":%q,"epoch":"e1","seq":17}`, id, acctA)
	b.waitFor(`document.querySelector('[data-testid=connection-state]').dataset.state === 'live'`)
	b.waitFor(`document.querySelector('tr[data-user=alice]')?.dataset.status === 'online'`)

	// A short registration: expiring at once, offline by the countdown,
	// then gone on the server's expired event (it has no client row).
	ms := time.Now().UnixMilli()
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":18,"event":"registered","user":%s}`, id, acctA, streamUserJSON("flash", true, ms+3000, ms))
	b.waitFor(`document.querySelector('tr[data-user=flash]')?.dataset.status === 'expiring'`)
	b.waitFor(`document.querySelector('tr[data-user=flash]')?.dataset.status === 'offline'`)
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":19,"event":"expired","user":%s}`, id, acctA, streamUserJSON("flash", false, 0, ms))
	b.waitFor(`!document.querySelector('tr[data-user=flash]')`)
	b.waitFor(`document.querySelector('[data-testid=feed-item]').dataset.seq === '19'`)

	// A client that unregisters stays, offline; counters follow.
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":20,"event":"unregistered","user":%s}`, id, acctA, streamUserJSON("alice", false, 0, ms))
	b.waitFor(`document.querySelector('tr[data-user=alice]')?.dataset.status === 'offline'`)
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":21,"event":"registered","user":%s}`, id, acctA, streamUserJSON("erin", true, ms+600_000, ms))
	b.waitFor(`document.querySelector('tr[data-user=erin]')?.dataset.status === 'online'`)
	var counts string
	b.eval(`['online','expiring','offline','total'].map(k => document.querySelector('[data-testid=count-'+k+']').textContent).join(',')`, &counts)
	if counts != "1,0,3,4" { // erin; alice, Bob, carol offline
		t.Errorf("counters = %s", counts)
	}

	// A gap: resubscribe from the last applied seq.
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":25,"event":"registered","user":%s}`, id, acctA, streamUserJSON("zed", true, ms+600_000, ms))
	if f := readFrame(t, conn); f["type"] != "unsubscribe" || f["id"] != id {
		t.Fatalf("after a gap: %v", f)
	}
	sub = readFrame(t, conn)
	if s := sub["since"].(map[string]any); sub["type"] != "subscribe" || s["seq"] != float64(21) {
		t.Fatalf("resubscribe after a gap: %v", sub)
	}
	id = sub["id"]
	// The history no longer reaches: a snapshot replaces the state.
	send(t, conn, `{"type":"snapshot","id":%q,"account_sid":%q,"epoch":"e2","seq":3,"resumed":false,"users":[%s,%s]}`, id, acctA,
		streamUserJSON("dave", true, ms+600_000, ms), streamUserJSON("erin", true, ms+600_000, ms))
	b.waitFor(`document.querySelector('tr[data-user=dave]')?.dataset.status === 'online' && !document.querySelector('tr[data-user=zed]')`)

	// A dropped connection: reconnecting, then resume from the new epoch.
	conn.Close(websocket.StatusGoingAway, "bye")
	b.waitFor(`document.querySelector('[data-testid=connection-state]').dataset.state === 'reconnecting'`)
	conn = b.conn()
	sub = readFrame(t, conn)
	if s := sub["since"].(map[string]any); s["epoch"] != "e2" || s["seq"] != float64(3) {
		t.Fatalf("resume after a drop: %v", sub)
	}
	id = sub["id"]
	send(t, conn, `{"type":"resumed","id":%q,"account_sid":%q,"epoch":"e2","seq":3}`, id, acctA)
	b.waitFor(`document.querySelector('[data-testid=connection-state]').dataset.state === 'live'`)
	// A conflated jump is not a gap.
	send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":6,"event":"updated","conflated":true,"user":%s}`, id, acctA, streamUserJSON("dave", true, ms+5_400_000, ms))
	b.waitFor(`document.querySelector('tr[data-user=dave] [data-testid=time-left]').textContent.startsWith('1h')`)

	// Search, then sort by a header, all in the browser.
	b.do(chromedp.SendKeys(`#filter-q`, "car"))
	b.waitFor(`document.querySelectorAll('tr[data-testid=user-row]').length === 1 && document.querySelector('tr[data-user=carol]')`)
	var search string
	b.eval(`location.search`, &search)
	if search != "?q=car" {
		t.Errorf("URL after search = %q", search)
	}
	b.eval(`(() => { const q = document.querySelector('#filter-q'); q.value = ''; q.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, nil)
	b.do(chromedp.Click(`a[data-sort=status]`))
	b.waitFor(`[...document.querySelectorAll('tr[data-testid=user-row]')].map(r => r.dataset.status).join() === 'online,online,offline,offline,offline'`)
	b.waitFor(`document.querySelector('th[data-col=status]').getAttribute('aria-sort') === 'ascending'`)
}

func TestBrowserTenThousandUsers(t *testing.T) {
	now := time.Now()
	e := newEnv(t, func(o *Options) { o.Now = time.Now })
	e.dir.clients = map[string]store.Client{}
	var users []hub.UserView
	for i := range 10_000 {
		name := fmt.Sprintf("u%05d", i)
		sid := fmt.Sprintf("c0000000-0000-4000-8000-%012d", i)
		e.dir.clients[sid] = store.Client{SID: sid, AccountSID: acctA, Username: name, IsActive: true}
		if i%2 == 0 {
			users = append(users, hub.UserView{Name: name, Contact: "sip:" + name + "@10.0.0.1", Protocol: "udp",
				ExpiryTime: now.Add(time.Hour).UnixMilli(), Since: now, EventTime: now, LastEvent: "registered"})
		}
	}
	e.pres.users["a.example"] = users
	b := newBrowser(t, e)
	b.do(chromedp.Navigate(b.srv.URL + "/signin"))
	if _, err := chromedp.Call(b.ctx, network.SetCookie, network.SetCookieParams{Name: store.SessionCookie, Value: e.session("admin-key"), URL: b.srv.URL}); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Navigate(b.srv.URL+"/accounts/"+acctA), chromedp.WaitVisible(`#users-body`))
	conn := b.conn()
	id := readFrame(t, conn)["id"]
	send(t, conn, `{"type":"resumed","id":%q,"account_sid":%q,"epoch":"e1","seq":17}`, id, acctA)
	b.waitFor(`document.querySelector('[data-testid=page-info]').textContent === 'Page 1 of 100'`)

	// 200 changes a second for 3 seconds.
	seq := 17
	for range 3 {
		start := time.Now()
		for range 200 {
			seq++
			ms := time.Now().UnixMilli()
			name := fmt.Sprintf("u%05d", (seq*37)%10_000)
			send(t, conn, `{"type":"change","id":%q,"account_sid":%q,"seq":%d,"event":"refreshed","user":%s}`, id, acctA, seq, streamUserJSON(name, true, ms+300_000, ms))
		}
		time.Sleep(time.Second - time.Since(start))
	}
	b.waitFor(fmt.Sprintf(`document.querySelector('[data-testid=feed-item]').dataset.seq === '%d'`, seq))
	var n struct{ Rows, Feed, Online int }
	b.eval(`({rows: document.querySelectorAll('tr[data-testid=user-row]').length, feed: document.querySelectorAll('[data-testid=feed-item]').length, online: +document.querySelector('[data-testid=count-online]').textContent})`, &n)
	if n.Rows != PageSize || n.Feed != FeedSize || n.Online < 5000 {
		t.Errorf("after the burst: %+v", n)
	}
	b.do(chromedp.Click(`[data-testid=page-next]`))
	b.waitFor(`document.querySelector('tr[data-testid=user-row]').dataset.user === 'u00100'`)
}
