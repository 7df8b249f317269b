package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/presencehub/presencehub/api"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// fixture is a real API on a real PostgreSQL, with two service providers:
// SP A owns accounts A1 and A2, SP B owns B1.
type fixture struct {
	t     *testing.T
	url   string
	db    *store.DB
	dbURL string
	hub   *hub.Hub
	api   *api.Handler
	hist  *store.History

	spA, spB   store.ServiceProvider
	a1, a2, b1 store.Account
	clientA1   store.Client

	keys map[string]string // principal name -> token ("" for none)
}

const (
	asAdmin   = "admin"
	asSP      = "sp"      // SP A's key
	asOwn     = "own"     // account A1's key
	asOther   = "other"   // account B1's key (another SP)
	asNone    = "none"    // no Authorization header
	asBad     = "bad"     // a token that was never issued
	asExpired = "expired" // A1's key that expired
)

var principals = []string{asAdmin, asSP, asOwn, asOther, asNone, asBad, asExpired}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, api.StreamOptions{}) }

// newFixtureWith is newFixture with the stream tuned by so. The hub follows
// PostgreSQL as serve's does: the account that holds a realm owns it.
func newFixtureWith(t *testing.T, so api.StreamOptions) *fixture {
	t.Helper()
	return newFixtureSocket(t, so, 0)
}

// newFixtureSocket is newFixtureWith whose server sockets have a send buffer
// of sndbuf bytes (0: the kernel's autotuned default).
func newFixtureSocket(t *testing.T, so api.StreamOptions, sndbuf int) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dbURL := storetest.NewDatabase(t)
	db, err := store.Open(ctx, dbURL, store.Options{Keys: store.Keys{Current: storetest.EncryptionKey}})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(db.Close)
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	hist := store.NewHistory(db, store.HistoryOptions{Retention: 24 * time.Hour, Linger: time.Millisecond})
	h := hub.New(hub.Options{Observe: hist.Observe})
	go h.Run(ctx, nil)
	h.Resync(nil)
	histDone := make(chan struct{})
	go func() { defer close(histDone); _ = hist.Run(ctx, h) }()
	watching := make(chan error, 1)
	go func() {
		watching <- db.WatchAccounts(ctx, func(realm, accountSID string, clients map[string]hub.Flags) {
			h.Claim(realm, accountSID)
			h.SetClients(realm, clients)
		})
	}()
	t.Cleanup(func() { cancel(); <-watching; <-histDone }) // before db.Close
	opts := dbOptions(db)
	opts.Presence, opts.Stream, opts.History, opts.HistoryOpts = h, so, db, api.HistoryOptions{FlapSessions: 3}
	handler := api.New(opts)
	srv := httptest.NewUnstartedServer(handler)
	if sndbuf > 0 {
		srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetWriteBuffer(sndbuf)
			}
			return ctx
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(handler.Shutdown)
	f := &fixture{t: t, url: srv.URL, db: db, dbURL: dbURL, hub: h, api: handler, hist: hist, keys: map[string]string{}}

	// SP A may give its accounts realms under example.com (README, "Who may
	// claim a realm"); SP B has no root domain.
	f.spA = must(db.CreateServiceProvider(ctx, store.ServiceProvider{Name: "SP A", RootDomain: "example.com"}))
	f.spB = must(db.CreateServiceProvider(ctx, store.ServiceProvider{Name: "SP B"}))
	f.a1 = must(db.CreateAccount(ctx, store.Account{Name: "A1", ServiceProviderSID: f.spA.SID, SIPRealm: "a1.example.com"}))
	f.a2 = must(db.CreateAccount(ctx, store.Account{Name: "A2", ServiceProviderSID: f.spA.SID, SIPRealm: "a2.example.com"}))
	f.b1 = must(db.CreateAccount(ctx, store.Account{Name: "B1", ServiceProviderSID: f.spB.SID, SIPRealm: "b1.example.com"}))
	f.clientA1 = must(db.CreateClient(ctx, store.Client{AccountSID: f.a1.SID, Username: "alice", IsActive: true,
		AllowDirectAppCalling: true, AllowDirectQueueCalling: false, AllowDirectUserCalling: true}, "s3cret"))

	key := func(k store.APIKey) string {
		_, tok, err := db.CreateAPIKey(ctx, k)
		if err != nil {
			t.Fatalf("create key %+v: %v", k, err)
		}
		return tok
	}
	f.keys[asAdmin] = key(store.APIKey{})
	f.keys[asSP] = key(store.APIKey{ServiceProviderSID: f.spA.SID})
	f.keys[asOwn] = key(store.APIKey{AccountSID: f.a1.SID})
	f.keys[asOther] = key(store.APIKey{AccountSID: f.b1.SID})
	f.keys[asBad] = "ph_this-token-was-never-issued"
	soon := time.Now().Add(1 * time.Second)
	f.keys[asExpired] = key(store.APIKey{AccountSID: f.a1.SID, ExpiresAt: &soon})
	// Use the expiring key once while valid, so a cache would hold it.
	if got := f.do(asExpired, "GET", "/v1/Accounts/"+f.a1.SID, nil).status; got != 200 {
		t.Fatalf("expiring key before its expiry: got %d, want 200", got)
	}
	time.Sleep(time.Until(soon) + 100*time.Millisecond)
	return f
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response body is not the JSON expected (%v): %s", err, r.body)
	}
}

// do sends a request as the named principal; body may be nil, a string
// (sent as is) or any value (sent as JSON).
func (f *fixture) do(who, method, path string, body any) response {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		rd = bytes.NewReader(must(json.Marshal(b)))
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatalf("new request: %v", err)
	}
	if tok := f.keys[who]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

// register puts a registration straight into the hub, as the Redis source
// would after reading a record the SBC wrote.
func (f *fixture) register(user, realm, protocol string, flags hub.Flags) {
	f.hub.Update(hub.Update{AOR: user + "@" + realm, Reg: &hub.Registration{
		User: user, Realm: realm, Contact: "sip:" + user + "@192.168.1.20:5060", Protocol: protocol,
		Proxy: "sip:203.0.113.7:40123", SBCAddress: "10.0.0.1:5060", PrivateSBCAddress: "10.0.0.2:5060",
		CallHook: "https://hooks.example.com/call", CallStatusHook: "https://hooks.example.com/status",
		AllowDirectApp: bit(flags.App), AllowDirectQueue: bit(flags.Queue), AllowDirectUser: bit(flags.User),
		ExpiryTime: time.Now().Add(time.Hour).UnixMilli(), Deadline: time.Now().Add(time.Hour),
	}})
}

// bit is a flag as the SBC's record holds it.
func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dbOptions are api.Options whose every store view is db.
func dbOptions(db *store.DB) api.Options {
	return api.Options{Auth: db, Providers: db, Accounts: db, Keys: db, Clients: db, Ping: db.Ping}
}
