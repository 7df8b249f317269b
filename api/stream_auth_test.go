package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/api"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// wsClient is a test's stream connection.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

// dialStream opens /v1/stream with header h; it fails the test unless the
// upgrade succeeds.
func (f *fixture) dialStream(t *testing.T, h http.Header) *wsClient {
	t.Helper()
	c, status, err := f.tryDial(h, "")
	if err != nil {
		t.Fatalf("upgrade refused (HTTP %d): %v", status, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t: t, c: c}
}

// tryDial opens /v1/stream with header h and query; status is the HTTP
// answer when the upgrade was refused.
func (f *fixture) tryDial(h http.Header, query string) (*websocket.Conn, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+"/v1/stream"+query, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, status, err
	}
	c.SetReadLimit(16 << 20)
	return c, 0, nil
}

func bearerHeader(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func (w *wsClient) send(format string, args ...any) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(format, args...))); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

// next reads one frame within 5 s; err is the close (or timeout).
func (w *wsClient) next() (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		w.t.Fatalf("frame is not a JSON object: %s", b)
	}
	return m, nil
}

// expect reads one frame and checks its type (and, for errors, its code).
func (w *wsClient) expect(typ, code string) map[string]any {
	w.t.Helper()
	m, err := w.next()
	if err != nil {
		w.t.Fatalf("waiting for a %s frame: %v", typ, err)
	}
	if m["type"] != typ || (code != "" && m["code"] != code) {
		w.t.Fatalf("got %v, want type %q code %q", m, typ, code)
	}
	return m
}

// subscribe sends a subscribe and returns its first frame.
func (w *wsClient) subscribe(id, account string, extra string) map[string]any {
	w.t.Helper()
	w.send(`{"type":"subscribe","id":%q,"account_sid":%q%s}`, id, account, extra)
	m, err := w.next()
	if err != nil {
		w.t.Fatalf("subscribe %s: %v", id, err)
	}
	return m
}

// closeStatus reads until the connection ends and returns the close code,
// failing on frames other than errors with code unauthorized.
func (w *wsClient) closeStatus() websocket.StatusCode {
	w.t.Helper()
	for {
		m, err := w.next()
		if err != nil {
			return websocket.CloseStatus(err)
		}
		if m["type"] != "error" || m["code"] != "unauthorized" {
			w.t.Fatalf("before the close got %v, want only unauthorized errors", m)
		}
	}
}

