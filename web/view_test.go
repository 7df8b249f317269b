package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

var t0 = time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC)

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		registered bool
		expiry     time.Time
		want       string
	}{
		{"not registered", false, t0.Add(time.Hour), StatusOffline},
		{"not registered, no expiry", false, time.Time{}, StatusOffline},
		{"unknown expiry", true, time.Time{}, StatusOnline},
		{"an hour left", true, t0.Add(time.Hour), StatusOnline},
		{"exactly 60s left", true, t0.Add(60 * time.Second), StatusOnline},
		{"59.999s left", true, t0.Add(60*time.Second - time.Millisecond), StatusExpiring},
		{"1ms left", true, t0.Add(time.Millisecond), StatusExpiring},
		{"expires now", true, t0, StatusOffline},
		{"expired", true, t0.Add(-time.Second), StatusOffline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.registered, tt.expiry, t0); got != tt.want {
				t.Errorf("Classify(%v, %v) = %q, want %q", tt.registered, tt.expiry.Sub(t0), got, tt.want)
			}
		})
	}
}

func fixtureClients() []store.Client {
	return []store.Client{
		{SID: "c0000000-0000-4000-8000-000000000001", AccountSID: acctA, Username: "alice", Password: "aXXXX", IsActive: true,
			AllowDirectAppCalling: true, AllowDirectQueueCalling: false, AllowDirectUserCalling: true},
		{SID: "c0000000-0000-4000-8000-000000000002", AccountSID: acctA, Username: "Bob", Password: "bXXXX", IsActive: false},
		{SID: "c0000000-0000-4000-8000-000000000003", AccountSID: acctA, Username: "carol", Password: "cXXXX", IsActive: true,
			AllowDirectAppCalling: true, AllowDirectQueueCalling: true, AllowDirectUserCalling: true},
	}
}

func fixtureUsers() []hub.UserView {
	return []hub.UserView{
		{Name: "alice", Contact: "sip:alice@10.0.0.1:5060", Protocol: "udp", Proxy: "sip:203.0.113.1:5060",
			ExpiryTime: t0.Add(time.Hour).UnixMilli(), Since: t0.Add(-time.Hour), EventTime: t0.Add(-time.Minute),
			LastEvent: hub.EventRefreshed, Flags: hub.Flags{App: false, Queue: true, User: true}},
		{Name: "bob", Contact: "sip:bob@10.0.0.2", Protocol: "wss", ExpiryTime: t0.Add(30 * time.Second).UnixMilli(),
			Since: t0.Add(-10 * time.Minute), EventTime: t0.Add(-10 * time.Minute), LastEvent: hub.EventRegistered},
		{Name: "dave", Contact: "sip:dave@10.0.0.4", Protocol: "tcp", Deadline: t0.Add(5 * time.Minute),
			Since: t0, EventTime: t0, LastEvent: hub.EventRegistered, Flags: hub.Flags{App: true, Queue: true, User: true}},
	}
}

func TestBuildRows(t *testing.T) {
	rows := BuildRows(fixtureClients(), fixtureUsers(), t0)
	var names []string
	for _, r := range rows {
		names = append(names, fmt.Sprintf("%s:%s", r.Name, r.Status))
	}
	// Sorted by name ignoring case; bob's registration matched client "Bob";
	// dave is registered without a client row; carol is a client that is not
	// registered.
	if got, want := strings.Join(names, " "), "alice:online Bob:expiring carol:offline dave:online"; got != want {
		t.Fatalf("rows = %s, want %s", got, want)
	}
	alice, bob, carol, dave := rows[0], rows[1], rows[2], rows[3]
	if !alice.HasClient() || !alice.Registered || alice.Protocol != "udp" || alice.Proxy != "sip:203.0.113.1:5060" {
		t.Errorf("alice = %+v", alice)
	}
	// Registered: the flags the SBC granted, not the client row's.
	if alice.App || !alice.Queue || !alice.User {
		t.Errorf("alice flags = %v %v %v, want the registration's 0 1 1", alice.App, alice.Queue, alice.User)
	}
	if !bob.HasClient() || bob.Active || bob.Protocol != "wss" {
		t.Errorf("Bob = %+v", bob)
	}
	// Not registered: the client's flags.
	if carol.Registered || !carol.App || !carol.Queue || !carol.User || !carol.Since.IsZero() {
		t.Errorf("carol = %+v", carol)
	}
	if dave.HasClient() || !dave.Active || !dave.Expiry.Equal(t0.Add(5*time.Minute)) {
		t.Errorf("dave = %+v (expiry from the hub's deadline when the SBC gave none)", dave)
	}
	if got := alice.Left(t0); got != time.Hour {
		t.Errorf("alice.Left = %v", got)
	}
	if got := carol.Left(t0); got != 0 {
		t.Errorf("carol.Left = %v", got)
	}
}

