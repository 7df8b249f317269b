package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-sql-driver/mysql"
	"github.com/presencehub/presencehub/api/client"
	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestJambonzURLFromEnvironment(t *testing.T) {
	tests := []struct {
		name string
		flag string
		env  map[string]string
		want string
	}{
		{"flag wins", "mysql://a@h/db", map[string]string{"JAMBONES_MYSQL_HOST": "x"}, "mysql://a@h/db"},
		{"nothing set", "", nil, ""},
		{"jambonz variables", "", map[string]string{"JAMBONES_MYSQL_HOST": "db.local", "JAMBONES_MYSQL_USER": "jambones",
			"JAMBONES_MYSQL_PASSWORD": "p@ss:w/rd", "JAMBONES_MYSQL_DATABASE": "jambones"},
			"mysql://jambones:p%40ss%3Aw%2Frd@db.local:3306/jambones"},
		{"port given", "", map[string]string{"JAMBONES_MYSQL_HOST": "10.0.0.1", "JAMBONES_MYSQL_PORT": "3307",
			"JAMBONES_MYSQL_USER": "root", "JAMBONES_MYSQL_DATABASE": "j"}, "mysql://root@10.0.0.1:3307/j"},
	}
	for _, tt := range tests {
		got := jambonzURL(tt.flag, func(k string) string { return tt.env[k] })
		if got != tt.want {
			t.Errorf("%s: jambonzURL = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// jambonzDB inserts rows the way jambonz's api-server does.
type jambonzDB struct {
	t  *testing.T
	db *sql.DB
}

func uuid4() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (j jambonzDB) exec(q string, args ...any) {
	j.t.Helper()
	if _, err := j.db.Exec(q, args...); err != nil {
		j.t.Fatalf("mysql %s: %v", q, err)
	}
}

func (j jambonzDB) sp(name string) string {
	sid := uuid4()
	j.exec(`INSERT INTO service_providers (service_provider_sid, name, root_domain) VALUES (?, ?, ?)`, sid, name, name+".example.com")
	return sid
}

func (j jambonzDB) account(sp, name, realm string) string {
	sid := uuid4()
	j.exec(`INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, webhook_secret) VALUES (?, ?, ?, ?, ?)`,
		sid, name, realm, sp, "wh_"+sid[:8])
	return sid
}

func (j jambonzDB) key(account, sp any) string {
	token := uuid4()
	j.exec(`INSERT INTO api_keys (api_key_sid, token, account_sid, service_provider_sid) VALUES (?, ?, ?, ?)`, uuid4(), token, account, sp)
	return token
}

func (j jambonzDB) client(account, username string) string {
	sid := uuid4()
	j.exec(`INSERT INTO clients (client_sid, account_sid, username, password) VALUES (?, ?, ?, ?)`, sid, account, username, `{"iv":"0","content":"1"}`)
	return sid
}

// status does a request and returns its status and body.
func (in *instance) status(key, method, path string, body string) (int, string) {
	in.t.Helper()
	req, _ := http.NewRequest(method, in.url+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signIn signs in to the dashboard with key and returns the status of the
// answer (303 when signed in).
func (in *instance) signIn(key string) int {
	in.t.Helper()
	resp, err := http.Get(in.url + "/signin")
	if err != nil {
		in.t.Fatal(err)
	}
	resp.Body.Close()
	var csrf string
	for _, c := range resp.Cookies() {
		if c.Name == "ph_signin" {
			csrf = c.Value
		}
	}
	form := url.Values{"api_key": {key}, "csrf_token": {csrf}, "next": {"/"}}
	req, _ := http.NewRequest("POST", in.url+"/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", in.url)
	req.AddCookie(&http.Cookie{Name: "ph_signin", Value: csrf})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestJambonzDropIn runs serve on jambonz's database (found through
// jambonz's own JAMBONES_MYSQL_* variables): its keys work unchanged against
// REST, the stream and the dashboard; management writes are refused; keys
// and accounts changed in MySQL take effect within the sync interval.
func TestJambonzDropIn(t *testing.T) {
	dsn, my := storetest.NewJambonzDatabase(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(cfg.Addr, ":")
	j := jambonzDB{t, my}
	sp := j.sp("carrier")
	acme := j.account(sp, "acme", "acme.example.com")
	globex := j.account(sp, "globex", "globex.example.com")
	acctKey := j.key(acme, nil)
	spKey := j.key(nil, sp)
	adminKey := j.key(nil, nil)
	alice := j.client(acme, "alice")

	const interval = 200 * time.Millisecond
	in := startInstanceEnv(t, map[string]string{
		"JAMBONES_MYSQL_HOST": host, "JAMBONES_MYSQL_PORT": port, "JAMBONES_MYSQL_USER": cfg.User,
		"JAMBONES_MYSQL_DATABASE":           cfg.DBName,
		"PRESENCEHUB_JAMBONZ_SYNC_INTERVAL": interval.String(),
	})
	in.eventually("jambonz mirror loaded", 5*time.Second, func() bool {
		code, _ := in.status(acctKey, "GET", "/v1/Accounts/"+acme+"/RegisteredSipUsers", "")
		return code == 200
	})
	in.register("alice", "acme.example.com", "udp", time.Hour)
	in.eventually("alice registered", 2*time.Second, func() bool {
		var l []string
		in.call(acctKey, "GET", "/v1/Accounts/"+acme+"/RegisteredSipUsers", nil, 200, &l)
		return len(l) == 1 && l[0] == "alice@acme.example.com"
	})

	// Every kind of jambonz key against REST, and what each may see.
	for _, tt := range []struct {
		name, key, path string
		want            int
	}{
		{"account key, own account", acctKey, "/v1/Accounts/" + acme + "/RegisteredSipUsers", 200},
		{"account key, other account", acctKey, "/v1/Accounts/" + globex + "/RegisteredSipUsers", 403},
		{"service provider key", spKey, "/v1/Accounts/" + acme + "/RegisteredSipUsers", 200},
		{"admin key", adminKey, "/v1/Accounts/" + globex + "/RegisteredSipUsers", 200},
		{"admin key reads clients", adminKey, "/v1/Clients/" + alice, 200},
		{"presencehub's own admin key", in.adminKey, "/v1/Accounts", 200},
		{"made-up token", uuid4(), "/v1/Accounts", 401},
	} {
		if code, body := in.status(tt.key, "GET", tt.path, ""); code != tt.want {
			t.Errorf("%s: GET %s = %d %s, want %d", tt.name, tt.path, code, body, tt.want)
		}
	}

	// jambonz is the source of truth: writes of mirrored resources are 409.
	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/v1/Accounts", `{"name":"x","service_provider_sid":"` + sp + `"}`},
		{"PUT", "/v1/Accounts/" + acme, `{"name":"renamed"}`},
		{"DELETE", "/v1/ServiceProviders/" + sp, ""},
		{"POST", "/v1/ApiKeys", `{"account_sid":"` + acme + `"}`},
		{"PUT", "/v1/Clients/" + alice, `{"is_active":false}`},
		{"POST", "/v1/Clients", `{"account_sid":"` + acme + `","username":"bob","password":"x"}`},
	} {
		code, body := in.status(adminKey, tt.method, tt.path, tt.body)
		if code != 409 || strings.TrimSpace(body) != `{"msg":"managed in jambonz"}` {
			t.Errorf("%s %s = %d %s, want 409 {\"msg\":\"managed in jambonz\"}", tt.method, tt.path, code, body)
		}
	}

	// Dashboard sign-in with jambonz keys; the client page has no form.
	for name, key := range map[string]string{"account": acctKey, "service provider": spKey, "admin": adminKey} {
		if code := in.signIn(key); code != http.StatusSeeOther {
			t.Errorf("dashboard sign-in with the %s key: %d, want 303", name, code)
		}
	}

	// The stream with each kind of jambonz key.
	for name, key := range map[string]string{"account": acctKey, "service provider": spKey, "admin": adminKey} {
		ws := dial(t, in.wsURL(), key)
		ws.send(map[string]any{"type": "subscribe", "id": "s", "account_sid": acme})
		if snap := ws.expect("snapshot", "", "", 2*time.Second); len(snap.Users) != 1 || snap.Users[0].Name != "alice" {
			t.Errorf("stream with the %s key: snapshot %s, want alice", name, snap.Raw)
		}
	}
	ws := dial(t, in.wsURL(), acctKey)
	ws.send(map[string]any{"type": "subscribe", "id": "s", "account_sid": globex})
	if fr := ws.expect("error", "", "", 2*time.Second); fr.Code != "forbidden" {
		t.Errorf("stream with the account key, other account: %s, want a forbidden error", fr.Raw)
	}

	// A key created in jambonz works on first use, before any sync.
	fresh := j.key(globex, nil)
	if code, body := in.status(fresh, "GET", "/v1/Accounts/"+globex+"/RegisteredSipUsers", ""); code != 200 {
		t.Errorf("key created in MySQL, first use: %d %s, want 200", code, body)
	}

	// A key deleted in jambonz stops within the interval; so does one that
	// expires there.
	j.exec(`DELETE FROM api_keys WHERE token = ?`, spKey)
	j.exec(`UPDATE api_keys SET expires_at = UTC_TIMESTAMP() WHERE token = ?`, fresh)
	in.eventually("deleted and expired keys refused", 5*interval+2*time.Second, func() bool {
		c1, _ := in.status(spKey, "GET", "/v1/Accounts", "")
		c2, _ := in.status(fresh, "GET", "/v1/Accounts", "")
		return c1 == 401 && c2 == 401
	})

	// The realm moves from acme to globex: globex now sees alice.
	j.exec(`UPDATE accounts SET sip_realm = NULL WHERE account_sid = ?`, acme)
	j.exec(`UPDATE accounts SET sip_realm = 'acme.example.com' WHERE account_sid = ?`, globex)
	in.eventually("realm moved", 5*time.Second, func() bool {
		var l []string
		in.call(adminKey, "GET", "/v1/Accounts/"+globex+"/RegisteredSipUsers", nil, 200, &l)
		return len(l) == 1 && l[0] == "alice@acme.example.com"
	})

	// The account is deleted in jambonz: gone here, its key with it.
	j.exec(`DELETE FROM clients WHERE account_sid = ?`, acme)
	j.exec(`DELETE FROM api_keys WHERE account_sid = ?`, acme)
	j.exec(`DELETE FROM accounts WHERE account_sid = ?`, acme)
	in.eventually("account deleted", 5*time.Second, func() bool {
		code, _ := in.status(adminKey, "GET", "/v1/Accounts/"+acme, "")
		return code == 404
	})
	if code, _ := in.status(acctKey, "GET", "/v1/Accounts/"+acme+"/RegisteredSipUsers", ""); code != 401 {
		t.Errorf("deleted account's key: %d, want 401", code)
	}

	var ready map[string]any
	in.call("", "GET", "/readyz", nil, 200, &ready)
	if m, _ := ready["jambonz_mirror"].(map[string]any); m["status"] != "fresh" {
		t.Errorf("/readyz = %v, want jambonz_mirror fresh", ready)
	}
}

// TestJambonzMySQLOutage: MySQL goes away; the mirror stays in force,
// /readyz and /metrics say it is stale and since when; it comes back by
// itself.
func TestJambonzMySQLOutage(t *testing.T) {
	srv := storetest.StartMySQL(t)
	dsn, my := storetest.NewJambonzDatabaseOn(t, srv.DSN)
	j := jambonzDB{t, my}
	sp := j.sp("carrier")
	acme := j.account(sp, "acme", "acme.example.com")
	key := j.key(acme, nil)
	in := startInstanceEnv(t, map[string]string{
		"PRESENCEHUB_JAMBONZ_DATABASE_URL":  dsn,
		"PRESENCEHUB_JAMBONZ_SYNC_INTERVAL": "100ms",
	})
	path := "/v1/Accounts/" + acme + "/RegisteredSipUsers"
	in.eventually("mirror loaded", 5*time.Second, func() bool { c, _ := in.status(key, "GET", path, ""); return c == 200 })

	mirror := func() map[string]any {
		_, body := in.status("", "GET", "/readyz", "")
		var r struct {
			Status  string
			Jambonz map[string]any `json:"jambonz_mirror"`
		}
		json.Unmarshal([]byte(body), &r)
		return r.Jambonz
	}
	srv.Stop()
	in.eventually("readyz says stale", 5*time.Second, func() bool { return mirror()["status"] == "stale" })
	if m := mirror(); m["stale_since"] == nil {
		t.Errorf("/readyz jambonz_mirror = %v, want stale_since", m)
	}
	if code, body := in.status("", "GET", "/readyz", ""); code != 200 {
		t.Errorf("/readyz while MySQL is away = %d %s, want 200 (serving the last mirror)", code, body)
	}
	_, metrics := in.status("", "GET", "/metrics", "")
	if !strings.Contains(metrics, "presencehub_jambonz_mirror_stale 1") {
		t.Errorf("/metrics while MySQL is away lacks presencehub_jambonz_mirror_stale 1")
	}
	if code, _ := in.status(key, "GET", path, ""); code != 200 {
		t.Errorf("jambonz key while MySQL is away: %d, want 200", code)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	in.eventually("readyz says fresh", 10*time.Second, func() bool { return mirror()["status"] == "fresh" })
	_, metrics = in.status("", "GET", "/metrics", "")
	if !strings.Contains(metrics, "presencehub_jambonz_mirror_stale 0") {
		t.Errorf("/metrics after MySQL came back lacks presencehub_jambonz_mirror_stale 0")
	}
}

func TestSentinelAddrs(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"10.0.0.1", "10.0.0.1:26379", false},
		{"a:26380, b ,c:1", "a:26380,b:26379,c:1", false},
		{"::1", "[::1]:26379", false},
		{"[::1]:5000", "[::1]:5000", false},
	}
	for _, tt := range tests {
		got, err := sentinelAddrs(tt.in)
		if (err != nil) != tt.wantErr || strings.Join(got, ",") != tt.want {
			t.Errorf("sentinelAddrs(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestRedisSettingsFromJambonzEnvironment(t *testing.T) {
	env := map[string]string{
		"JAMBONES_REDIS_HOST": "redis.local", "JAMBONES_REDIS_PORT": "6380",
		"JAMBONES_REDIS_SENTINELS": "s1,s2:26380", "JAMBONES_REDIS_SENTINEL_MASTER_NAME": "mymaster",
		"JAMBONES_REDIS_SENTINEL_PASSWORD": "sp", "JAMBONES_REDIS_USERNAME": "u", "JAMBONES_REDIS_PASSWORD": "p",
		"PRESENCEHUB_REDIS_PASSWORD": "ours wins",
	}
	getenv := func(k string) string { return env[k] }
	if got := cli.JambonzRedisURL(getenv, "redis://default"); got != "redis://redis.local:6380/0" {
		t.Errorf("jambonzRedisURL = %q, want redis://redis.local:6380/0", got)
	}
	if got := cli.JambonzRedisURL(func(string) string { return "" }, "redis://default"); got != "redis://default" {
		t.Errorf("jambonzRedisURL without JAMBONES_REDIS_HOST = %q, want the default", got)
	}
	fs := cli.NewFlagSet("serve", "", getenv, io.Discard)
	rt := addRedisTopologyFlags(fs)
	if err := fs.ParseArgs([]string{"--redis-username", "flag wins"}); err != nil {
		t.Fatal(err)
	}
	rt.resolve(getenv)
	got := []string{*rt.sentinels, *rt.master, *rt.sentinelPassword, *rt.username, *rt.password}
	want := []string{"s1,s2:26380", "mymaster", "sp", "flag wins", "ours wins"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("resolved %q, want %q", got, want)
	}
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "ours wins") || strings.Contains(help.String(), `"sp"`) {
		t.Errorf("--help shows a password from the environment:\n%s", help.String())
	}
}

// closeCode reads until the connection ends and returns its close code;
// every frame before the close must be an unauthorized error.
func (f *frameReader) closeCode(timeout time.Duration) websocket.StatusCode {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, b, err := f.c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
		var fr client.Frame
		if json.Unmarshal(b, &fr) != nil || fr.Type != "error" || fr.Code != "unauthorized" {
			f.t.Fatalf("before the close got %s, want only unauthorized error frames", b)
		}
	}
}

// TestJambonzDeletionsEndStreams: with the mirror running against a real
// MariaDB, what jambonz deletes ends the open streams that depended on it,
// within a sync interval or two (the stream's authorization lifetime reacts
// to the mirror's writes): (a) a deleted key and (b) a key whose expires_at
// passes get unauthorized and close 4001, and REST answers 401; (c) a
// deleted account's subscriptions end; (d) a realm that moves to another
// account ends the old holder's subscription, and the new holder gets a new
// epoch: resuming from the old one gives a snapshot (resumed:false), never
// the old holder's changes.
func TestJambonzDeletionsEndStreams(t *testing.T) {
	dsn, my := storetest.NewJambonzDatabase(t)
	j := jambonzDB{t, my}
	sp := j.sp("carrier")
	acme := j.account(sp, "acme", "acme.example.com")
	globex := j.account(sp, "globex", "globex.example.com")
	initech := j.account(sp, "initech", "initech.example.com")
	hooli := j.account(sp, "hooli", "hooli.example.com")
	deletedKey := j.key(acme, nil)
	expiringKey := j.key(acme, nil)
	spKey := j.key(nil, sp)
	initechKey := j.key(initech, nil)

	const interval = 200 * time.Millisecond
	within := 10*interval + 3*time.Second // generous: the machine is shared
	in := startInstanceEnv(t, map[string]string{
		"PRESENCEHUB_JAMBONZ_DATABASE_URL":  dsn,
		"PRESENCEHUB_JAMBONZ_SYNC_INTERVAL": interval.String(),
	})
	in.eventually("jambonz mirror loaded", 5*time.Second, func() bool {
		c1, _ := in.status(initechKey, "GET", "/v1/Accounts/"+initech+"/RegisteredSipUsers", "")
		c2, _ := in.status(spKey, "GET", "/v1/Accounts/"+globex+"/RegisteredSipUsers", "")
		return c1 == 200 && c2 == 200
	})
	in.register("alice", "acme.example.com", "udp", time.Hour)
	in.register("bob", "globex.example.com", "udp", time.Hour)

	subscribe := func(key, id, account string) (*frameReader, client.Frame) {
		t.Helper()
		ws := dial(t, in.wsURL(), key)
		ws.send(map[string]any{"type": "subscribe", "id": id, "account_sid": account})
		return ws, ws.expect("snapshot", "", "", 2*time.Second)
	}
	wsDeleted, _ := subscribe(deletedKey, "s", acme)
	wsExpiring, _ := subscribe(expiringKey, "s", acme)
	// One connection of the SP key, subscribed to acme and to globex.
	wsSP, _ := subscribe(spKey, "acme", acme)
	wsSP.send(map[string]any{"type": "subscribe", "id": "globex", "account_sid": globex})
	globexSnap := wsSP.expect("snapshot", "", "", 2*time.Second)
	wsSP.send(map[string]any{"type": "subscribe", "id": "hooli", "account_sid": hooli})
	wsSP.expect("snapshot", "", "", 2*time.Second)
	if len(globexSnap.Users) != 1 || globexSnap.Users[0].Name != "bob" {
		t.Fatalf("globex snapshot %s: want bob", globexSnap.Raw)
	}
	in.register("carol", "globex.example.com", "udp", time.Hour)
	lastGlobex := wsSP.expect("change", "registered", "carol", 2*time.Second)

	// (a) and (b): one key row deleted, another's expires_at set two
	// seconds ahead (the mirror carries it over; the connection's timer
	// fires when it passes).
	j.exec(`DELETE FROM api_keys WHERE token = ?`, deletedKey)
	j.exec(`UPDATE api_keys SET expires_at = UTC_TIMESTAMP() + INTERVAL 2 SECOND WHERE token = ?`, expiringKey)
	if got := wsDeleted.closeCode(within); got != 4001 {
		t.Errorf("(a) stream of the key deleted in MySQL closed with %d, want 4001", got)
	}
	if code, body := in.status(deletedKey, "GET", "/v1/Accounts/"+acme+"/RegisteredSipUsers", ""); code != 401 {
		t.Errorf("(a) REST with the deleted key: %d %s, want 401", code, body)
	}
	if got := wsExpiring.closeCode(within + 2*time.Second); got != 4001 {
		t.Errorf("(b) stream of the key that expired in MySQL closed with %d, want 4001", got)
	}
	if code, body := in.status(expiringKey, "GET", "/v1/Accounts/"+acme+"/RegisteredSipUsers", ""); code != 401 {
		t.Errorf("(b) REST with the expired key: %d %s, want 401", code, body)
	}

	// (c) acme is deactivated (is_active = 0) and hooli deleted in jambonz.
	// The SP key lives on, so its connection stays; those two subscriptions
	// end.
	j.exec(`UPDATE accounts SET is_active = 0 WHERE account_sid = ?`, acme)
	j.exec(`DELETE FROM accounts WHERE account_sid = ?`, hooli)
	ended := map[string]bool{}
	for range 2 {
		fr := wsSP.next(within)
		if fr.Type != "error" || fr.Code != "unauthorized" {
			t.Fatalf("(c) after accounts were deactivated and deleted in MySQL got %s, want unauthorized errors", fr.Raw)
		}
		ended[fr.ID] = true
	}
	if !ended["acme"] || !ended["hooli"] {
		t.Errorf("(c) subscriptions ended: %v, want acme (deactivated) and hooli (deleted)", ended)
	}
	for _, sid := range []string{acme, hooli} {
		if code, _ := in.status(spKey, "GET", "/v1/Accounts/"+sid+"/RegisteredSipUsers", ""); code != 404 && code != 403 {
			t.Errorf("(c) REST for account %s gone from jambonz: %d, want 404 or 403", sid, code)
		}
	}

	// (d) globex's realm moves to initech, in one MySQL transaction.
	movedAt := time.Now().UnixMilli()
	tx, err := my.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE accounts SET sip_realm = NULL WHERE account_sid = ?`, `UPDATE accounts SET sip_realm = 'globex.example.com' WHERE account_sid = ?`} {
		sid := globex
		if strings.Contains(q, "'globex") {
			sid = initech
		}
		if _, err := tx.Exec(q, sid); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if fr := wsSP.next(within); fr.Type != "error" || fr.Code != "unauthorized" || fr.ID != "globex" {
		t.Errorf("(d) after the realm moved got %s, want an unauthorized error for the old holder's subscription globex", fr.Raw)
	}
	in.eventually("(d) initech holds the realm", within, func() bool {
		var a struct {
			Realm string `json:"sip_realm"`
		}
		in.call(initechKey, "GET", "/v1/Accounts/"+initech, nil, 200, &a)
		return a.Realm == "globex.example.com"
	})
	ws := dial(t, in.wsURL(), initechKey)
	ws.send(map[string]any{"type": "subscribe", "id": "i", "account_sid": initech,
		"since": map[string]any{"epoch": globexSnap.Epoch, "seq": lastGlobex.Seq - 1}})
	snap := ws.expect("snapshot", "", "", 2*time.Second)
	if snap.Epoch == globexSnap.Epoch {
		t.Errorf("(d) the new holder's epoch %q is the old holder's: the realm's history would cross tenants", snap.Epoch)
	}
	if snap.Resumed == nil || *snap.Resumed {
		t.Errorf("(d) resuming from the old holder's epoch: %s, want a snapshot with resumed:false", snap.Raw)
	}
	in.register("dave", "globex.example.com", "udp", time.Hour)
	if c := ws.expect("change", "registered", "dave", 2*time.Second); c.Seq != snap.Seq+1 {
		t.Errorf("(d) first change after the new holder's snapshot has seq %d, want %d", c.Seq, snap.Seq+1)
	}
	// The registration history (dashboard charts, RegistrationHistory)
	// shows the new holder its own sessions only, none of globex's.
	type session struct {
		Name      string `json:"name"`
		StartedAt int64  `json:"started_at"`
	}
	var hist struct{ Sessions []session }
	in.eventually("(d) dave in initech's registration history", within, func() bool {
		in.call(initechKey, "GET", "/v1/Accounts/"+initech+"/RegistrationHistory", nil, 200, &hist)
		return slices.ContainsFunc(hist.Sessions, func(s session) bool { return s.Name == "dave" })
	})
	for _, s := range hist.Sessions {
		if s.StartedAt < movedAt {
			t.Errorf("(d) initech's registration history holds %+v, which started before the realm moved (globex's)", s)
		}
	}
	// The SP key's connection is still up: it may see initech.
	wsSP.send(map[string]any{"type": "subscribe", "id": "initech", "account_sid": initech})
	if s := wsSP.expect("snapshot", "", "", 2*time.Second); s.Epoch != snap.Epoch {
		t.Errorf("(d) SP key's snapshot of initech has epoch %q, want %q", s.Epoch, snap.Epoch)
	}
}