// TestStreamAuthorizationLasts is issue #9 finding 1: a connection's
// authorisation ends with its credential. Each way of ending it gives an
// unauthorized error frame for the subscription, then close 4001.
func TestStreamAuthorizationLasts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	newKey := func(k store.APIKey) (store.APIKey, string) {
		key, tok, err := f.db.CreateAPIKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return key, tok
	}
	other, err := store.Open(ctx, f.dbURL, store.Options{Keys: store.Keys{Current: storetest.EncryptionKey}}) // another process
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	tests := []struct {
		name      string
		subscribe bool
		// open returns the upgrade's header and query, and what ends it.
		open func(t *testing.T) (h http.Header, query string, end func())
	}{
		{"key deleted with DELETE /v1/ApiKeys", true, func(t *testing.T) (http.Header, string, func()) {
			k, tok := newKey(store.APIKey{AccountSID: f.a1.SID})
			return bearerHeader(tok), "", func() {
				if got := f.do(asAdmin, "DELETE", "/v1/ApiKeys/"+k.SID, nil).status; got != http.StatusNoContent {
					t.Fatalf("DELETE key: %d", got)
				}
			}
		}},
		{"key deleted by another process", true, func(t *testing.T) (http.Header, string, func()) {
			k, tok := newKey(store.APIKey{AccountSID: f.a1.SID})
			return bearerHeader(tok), "", func() {
				if err := other.DeleteAPIKey(ctx, k.SID); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"key's expires_at passes", true, func(t *testing.T) (http.Header, string, func()) {
			exp := time.Now().Add(1500 * time.Millisecond)
			_, tok := newKey(store.APIKey{AccountSID: f.a1.SID, ExpiresAt: &exp})
			return bearerHeader(tok), "", func() {}
		}},
		{"dashboard sign-out", true, func(t *testing.T) (http.Header, string, func()) {
			k, _ := newKey(store.APIKey{AccountSID: f.a1.SID})
			session, err := f.db.CreateSession(ctx, store.Principal{KeySID: k.SID}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return http.Header{"Cookie": {"ph_session=" + session}}, "", func() {
				if err := f.db.DeleteSession(ctx, session); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"ticket's key deleted", true, func(t *testing.T) (http.Header, string, func()) {
			k, tok := newKey(store.APIKey{AccountSID: f.a1.SID})
			f.keys["ticket-issuer"] = tok
			var tk struct{ Ticket string }
			f.do("ticket-issuer", "POST", "/v1/StreamTickets", nil).json(t, &tk)
			return nil, "?ticket=" + tk.Ticket, func() {
				if err := f.db.DeleteAPIKey(ctx, k.SID); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"account deleted with its keys", true, func(t *testing.T) (http.Header, string, func()) {
			a := must(f.db.CreateAccount(ctx, store.Account{Name: "doomed", ServiceProviderSID: f.spA.SID, SIPRealm: "doomed.example.com"}))
			_, tok := newKey(store.APIKey{AccountSID: a.SID})
			f.keys["doomed"] = tok
			return bearerHeader(tok), "", func() {
				if got := f.do(asAdmin, "DELETE", "/v1/Accounts/"+a.SID, nil).status; got != http.StatusNoContent {
					t.Fatalf("DELETE account: %d", got)
				}
			}
		}},
		{"the key that minted it deleted", true, func(t *testing.T) (http.Header, string, func()) {
			parent, parentTok := newKey(store.APIKey{ServiceProviderSID: f.spA.SID})
			f.keys["stream-parent"] = parentTok
			var child struct{ Token string }
			f.do("stream-parent", "POST", "/v1/ApiKeys", map[string]any{"account_sid": f.a1.SID}).json(t, &child)
			return bearerHeader(child.Token), "", func() {
				if got := f.do(asAdmin, "DELETE", "/v1/ApiKeys/"+parent.SID, nil).status; got != http.StatusNoContent {
					t.Fatalf("DELETE parent key: %d", got)
				}
			}
		}},
		{"no subscription, key deleted", false, func(t *testing.T) (http.Header, string, func()) {
			k, tok := newKey(store.APIKey{AccountSID: f.a1.SID})
			return bearerHeader(tok), "", func() {
				if err := f.db.DeleteAPIKey(ctx, k.SID); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, query, end := tt.open(t)
			c, status, err := f.tryDial(h, query)
			if err != nil {
				t.Fatalf("upgrade refused (HTTP %d): %v", status, err)
			}
			defer c.CloseNow()
			w := &wsClient{t: t, c: c}
			account := f.a1.SID
			if tt.name == "account deleted with its keys" {
				p, err := f.db.Authenticate(ctx, f.keys["doomed"])
				if err != nil {
					t.Fatal(err)
				}
				account = p.AccountSID
			}
			if tt.subscribe {
				if m := w.subscribe("s", account, ""); m["type"] != "snapshot" {
					t.Fatalf("subscribe: %v, want a snapshot", m)
				}
			}
			end()
			m := w.expect("error", "unauthorized")
			if want := map[bool]string{true: "s", false: ""}[tt.subscribe]; m["id"] != want {
				t.Errorf("unauthorized frame for id %v, want %q", m["id"], want)
			}
			if got := w.closeStatus(); got != 4001 {
				t.Errorf("closed with %d, want 4001", got)
			}
		})
	}
}

// TestStreamSubscriptionEndsWhenAccountIsOutOfReach: a credential that
// stays valid keeps its connection, but a subscription to an account it
// may no longer see, or that is gone, ends with an unauthorized error frame.
func TestStreamSubscriptionEndsWhenAccountIsOutOfReach(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := must(f.db.CreateAccount(ctx, store.Account{Name: "moving", ServiceProviderSID: f.spA.SID, SIPRealm: "moving.example.com"}))
	w := f.dialStream(t, bearerHeader(f.keys[asSP]))
	if m := w.subscribe("m", a.SID, ""); m["type"] != "snapshot" {
		t.Fatalf("subscribe: %v", m)
	}
	if m := w.subscribe("own", f.a1.SID, ""); m["type"] != "snapshot" {
		t.Fatalf("subscribe: %v", m)
	}
	// The account moves to SP B: SP A's key may no longer see it.
	a.ServiceProviderSID = f.spB.SID
	if err := f.db.UpdateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if m := w.expect("error", "unauthorized"); m["id"] != "m" {
		t.Errorf("unauthorized for %v, want m", m["id"])
	}
	// The connection and the other subscription live on.
	f.register("alice", "a1.example.com", "udp", hub.Flags{})
	if m := w.expect("change", ""); m["id"] != "own" {
		t.Errorf("change for %v, want own", m["id"])
	}
}

// TestStreamRealmChangesHands is issue #9 finding 3: tenant 1 subscribes to
// its account's realm; the account is deleted and tenant 2 creates one with
// the same realm. Tenant 1's socket gets nothing of tenant 2, and tenant 2
// resuming from the old position gets a fresh snapshot, not tenant 1's
// history.
func TestStreamRealmChangesHands(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	const realm = "shared.example.com"
	first := must(f.db.CreateAccount(ctx, store.Account{Name: "tenant 1", ServiceProviderSID: f.spA.SID, SIPRealm: realm}))
	// Tenant 1 watches with its provider's key, which outlives the account:
	// the socket stays open and could receive what comes next.
	t1 := f.dialStream(t, bearerHeader(f.keys[asSP]))
	snap := t1.subscribe("t1", first.SID, "")
	if snap["type"] != "snapshot" {
		t.Fatalf("tenant 1 subscribe: %v", snap)
	}
	oldEpoch := snap["epoch"].(string)
	f.register("alice", realm, "udp", hub.Flags{})
	f.hub.Update(hub.Update{AOR: "alice@" + realm}) // alice leaves again: history only
	for _, want := range []string{"registered", "unregistered"} {
		if m := t1.expect("change", ""); m["event"] != want {
			t.Fatalf("tenant 1 got %v, want %s", m, want)
		}
	}

	if got := f.do(asAdmin, "DELETE", "/v1/Accounts/"+first.SID, nil).status; got != http.StatusNoContent {
		t.Fatalf("DELETE account: %d", got)
	}
	if m := t1.expect("error", "unauthorized"); m["id"] != "t1" {
		t.Errorf("tenant 1's unauthorized frame for %v, want t1", m["id"])
	}

	second := must(f.db.CreateAccount(ctx, store.Account{Name: "tenant 2", ServiceProviderSID: f.spB.SID, SIPRealm: realm}))
	_, tok2, err := f.db.CreateAPIKey(ctx, store.APIKey{AccountSID: second.SID})
	if err != nil {
		t.Fatal(err)
	}
	t2 := f.dialStream(t, bearerHeader(tok2))
	m := t2.subscribe("t2", second.SID, fmt.Sprintf(`,"since":{"epoch":%q,"seq":0}`, oldEpoch))
	if m["type"] != "snapshot" || m["resumed"] != false || m["epoch"] == oldEpoch {
		t.Fatalf("tenant 2 resuming from tenant 1's position got %v, want a snapshot with resumed:false and a new epoch", m)
	}
	if users := m["users"].([]any); len(users) != 0 {
		t.Errorf("tenant 2's snapshot has %v, want nobody", users)
	}
	f.register("bob", realm, "udp", hub.Flags{})
	if m := t2.expect("change", ""); m["event"] != "registered" || m["seq"] == nil {
		t.Fatalf("tenant 2 got %v, want bob registered", m)
	}
	if recent := f.hub.Recent(realm, 10); len(recent) != 1 || recent[0].User != "bob" {
		t.Errorf("the realm's history (the dashboard feed) holds %d changes, want only bob's", len(recent))
	}
	// A fence: tenant 1 subscribes to another account of its provider and
	// reads up to that snapshot. Nothing of tenant 2 came before it.
	t1.send(`{"type":"subscribe","id":"fence","account_sid":%q}`, f.a1.SID)
	for {
		m, err := t1.next()
		if err != nil {
			t.Fatalf("tenant 1's socket: %v", err)
		}
		if m["id"] == "fence" {
			break
		}
		t.Errorf("tenant 1 received %v after its account was deleted", m)
	}
}

// TestStreamShutdown is issue #9 finding 10: every connection, subscribed
// or not, gets 1001 on shutdown, and no new one is accepted.
func TestStreamShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	idle := f.dialStream(t, bearerHeader(f.keys[asOwn]))
	busy := f.dialStream(t, bearerHeader(f.keys[asOwn]))
	if m := busy.subscribe("s", f.a1.SID, ""); m["type"] != "snapshot" {
		t.Fatalf("subscribe: %v", m)
	}
	done := make(chan struct{})
	go func() { f.api.Shutdown(); close(done) }()
	for name, w := range map[string]*wsClient{"not subscribed": idle, "subscribed": busy} {
		_, err := w.next()
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Errorf("%s connection ended with %v (%d), want 1001", name, err, got)
		}
	}
	<-done
	if _, status, err := f.tryDial(bearerHeader(f.keys[asOwn]), ""); err == nil || status != http.StatusServiceUnavailable {
		t.Errorf("upgrade after shutdown: HTTP %d (%v), want 503", status, err)
	}
}

// TestStreamLimits is issue #9 finding 2's caps: subscriptions and watched
// users per connection, subscribes per second, sockets per key. Each gives
// a clear error (frame or HTTP 429) and leaves the rest working.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, api.StreamOptions{MaxSubs: 3, MaxNames: 100, MaxConnsPerKey: 3, SubscribeRate: 0.001, SubscribeBurst: 5})
	ctx := context.Background()
	names := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"u%d"`, i)
		}
		return `,"users":[` + b.String() + `]`
	}
	t.Run("subscriptions per connection", func(t *testing.T) {
		w := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
		for i, want := range []string{"snapshot", "snapshot", "snapshot", "error"} {
			m := w.subscribe(fmt.Sprint(i), f.a1.SID, "")
			if m["type"] != want || (want == "error" && m["code"] != "limit_exceeded") {
				t.Fatalf("subscribe %d: %v, want %s", i, m, want)
			}
		}
		w.send(`{"type":"unsubscribe","id":"0"}`)
		w.expect("unsubscribed", "")
		if m := w.subscribe("4", f.a1.SID, ""); m["type"] != "snapshot" {
			t.Fatalf("after an unsubscribe: %v, want a snapshot", m)
		}
	})
	t.Run("watched users per connection", func(t *testing.T) {
		w := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
		if m := w.subscribe("a", f.a1.SID, names(60)); m["type"] != "snapshot" || len(m["users"].([]any)) != 60 {
			t.Fatalf("60 names: %v", m["type"])
		}
		if m := w.subscribe("b", f.a1.SID, names(41)); m["code"] != "limit_exceeded" {
			t.Fatalf("60+41 names: %v, want limit_exceeded", m)
		}
		if m := w.subscribe("c", f.a1.SID, names(40)); m["type"] != "snapshot" {
			t.Fatalf("60+40 names: %v, want a snapshot", m)
		}
	})
	t.Run("subscribe rate", func(t *testing.T) {
		w := f.dialStream(t, bearerHeader(f.keys[asOwn]))
		for i := range 6 { // B1 is not A1's: forbidden, until the bucket is empty
			want := "forbidden"
			if i == 5 {
				want = "rate_limited"
			}
			if m := w.subscribe(fmt.Sprint(i), f.b1.SID, ""); m["code"] != want {
				t.Fatalf("subscribe %d: %v, want %s", i, m, want)
			}
		}
	})
	keyRefusals := 1 // the fourth socket of a key; see below
	t.Run("sockets per key", func(t *testing.T) {
		_, tok, err := f.db.CreateAPIKey(ctx, store.APIKey{AccountSID: f.a1.SID})
		if err != nil {
			t.Fatal(err)
		}
		var open []*websocket.Conn
		for range 3 {
			c, status, err := f.tryDial(bearerHeader(tok), "")
			if err != nil {
				t.Fatalf("socket %d refused: %d %v", len(open)+1, status, err)
			}
			open = append(open, c)
		}
		if c, status, err := f.tryDial(bearerHeader(tok), ""); err == nil || status != http.StatusTooManyRequests {
			if c != nil {
				c.CloseNow()
			}
			t.Fatalf("fourth socket of the key: HTTP %d (%v), want 429", status, err)
		}
		if _, status, err := f.tryDial(bearerHeader(f.keys[asOwn]), ""); err != nil {
			t.Fatalf("another key of the account was refused: %d %v", status, err)
		}
		open[0].Close(websocket.StatusNormalClosure, "")
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, _, err := f.tryDial(bearerHeader(tok), "")
			if err == nil {
				c.CloseNow()
				break
			}
			// Refused while the server had not yet let go of the closed
			// socket: one more refusal on the metric below.
			keyRefusals++
			if time.Now().After(deadline) {
				t.Fatalf("a closed socket's place was not freed: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, c := range open[1:] {
			c.CloseNow()
		}
	})
	if body := string(f.do(asNone, "GET", "/metrics", nil).body); !strings.Contains(body, fmt.Sprintf("presencehub_stream_key_conn_refusals_total %d\n", keyRefusals)) ||
		!strings.Contains(body, "presencehub_stream_rate_limited_total 1") || !strings.Contains(body, "presencehub_stream_limit_refusals_total 2") {
		t.Errorf("metrics do not count the refusals:\n%s", body)
	}
}

// TestStreamKeyDeletedDuringUpgrade: a key deleted after an upgrade's
// credential is checked but before its connection is among the open ones
// (which the re-check passes go through) still ends the connection. Not
// parallel: it sets the package's upgrade hook.
func TestStreamKeyDeletedDuringUpgrade(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k, tok, err := f.db.CreateAPIKey(ctx, store.APIKey{AccountSID: f.a1.SID})
	if err != nil {
		t.Fatal(err)
	}
	api.SetStreamCheckedHook(func(p store.Principal) {
		if p.KeySID != k.SID {
			return
		}
		if err := f.db.DeleteAPIKey(ctx, k.SID); err != nil {
			t.Errorf("delete key: %v", err)
		}
	})
	t.Cleanup(func() { api.SetStreamCheckedHook(nil) })
	w := f.dialStream(t, bearerHeader(tok))
	m := w.expect("error", "unauthorized")
	if m["id"] != "" {
		t.Errorf("unauthorized frame for id %v, want \"\"", m["id"])
	}
	if got := w.closeStatus(); got != 4001 {
		t.Errorf("closed with %d, want 4001", got)
	}
}