func TestCount(t *testing.T) {
	c := Count(BuildRows(fixtureClients(), fixtureUsers(), t0))
	if c.Total != 4 || c.Online != 2 || c.Expiring != 1 || c.Offline != 1 || c.Registered() != 3 {
		t.Errorf("counters = %+v", c)
	}
	if got := fmt.Sprint(c.Protocols); got != "[{tcp 1} {udp 1} {wss 1}]" {
		t.Errorf("protocols = %s", got)
	}
}

func TestParseTableQuery(t *testing.T) {
	q := ParseTableQuery(url.Values{"q": {" al "}, "status": {"expiring"}, "protocol": {"WSS"}, "sort": {"left"}, "dir": {"desc"}, "page": {"3"}})
	want := TableQuery{Q: "al", Status: StatusExpiring, Protocol: "wss", Sort: "left", Desc: true, Page: 3}
	if q != want {
		t.Errorf("q = %+v, want %+v", q, want)
	}
	if got := q.Values().Encode(); got != "dir=desc&page=3&protocol=wss&q=al&sort=left&status=expiring" {
		t.Errorf("Values = %s", got)
	}
	// Junk is ignored, never an error.
	q = ParseTableQuery(url.Values{"status": {"bogus"}, "sort": {"password"}, "page": {"-4"}})
	if q != (TableQuery{Sort: "name", Page: 1}) {
		t.Errorf("junk query = %+v", q)
	}
	if got := q.Values().Encode(); got != "" {
		t.Errorf("default Values = %q", got)
	}
}

