package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// TestTenantIsolation checks every endpoint as every kind of caller.
func TestTenantIsolation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	n := 0
	uniq := func(prefix string) string { n++; return fmt.Sprintf("%s%d", prefix, n) }
	// Destructive requests get a fresh target for every caller.
	freshClient := func() string {
		return must(f.db.CreateClient(ctx, store.Client{AccountSID: f.a1.SID, Username: uniq("tmp")}, "pw")).SID
	}
	freshAccount := func() string {
		return must(f.db.CreateAccount(ctx, store.Account{Name: uniq("acct"), ServiceProviderSID: f.spA.SID, SIPRealm: uniq("r") + ".example.com"})).SID
	}
	freshSP := func() string {
		return must(f.db.CreateServiceProvider(ctx, store.ServiceProvider{Name: uniq("sp")})).SID
	}
	freshKey := func() string {
		return must2(f.db.CreateAPIKey(ctx, store.APIKey{AccountSID: f.a1.SID})).SID
	}
	keyA1 := must2(f.db.CreateAPIKey(ctx, store.APIKey{AccountSID: f.a1.SID}))
	a1 := f.a1.SID

	type want map[string]int
	// allow/deny templates: admin, SP A and A1's own key may; B1's key may not.
	tests := []struct {
		name   string
		method string
		path   func() string
		body   func() any
		want   want
	}{
		{"list registered", "GET", func() string { return "/v1/Accounts/" + a1 + "/RegisteredSipUsers" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"details registered", "POST", func() string { return "/v1/Accounts/" + a1 + "/RegisteredSipUsers" }, func() any { return []string{"alice"} },
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"one registered", "GET", func() string { return "/v1/Accounts/" + a1 + "/RegisteredSipUsers/alice" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"registration history", "GET", func() string { return "/v1/Accounts/" + a1 + "/RegistrationHistory" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"registration history of a user", "GET", func() string { return "/v1/Accounts/" + a1 + "/RegistrationHistory?user=alice" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"presence", "GET", func() string { return "/v1/Accounts/" + a1 + "/Presence/alice" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"list clients", "GET", func() string { return "/v1/Clients" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 200}},
		{"list clients of an account", "GET", func() string { return "/v1/Clients?account_sid=" + a1 }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"get client", "GET", func() string { return "/v1/Clients/" + f.clientA1.SID }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 404}},
		{"create client", "POST", func() string { return "/v1/Clients" }, func() any { return map[string]any{"account_sid": a1, "username": uniq("new"), "password": "pw"} },
			want{asAdmin: 201, asSP: 201, asOwn: 201, asOther: 403}},
		{"update client", "PUT", func() string { return "/v1/Clients/" + f.clientA1.SID }, func() any { return map[string]any{"is_active": 1} },
			want{asAdmin: 204, asSP: 204, asOwn: 204, asOther: 404}},
		{"delete client", "DELETE", func() string { return "/v1/Clients/" + freshClient() }, nil,
			want{asAdmin: 204, asSP: 204, asOwn: 204, asOther: 404}},
		{"list accounts", "GET", func() string { return "/v1/Accounts" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 200}},
		{"get account", "GET", func() string { return "/v1/Accounts/" + a1 }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"create account", "POST", func() string { return "/v1/Accounts" }, func() any {
			return map[string]any{"name": uniq("n"), "service_provider_sid": f.spA.SID, "sip_realm": uniq("c") + ".example.com"}
		}, want{asAdmin: 201, asSP: 201, asOwn: 403, asOther: 403}},
		{"update account", "PUT", func() string { return "/v1/Accounts/" + a1 }, func() any { return map[string]any{"name": "A1"} },
			want{asAdmin: 204, asSP: 204, asOwn: 204, asOther: 403}},
		{"delete account", "DELETE", func() string { return "/v1/Accounts/" + freshAccount() }, nil,
			want{asAdmin: 204, asSP: 204, asOwn: 403, asOther: 403}},
		{"list service providers", "GET", func() string { return "/v1/ServiceProviders" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 200}},
		{"get service provider", "GET", func() string { return "/v1/ServiceProviders/" + f.spA.SID }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 403}},
		{"create service provider", "POST", func() string { return "/v1/ServiceProviders" }, func() any { return map[string]any{"name": uniq("sp")} },
			want{asAdmin: 201, asSP: 403, asOwn: 403, asOther: 403}},
		{"update service provider", "PUT", func() string { return "/v1/ServiceProviders/" + f.spA.SID }, func() any { return map[string]any{"description": "d"} },
			want{asAdmin: 204, asSP: 204, asOwn: 403, asOther: 403}},
		{"delete service provider", "DELETE", func() string { return "/v1/ServiceProviders/" + freshSP() }, nil,
			want{asAdmin: 204, asSP: 403, asOwn: 403, asOther: 403}},
		{"delete own service provider", "DELETE", func() string { return "/v1/ServiceProviders/" + f.spB.SID }, nil,
			want{asAdmin: 409, asSP: 403, asOwn: 403, asOther: 403}},
		{"delete api key", "DELETE", func() string { return "/v1/ApiKeys/" + freshKey() }, nil,
			want{asAdmin: 204, asSP: 204, asOwn: 204, asOther: 404}},
		{"list api keys", "GET", func() string { return "/v1/ApiKeys" }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 200}},
		{"create account api key", "POST", func() string { return "/v1/ApiKeys" }, func() any { return map[string]any{"account_sid": a1} },
			want{asAdmin: 201, asSP: 201, asOwn: 201, asOther: 403}},
		{"get api key", "GET", func() string { return "/v1/ApiKeys/" + keyA1.SID }, nil,
			want{asAdmin: 200, asSP: 200, asOwn: 200, asOther: 404}},
		{"stream ticket", "POST", func() string { return "/v1/StreamTickets" }, nil,
			want{asAdmin: 201, asSP: 201, asOwn: 201, asOther: 201}},
	}
	for _, tt := range tests {
		for _, who := range principals {
			t.Run(tt.name+"/"+who, func(t *testing.T) {
				wantStatus, ok := tt.want[who]
				if !ok { // no, bad and expired tokens are always refused
					wantStatus = 401
				}
				var body any
				if tt.body != nil {
					body = tt.body()
				}
				r := f.do(who, tt.method, tt.path(), body)
				if r.status != wantStatus {
					t.Fatalf("%s %s as %s: got %d %s, want %d", tt.method, tt.path(), who, r.status, r.body, wantStatus)
				}
				switch {
				case r.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer"):
					t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", r.header.Get("WWW-Authenticate"))
				case r.status == 403 && !strings.Contains(string(r.body), "insufficient permissions"):
					t.Errorf("403 body %s, want {\"msg\":\"insufficient permissions\"}", r.body)
				}
			})
		}
	}

	t.Run("client list shows only the caller's tenants", func(t *testing.T) {
		for who, wantVisible := range map[string]bool{asAdmin: true, asSP: true, asOwn: true, asOther: false} {
			var cs []map[string]any
			f.do(who, "GET", "/v1/Clients", nil).json(t, &cs)
			found := false
			for _, c := range cs {
				if c["client_sid"] == f.clientA1.SID {
					found = true
				}
				if who == asOther && c["account_sid"] != f.b1.SID {
					t.Errorf("B1's key sees a client of account %v", c["account_sid"])
				}
			}
			if found != wantVisible {
				t.Errorf("as %s: client of A1 visible = %v, want %v", who, found, wantVisible)
			}
		}
	})
}

func must2[A, B any](a A, _ B, err error) A {
	if err != nil {
		panic(err)
	}
	return a
}

// TestRegisteredSipUsers checks the three jambonz endpoints' shapes.
func TestRegisteredSipUsers(t *testing.T) {
	f := newFixture(t)
	f.register("bob", "a1.example.com", "udp", hub.Flags{App: true, Queue: false, User: true})
	f.register("carol", "A1.Example.com", "wss", hub.Flags{App: false, Queue: true, User: false})
	f.register("dave", "a2.example.com", "tcp", hub.Flags{})      // another account
	f.register("eve", "xa1.example.com", "tcp", hub.Flags{})      // suffix of the realm: jambonz would match it
	f.register("frank", "sub.a1.example.com", "tcp", hub.Flags{}) // subdomain: not the account
	f.hub.SetClients("a1.example.com", map[string]hub.Flags{"alice": {App: true, Queue: false, User: true}})
	base := "/v1/Accounts/" + f.a1.SID + "/RegisteredSipUsers"

	var list []string
	f.do(asOwn, "GET", base, nil).json(t, &list)
	if want := []string{"bob@a1.example.com", "carol@a1.example.com"}; !reflect.DeepEqual(list, want) {
		t.Errorf("GET list = %q, want %q (sorted, exact realm)", list, want)
	}

	fields := []string{"allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling", "contact", "expiryTime", "name", "protocol", "proxy", "registered_status"}
	var details []map[string]any
	r := f.do(asOwn, "POST", base, []string{"carol", "alice", "nobody", "bob", "carol"})
	r.json(t, &details)
	if len(details) != 5 {
		t.Fatalf("POST with 5 names gave %d objects: %s", len(details), r.body)
	}
	for i, wantName := range []string{"carol", "alice", "nobody", "bob", "carol"} {
		d := details[i]
		if got := keys(d); !reflect.DeepEqual(got, fields) {
			t.Errorf("object %d has fields %v, want exactly %v", i, got, fields)
		}
		if d["name"] != wantName {
			t.Errorf("object %d name = %v, want %v (input order kept)", i, d["name"], wantName)
		}
	}
	check := func(d map[string]any, status string, app, queue, user float64) {
		t.Helper()
		if d["registered_status"] != status || d["allow_direct_app_calling"] != app || d["allow_direct_queue_calling"] != queue || d["allow_direct_user_calling"] != user {
			t.Errorf("%v: got status %v flags %v/%v/%v, want %s %v/%v/%v", d["name"], d["registered_status"],
				d["allow_direct_app_calling"], d["allow_direct_queue_calling"], d["allow_direct_user_calling"], status, app, queue, user)
		}
	}
	check(details[0], "active", 0, 1, 0)   // carol: flags from the registration
	check(details[1], "inactive", 1, 0, 1) // alice: not registered, flags from her client row
	check(details[2], "inactive", 0, 0, 0) // nobody: no client row
	if details[1]["contact"] != nil || details[1]["protocol"] != nil || details[1]["proxy"] != nil || details[1]["expiryTime"] != 0.0 {
		t.Errorf("inactive user must have null contact/protocol/proxy and expiryTime 0: %v", details[1])
	}
	if details[3]["proxy"] != "sip:203.0.113.7:40123" || details[3]["protocol"] != "udp" {
		t.Errorf("bob: proxy/protocol = %v/%v, want the registration's", details[3]["proxy"], details[3]["protocol"])
	}
	for _, leak := range []string{"sbcAddress", "privateSbcAddress", "callHook", "hooks.example.com", "10.0.0.1"} {
		if strings.Contains(string(r.body), leak) {
			t.Errorf("POST answer leaks %q: %s", leak, r.body)
		}
	}

	for _, body := range []any{nil, "", "[]", "null", "  \n"} {
		var all []map[string]any
		r := f.do(asOwn, "POST", base, body)
		r.json(t, &all)
		if len(all) != 2 || all[0]["name"] != "bob" || all[1]["name"] != "carol" || all[0]["registered_status"] != "active" {
			t.Errorf("POST with body %q: got %s, want bob and carol, active, sorted", body, r.body)
		}
	}

	var one map[string]any
	f.do(asOwn, "GET", base+"/bob", nil).json(t, &one)
	if keys(one)[0] != fields[0] || len(one) != 9 || one["registered_status"] != "active" || one["name"] != "bob" {
		t.Errorf("GET single bob = %v, want the 9 fields, active", one)
	}
	f.do(asOwn, "GET", base+"/ghost", nil).json(t, &one)
	if one["registered_status"] != "inactive" || one["contact"] != nil {
		t.Errorf("GET single of an unknown user = %v, want inactive with null contact", one)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestBadInput: every client mistake is a 4xx with a {"msg"} body, never a 500.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	base := "/v1/Accounts/" + f.a1.SID + "/RegisteredSipUsers"
	names := make([]string, 10001)
	for i := range names {
		names[i] = fmt.Sprintf("u%d", i)
	}
	huge := `["` + strings.Repeat("x", 2<<20) + `"]`
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		want   int
	}{
		{"malformed account sid", "GET", "/v1/Accounts/not-a-uuid/RegisteredSipUsers", nil, 400},
		{"sql in account sid", "GET", "/v1/Accounts/1'%20or%20'1'='1/RegisteredSipUsers", nil, 400},
		{"unknown account sid", "GET", "/v1/Accounts/00000000-0000-4000-8000-000000000000/RegisteredSipUsers", nil, 404},
		{"malformed client sid", "GET", "/v1/Clients/xyz", nil, 400},
		{"unknown client sid", "GET", "/v1/Clients/00000000-0000-4000-8000-000000000000", nil, 404},
		{"malformed sp sid", "GET", "/v1/ServiceProviders/123", nil, 400},
		{"malformed key sid", "DELETE", "/v1/ApiKeys/123", nil, 400},
		{"object instead of array", "POST", base, `{}`, 400},
		{"numbers instead of names", "POST", base, `[1,2]`, 400},
		{"string instead of array", "POST", base, `"alice"`, 400},
		{"truncated JSON", "POST", base, `["alice"`, 400},
		{"not JSON", "POST", base, `alice,bob`, 400},
		{"nested arrays", "POST", base, `[["a"]]`, 400},
		{"too many names", "POST", base, names, 400},
		{"body over 1 MiB", "POST", base, huge, 400},
		{"name too long", "POST", base, []string{strings.Repeat("n", 300)}, 400},
		{"client: unknown field", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": "x1", "color": "red"}, 400},
		{"client: wrong type", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": 42}, 400},
		{"client: bad flag", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": "x2", "is_active": "yes"}, 400},
		{"client: missing username", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID}, 400},
		{"client: missing account", "POST", "/v1/Clients", map[string]any{"username": "x3"}, 400},
		{"client: malformed account", "POST", "/v1/Clients", map[string]any{"account_sid": "nope", "username": "x4"}, 400},
		{"client: @ in username", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": "a@b"}, 400},
		{"client: duplicate username (other case)", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": "ALICE"}, 409},
		{"client: empty body", "POST", "/v1/Clients", "", 400},
		{"client: client_sid is immutable", "PUT", "/v1/Clients/" + f.clientA1.SID, map[string]any{"client_sid": "00000000-0000-4000-8000-000000000000"}, 400},
		{"account: bad realm", "POST", "/v1/Accounts", map[string]any{"name": "x", "service_provider_sid": f.spA.SID, "sip_realm": "not a realm!"}, 400},
		{"account: duplicate realm", "POST", "/v1/Accounts", map[string]any{"name": "x", "service_provider_sid": f.spA.SID, "sip_realm": "A1.example.com"}, 409},
		{"account: unknown sp", "POST", "/v1/Accounts", map[string]any{"name": "x", "service_provider_sid": "00000000-0000-4000-8000-000000000000", "sip_realm": "zz.example.com"}, 400},
		{"api key: negative expiry", "POST", "/v1/ApiKeys", map[string]any{"expiry_secs": -5}, 400},
		{"api key: expiry not a number", "POST", "/v1/ApiKeys", map[string]any{"expiry_secs": "soon"}, 400},
		{"unknown endpoint", "GET", "/v1/Nope", nil, 404},
		{"wrong method", "PATCH", "/v1/Clients", nil, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(asAdmin, tt.method, tt.path, tt.body)
			if r.status != tt.want {
				t.Fatalf("%s %s: got %d %s, want %d", tt.method, tt.path, r.status, truncate(r.body), tt.want)
			}
			var m struct{ Msg string }
			if err := json.Unmarshal(r.body, &m); err != nil || m.Msg == "" {
				t.Errorf("body %s is not {\"msg\": …}", truncate(r.body))
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
		})
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

func TestClientsCRUD(t *testing.T) {
	f := newFixture(t)
	var c map[string]any
	f.do(asOwn, "GET", "/v1/Clients/"+f.clientA1.SID, nil).json(t, &c)
	want := map[string]any{"client_sid": f.clientA1.SID, "account_sid": f.a1.SID, "username": "alice", "password": "sXXXXX",
		"is_active": 1.0, "allow_direct_app_calling": 1.0, "allow_direct_queue_calling": 0.0, "allow_direct_user_calling": 1.0}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("GET client = %v\nwant %v", c, want)
	}
	r := f.do(asOwn, "POST", "/v1/Clients", map[string]any{"username": "zoe", "password": "hunter2", "allow_direct_queue_calling": false})
	var created struct{ Sid string }
	r.json(t, &created)
	if r.status != http.StatusCreated || created.Sid == "" {
		t.Fatalf("POST client: %d %s, want 201 {\"sid\"}", r.status, r.body)
	}
	if r := f.do(asOwn, "PUT", "/v1/Clients/"+created.Sid, map[string]any{"is_active": false, "password": "new-pass"}); r.status != 204 {
		t.Fatalf("PUT client: %d %s", r.status, r.body)
	}
	f.do(asOwn, "GET", "/v1/Clients/"+created.Sid, nil).json(t, &c)
	if c["is_active"] != 0.0 || c["password"] != "nXXXXXXX" || c["allow_direct_queue_calling"] != 0.0 || c["allow_direct_app_calling"] != 1.0 {
		t.Errorf("after PUT: %v, want inactive, password nXXXXXXX, queue 0, app 1", c)
	}
	if r := f.do(asOwn, "DELETE", "/v1/Clients/"+created.Sid, nil); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if r := f.do(asOwn, "GET", "/v1/Clients/"+created.Sid, nil); r.status != 404 {
		t.Errorf("GET after DELETE: %d, want 404", r.status)
	}
}

func TestHealth(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := f.do(asNone, "GET", p, nil); r.status != 200 {
			t.Errorf("GET %s = %d %s, want 200", p, r.status, r.body)
		}
	}
	r := f.do(asNone, "GET", "/metrics", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "presencehub_stream_connections") {
		t.Errorf("GET /metrics = %d, want 200 with stream metrics: %s", r.status, truncate(r.body))
	}
}

// TestClientThatDoesNotDecrypt is issue #9 finding 12: a SIP client whose
// stored password does not decrypt (written with another key, or damaged)
// is listed with "password": null and "decrypt_failed": true; the list and
// the other clients are answered as usual, never a 500.
func TestClientThatDoesNotDecrypt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bob := must(f.db.CreateClient(ctx, store.Client{AccountSID: f.a1.SID, Username: "bob", IsActive: true}, "bobs-pw"))
	conn, err := pgx.Connect(ctx, f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE clients SET password = '\x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'::bytea WHERE client_sid = $1`, bob.SID); err != nil {
		t.Fatal(err)
	}
	r := f.do(asOwn, "GET", "/v1/Clients?account_sid="+f.a1.SID, nil)
	if r.status != 200 {
		t.Fatalf("GET /v1/Clients: %d %s, want 200", r.status, r.body)
	}
	var cs []map[string]any
	r.json(t, &cs)
	seen := 0
	for _, c := range cs {
		switch c["username"] {
		case "bob":
			seen++
			if pw, ok := c["password"]; !ok || pw != nil || c["decrypt_failed"] != true {
				t.Errorf("bob: %v, want password null and decrypt_failed true", c)
			}
		case "alice":
			seen++
			if _, ok := c["decrypt_failed"]; ok || c["password"] != "sXXXXX" {
				t.Errorf("alice: %v, want password sXXXXX and no decrypt_failed", c)
			}
		}
	}
	if seen != 2 {
		t.Errorf("GET /v1/Clients = %s, want alice and bob", r.body)
	}
	if r := f.do(asOwn, "GET", "/v1/Clients/"+bob.SID, nil); r.status != 200 || !strings.Contains(string(r.body), `"decrypt_failed":true`) {
		t.Errorf("GET bob: %d %s, want 200 with decrypt_failed", r.status, r.body)
	}
}
