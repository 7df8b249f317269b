package main

import (
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
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

	// The stream with the account key.
	ws := dial(t, in.wsURL(), acctKey)
	ws.send(map[string]any{"type": "subscribe", "id": "s", "account_sid": acme})
	if snap := ws.expect("snapshot", "", "", 2*time.Second); len(snap.Users) != 1 || snap.Users[0].Name != "alice" {
		t.Errorf("snapshot %s: want alice", snap.Raw)
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