func TestApplyQuery(t *testing.T) {
	rows := BuildRows(fixtureClients(), fixtureUsers(), t0)
	names := func(tb Table) string {
		var s []string
		for _, r := range tb.Rows {
			s = append(s, r.Name)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		q    TableQuery
		want string
	}{
		{TableQuery{Sort: "name"}, "alice,Bob,carol,dave"},
		{TableQuery{Sort: "name", Desc: true}, "dave,carol,Bob,alice"},
		{TableQuery{Q: "B", Sort: "name"}, "Bob"},
		{TableQuery{Status: StatusOnline, Sort: "name"}, "alice,dave"},
		{TableQuery{Status: StatusOffline, Sort: "name"}, "carol"},
		{TableQuery{Protocol: "wss", Sort: "name"}, "Bob"},
		{TableQuery{Sort: "left"}, "carol,Bob,dave,alice"},
		{TableQuery{Sort: "status"}, "alice,dave,Bob,carol"},
		{TableQuery{Sort: "protocol"}, "carol,dave,alice,Bob"},
		{TableQuery{Sort: "app", Desc: true}, "dave,carol,Bob,alice"},
		{TableQuery{Sort: "since"}, "carol,alice,Bob,dave"},
	}
	for _, tt := range tests {
		if got := names(ApplyQuery(rows, tt.q, t0)); got != tt.want {
			t.Errorf("ApplyQuery(%+v) = %s, want %s", tt.q, got, tt.want)
		}
	}
}

func TestApplyQueryPages(t *testing.T) {
	var clients []store.Client
	for i := range 10_000 {
		clients = append(clients, store.Client{SID: fmt.Sprintf("c%05d", i), Username: fmt.Sprintf("user%05d", i)})
	}
	rows := BuildRows(clients, nil, t0)
	tb := ApplyQuery(rows, TableQuery{Sort: "name", Page: 3}, t0)
	if tb.Matching != 10_000 || tb.Pages != 100 || tb.Page != 3 || len(tb.Rows) != PageSize || tb.Rows[0].Name != "user00200" {
		t.Errorf("page 3: matching %d pages %d page %d rows %d first %s", tb.Matching, tb.Pages, tb.Page, len(tb.Rows), tb.Rows[0].Name)
	}
	// Past the end: the last page.
	tb = ApplyQuery(rows, TableQuery{Sort: "name", Page: 1000}, t0)
	if tb.Page != 100 || tb.Rows[len(tb.Rows)-1].Name != "user09999" {
		t.Errorf("past the end: page %d", tb.Page)
	}
	tb = ApplyQuery(rows, TableQuery{Q: "nobody", Sort: "name"}, t0)
	if tb.Matching != 0 || tb.Pages != 1 || tb.Page != 1 || len(tb.Rows) != 0 {
		t.Errorf("no match: %+v", tb)
	}
}

func TestBuildFeed(t *testing.T) {
	f := BuildFeed([]*hub.Change{
		{Seq: 7, Event: hub.EventExpired, User: "bob", Time: t0},
		nil,
		{Seq: 6, Event: hub.EventRegistered, User: "alice", Time: t0.Add(-time.Second)},
	})
	if len(f) != 2 || f[0].Seq != 7 || f[0].Event != "expired" || f[1].User != "alice" {
		t.Errorf("feed = %+v", f)
	}
}

func TestBuildOverview(t *testing.T) {
	accounts := []store.Account{
		{SID: acctB, Name: "zeta", SIPRealm: "b.example"},
		{SID: acctA, Name: "Alpha", SIPRealm: "a.example"},
		{SID: acctC, Name: "no realm"},
	}
	clients := append(fixtureClients(), store.Client{AccountSID: acctB, Username: "x"})
	stats := func(realm string) hub.Stats {
		if realm == "" {
			t.Error("stats asked for the empty realm")
		}
		return hub.Stats{Online: len(realm), ChangesLastMinute: 2}
	}
	got := BuildOverview(accounts, clients, stats)
	want := []OverviewRow{
		{SID: acctA, Name: "Alpha", Realm: "a.example", Online: 9, Clients: 3, ChangesLastMinute: 2},
		{SID: acctC, Name: "no realm"},
		{SID: acctB, Name: "zeta", Realm: "b.example", Online: 9, Clients: 1, ChangesLastMinute: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("overview =\n%+v\nwant\n%+v", got, want)
	}
}

func TestBuildPageData(t *testing.T) {
	a := store.Account{SID: acctA, SIPRealm: "a.example"}
	st := hub.Stats{Epoch: "ep0ch", Seq: 42, Series: []int{1, 2}}
	d := buildPageData(a, fixtureClients(), fixtureUsers(), st, TableQuery{Sort: "name", Page: 1}, t0)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		`"account_sid":"` + acctA + `"`, `"epoch":"ep0ch"`, `"seq":42`, `"now":` + fmt.Sprint(t0.UnixMilli()),
		`"name":"alice","contact":"sip:alice@10.0.0.1:5060","expiryTime":` + fmt.Sprint(t0.Add(time.Hour).UnixMilli()),
		`"protocol":"udp","allow_direct_app_calling":0,"allow_direct_queue_calling":1,"allow_direct_user_calling":1,"registered_status":"active","proxy":"sip:203.0.113.1:5060"`,
		`"name":"bob","contact":"sip:bob@10.0.0.2","expiryTime":`, `"proxy":null`,
		`"last_event":"refreshed"`, `"flapping":[]`, `"expiring_within_ms":60000`,
		`{"name":"Bob","sid":"c0000000-0000-4000-8000-000000000002","active":false,"app":false,"queue":false,"user":false}`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("page data lacks %s\n%s", want, s)
		}
	}
	if strings.Contains(s, "XXXX") || strings.Contains(s, "password") {
		t.Errorf("page data carries passwords: %s", s)
	}
	// Empty realm: never null arrays for the JS.
	d = buildPageData(store.Account{SID: acctC}, nil, nil, hub.Stats{}, TableQuery{}, t0)
	b, _ = json.Marshal(d)
	if !strings.Contains(string(b), `"users":[],"clients":[],"flapping":[]`) {
		t.Errorf("empty page data = %s", b)
	}
}

func TestStoreFormError(t *testing.T) {
	const fallback = "The server did not accept these values."
	tests := []struct {
		name       string
		editing    bool
		err        error
		wantStatus int
		wantErrors map[string]string
	}{
		{
			"invalid password goes next to the password", false,
			&store.Error{Kind: store.KindInvalid, Field: "password", Message: "password is longer than 1024 bytes"},
			http.StatusBadRequest, map[string]string{"password": "password is longer than 1024 bytes"},
		},
		{
			"invalid username goes next to the username", false,
			fmt.Errorf("create client: %w", &store.Error{Kind: store.KindInvalid, Field: "username", Message: "username must not contain '@'"}),
			http.StatusBadRequest, map[string]string{"username": "username must not contain '@'"},
		},
		{
			"the edit form has no username field", true,
			&store.Error{Kind: store.KindInvalid, Field: "username", Message: "username must not contain '@'"},
			http.StatusBadRequest, map[string]string{"": "username must not contain '@'"},
		},
		{
			"the field decides, not the words of the message", false,
			&store.Error{Kind: store.KindInvalid, Field: "account_sid", Message: "unknown account (username and password not checked)"},
			http.StatusBadRequest, map[string]string{"": "unknown account (username and password not checked)"},
		},
		{
			"an untyped invalid error gets the form-wide fallback", false,
			fmt.Errorf("password: %w", store.ErrInvalid),
			http.StatusBadRequest, map[string]string{"": fallback},
		},
		{
			"conflict is a duplicate username", false,
			&store.Error{Kind: store.KindConflict, Field: "username", Message: "the client's username already exists"},
			http.StatusConflict, map[string]string{"username": "A SIP client with this username already exists."},
		},
		{"unexpected", false, errors.New("boom"), 0, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newClientForm("acct")
			if tt.editing {
				f.ClientSID = "client"
			}
			status, ok := storeFormError(&f, tt.err)
			if status != tt.wantStatus || ok != (tt.wantStatus != 0) {
				t.Errorf("status, ok = %d, %v; want %d, %v", status, ok, tt.wantStatus, tt.wantStatus != 0)
			}
			if !reflect.DeepEqual(f.Errors, tt.wantErrors) {
				t.Errorf("form errors = %v, want %v", f.Errors, tt.wantErrors)
			}
		})
	}
}

func TestSafeNext(t *testing.T) {
	tests := map[string]string{
		"":                     "/",
		"/":                    "/",
		"/accounts/x?q=a":      "/accounts/x?q=a",
		"//evil.example/":      "/",
		"https://evil.example": "/",
		"/\\evil.example":      "/",
		"/a\r\nLocation: x":    "/",
		"accounts":             "/",
	}
	for in, want := range tests {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	tests := map[time.Duration]string{
		-time.Second: "0s", 0: "0s", 999 * time.Millisecond: "0s", 45 * time.Second: "45s",
		125 * time.Second: "2m 05s", 3*time.Hour + 7*time.Minute + 9*time.Second: "3h 07m",
	}
	for d, want := range tests {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestBuildRowsFoldsLikeTheHub: a client and a registration are one row when
// hub.Fold says they are the same name, and only then.
func TestBuildRowsFoldsLikeTheHub(t *testing.T) {
	clients := []store.Client{{Username: "Alice", SID: "c1"}, {Username: "ZOË", SID: "c2"}}
	users := []hub.UserView{{Name: "alice"}, {Name: "zoë"}}
	var got []string
	for _, r := range BuildRows(clients, users, t0) {
		got = append(got, fmt.Sprintf("%s/%v/%v", r.Name, r.HasClient(), r.Registered))
	}
	want := []string{"Alice/true/true", "ZOË/true/false", "zoë/false/true"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows = %v, want %v", got, want)
	}
}
