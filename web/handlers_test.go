package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/static"
	"github.com/presencehub/presencehub/store"
)

// The real types satisfy the interfaces the dashboard declares.
var (
	_ Presence = (*hub.Hub)(nil)
	_ Sessions = (*store.DB)(nil)
	_ Accounts = (*store.DB)(nil)
	_ Clients  = (*store.DB)(nil)
)

type env struct {
	t    *testing.T
	dir  *fakeDB
	pres *fakePresence
	h    http.Handler
	logs *bytes.Buffer
}

func newEnv(t *testing.T, opts ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, dir: newFakeDB(), logs: &bytes.Buffer{}}
	e.pres = &fakePresence{
		users: map[string][]hub.UserView{"a.example": fixtureUsers()},
		stats: map[string]hub.Stats{"a.example": {Online: 3, Seq: 17, ChangesLastMinute: 5,
			Protocols: map[string]int{"udp": 1, "wss": 1, "tcp": 1}, Series: append(make([]int, 59), 3)}},
		recent: map[string][]*hub.Change{"a.example": {
			{Realm: "a.example", Seq: 17, Event: hub.EventRegistered, User: "dave", Time: t0},
			{Realm: "a.example", Seq: 16, Event: hub.EventRefreshed, User: "alice", Time: t0.Add(-time.Minute)},
		}},
	}
	o := Options{Presence: e.pres, Sessions: e.dir, Accounts: e.dir, Clients: e.dir, Now: func() time.Time { return t0 },
		Logger: slog.New(slog.NewTextHandler(e.logs, nil))}
	for _, f := range opts {
		f(&o)
	}
	e.h = New(o)
	return e
}

// session signs in directly (a session in the fake store) and returns its token.
func (e *env) session(key string) string {
	p, err := e.dir.Authenticate(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, _ := e.dir.CreateSession(context.Background(), p, time.Hour)
	return tok
}

func (e *env) do(method, target string, body url.Values, sessionToken string, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var r *http.Request
	if body != nil {
		r = httptest.NewRequest(method, target, strings.NewReader(body.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	if sessionToken != "" {
		r.AddCookie(&http.Cookie{Name: store.SessionCookie, Value: sessionToken})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code >= 500 {
		e.t.Errorf("%s %s: %d\n%s", method, target, w.Code, e.logs)
	}
	return w
}

// post sends a form with the session's CSRF token.
func (e *env) post(target string, form url.Values, sessionToken string) *httptest.ResponseRecorder {
	e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set(csrfField, csrfToken(sessionToken))
	return e.do(http.MethodPost, target, form, sessionToken)
}

func wantStatus(t *testing.T, w *httptest.ResponseRecorder, code int) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("status = %d, want %d\n%s", w.Code, code, w.Body.String())
	}
}

func wantRedirect(t *testing.T, w *httptest.ResponseRecorder, to string) {
	t.Helper()
	if w.Code != http.StatusSeeOther && w.Code != http.StatusFound {
		t.Fatalf("status = %d, want a redirect to %s\n%s", w.Code, to, w.Body.String())
	}
	if got := w.Header().Get("Location"); got != to {
		t.Fatalf("redirect to %q, want %q", got, to)
	}
}

// cookieNamed finds a cookie by name, with or without the __Host- prefix.
func cookieNamed(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name || c.Name == store.SecureCookiePrefix+name {
			return c
		}
	}
	return nil
}

func TestSignedOutHomeRedirectsToSignIn(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodGet, "/", nil, "")
	wantRedirect(t, w, "/signin")

	w = e.do(http.MethodGet, "/signin", nil, "")
	wantStatus(t, w, http.StatusOK)
	doc := parseHTML(t, w.Body.String())
	form := oneByTestID(t, doc, "signin-form")
	if attrVal(form, "method") != "post" || attrVal(form, "action") != "/signin" || inputNamed(form, "api_key") == nil {
		t.Fatalf("sign-in form = %s", renderNode(form))
	}
	c := cookieNamed(w, signInCookie)
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || attrVal(inputNamed(form, csrfField), "value") != c.Value {
		t.Fatalf("sign-in CSRF cookie = %+v", c)
	}
	assertCSPClean(t, doc)

	// Any other page: back to it after signing in.
	w = e.do(http.MethodGet, "/accounts/"+acctA+"?q=al", nil, "")
	wantRedirect(t, w, "/signin?next="+url.QueryEscape("/accounts/"+acctA+"?q=al"))
	// A session that expired is cleared.
	w = e.do(http.MethodGet, "/", nil, "gone")
	wantRedirect(t, w, "/signin")
	if c := cookieNamed(w, store.SessionCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("stale session cookie not cleared: %+v", c)
	}
}

// signIn walks the real form: GET for the token, POST with the key.
func (e *env) signIn(key, next string, secureReq bool) *httptest.ResponseRecorder {
	e.t.Helper()
	target := "/signin"
	if secureReq {
		target = "https://dash.example/signin"
	}
	w := e.do(http.MethodGet, target, nil, "")
	c := cookieNamed(w, signInCookie)
	form := url.Values{"api_key": {key}, csrfField: {c.Value}}
	if next != "" {
		form.Set("next", next)
	}
	r := httptest.NewRequest(http.MethodPost, "/signin", strings.NewReader(form.Encode()))
	if secureReq {
		r = httptest.NewRequest(http.MethodPost, "https://dash.example/signin", strings.NewReader(form.Encode()))
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(c)
	w = httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func TestSignInSetsSessionCookie(t *testing.T) {
	for _, tt := range []struct {
		name              string
		secureOpt, tlsReq bool
	}{{"plain", false, false}, {"Options.Secure", true, false}, {"over TLS", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Secure = tt.secureOpt; o.SessionTTL = 2 * time.Hour })
			w := e.signIn("  sp-key ", "", tt.tlsReq)
			wantRedirect(t, w, "/")
			c := cookieNamed(w, store.SessionCookie)
			if c == nil {
				t.Fatal("no session cookie")
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 7200 {
				t.Errorf("cookie = %+v", c)
			}
			if c.Secure != (tt.secureOpt || tt.tlsReq) {
				t.Errorf("Secure = %v", c.Secure)
			}
			wantName := store.SessionCookie
			if c.Secure {
				wantName = store.SecureCookiePrefix + store.SessionCookie
			}
			if c.Name != wantName {
				t.Errorf("cookie name = %q, want %q", c.Name, wantName)
			}
			p, ok := e.dir.sessions[c.Value]
			if !ok || p.KeySID != "k-sp" || e.dir.ttls[c.Value] != 2*time.Hour {
				t.Errorf("session = %+v, ttl %v", p, e.dir.ttls[c.Value])
			}
			if strings.Contains(c.Value, "sp-key") || strings.Contains(w.Body.String(), "sp-key") {
				t.Errorf("the API key leaks into the response")
			}
			if sc := cookieNamed(w, signInCookie); sc == nil || sc.MaxAge >= 0 {
				t.Errorf("sign-in token cookie not cleared")
			}
		})
	}
}

func TestSignInDefaultTTLAndKeyExpiry(t *testing.T) {
	e := newEnv(t)
	w := e.signIn("admin-key", "/accounts/"+acctB, false)
	wantRedirect(t, w, "/accounts/"+acctB)
	if ttl := e.dir.ttls[cookieNamed(w, store.SessionCookie).Value]; ttl != 12*time.Hour {
		t.Errorf("default ttl = %v", ttl)
	}
	// A key expiring in 10 minutes makes a 10-minute session.
	exp := t0.Add(10 * time.Minute)
	e.dir.keys["short-key"] = store.Principal{KeySID: "k-short", Scope: store.ScopeAdmin, ExpiresAt: &exp}
	w = e.signIn("short-key", "//evil.example", false)
	wantRedirect(t, w, "/")
	if c := cookieNamed(w, store.SessionCookie); c.MaxAge != 600 || e.dir.ttls[c.Value] != 10*time.Minute {
		t.Errorf("session of a short key: cookie %d s, ttl %v", c.MaxAge, e.dir.ttls[c.Value])
	}
}

func TestSignInBadKey(t *testing.T) {
	e := newEnv(t)
	w := e.signIn("wrong-key", "", false)
	wantStatus(t, w, http.StatusUnauthorized)
	doc := parseHTML(t, w.Body.String())
	oneByTestID(t, doc, "signin-error")
	if inputNamed(oneByTestID(t, doc, "signin-form"), "api_key") == nil {
		t.Error("no api_key field on the error page")
	}
	if strings.Contains(w.Body.String(), "wrong-key") {
		t.Error("the submitted key is echoed back")
	}
	if cookieNamed(w, store.SessionCookie) != nil || len(e.dir.sessions) != 0 {
		t.Error("a session was made for a bad key")
	}

	w = e.signIn("", "", false)
	wantStatus(t, w, http.StatusBadRequest)
	oneByTestID(t, parseHTML(t, w.Body.String()), "signin-error")

	// No double-submit token: refused, the key is not even tried.
	w = e.do(http.MethodPost, "/signin", url.Values{"api_key": {"admin-key"}}, "")
	wantStatus(t, w, http.StatusForbidden)
	if len(e.dir.sessions) != 0 {
		t.Error("sign-in without CSRF token succeeded")
	}

	// The store failing is a 500, not a 401.
	e.dir.failAll = errors.New("db down")
	w2 := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/signin", strings.NewReader("api_key=x&csrf_token=0123456789012345678901234567890123"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(&http.Cookie{Name: signInCookie, Value: "0123456789012345678901234567890123"})
	e.h.ServeHTTP(w2, r)
	wantStatus(t, w2, http.StatusInternalServerError)
	if strings.Contains(w2.Body.String(), "db down") {
		t.Error("internal error text shown to the user")
	}
}

func TestSignOut(t *testing.T) {
	e := newEnv(t)
	tok := e.session("admin-key")
	// Without the token: refused, still signed in.
	w := e.do(http.MethodPost, "/signout", url.Values{}, tok)
	wantStatus(t, w, http.StatusForbidden)
	if _, ok := e.dir.sessions[tok]; !ok {
		t.Fatal("session deleted without CSRF token")
	}
	w = e.post("/signout", nil, tok)
	wantRedirect(t, w, "/signin")
	if _, ok := e.dir.sessions[tok]; ok {
		t.Error("session not deleted")
	}
	if c := cookieNamed(w, store.SessionCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("cookie not cleared: %+v", c)
	}
	// Signing out twice is harmless.
	wantRedirect(t, e.post("/signout", nil, tok), "/signin")
}

func TestHomeByScope(t *testing.T) {
	e := newEnv(t)
	// An account key goes straight to its account.
	wantRedirect(t, e.do(http.MethodGet, "/", nil, e.session("acct-key")), "/accounts/"+acctA)

	// A service provider sees its accounts only.
	w := e.do(http.MethodGet, "/", nil, e.session("sp-key"))
	wantStatus(t, w, http.StatusOK)
	doc := parseHTML(t, w.Body.String())
	rows := byTestID(doc, "account-row")
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%s online=%s clients=%s changes=%s", textOf(byTag(r, "a")[0]),
			textOf(oneByTestID(t, r, "account-online")), textOf(oneByTestID(t, r, "account-clients")),
			textOf(oneByTestID(t, r, "account-changes"))))
		if href := attrVal(byTag(r, "a")[0], "href"); href != "/accounts/"+attrVal(r, "data-account") {
			t.Errorf("account link = %s", href)
		}
	}
	want := []string{"Alpha online=3 clients=3 changes=5", "Gamma online=0 clients=0 changes=0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("SP overview = %v, want %v", got, want)
	}
	oneByTestID(t, doc, "signout-form")
	assertCSPClean(t, doc)

	// Admin sees every account.
	w = e.do(http.MethodGet, "/", nil, e.session("admin-key"))
	wantStatus(t, w, http.StatusOK)
	if n := len(byTestID(parseHTML(t, w.Body.String()), "account-row")); n != 3 {
		t.Errorf("admin sees %d accounts", n)
	}
}

func TestAccountAccess(t *testing.T) {
	e := newEnv(t)
	acct, sp, admin := e.session("acct-key"), e.session("sp-key"), e.session("admin-key")
	tests := []struct {
		name    string
		session string
		path    string
		want    int
	}{
		{"own account", acct, "/accounts/" + acctA, 200},
		{"account key, another account", acct, "/accounts/" + acctB, 403},
		{"account key, same SP's other account", acct, "/accounts/" + acctC, 403},
		{"sp key, its account", sp, "/accounts/" + acctC, 200},
		{"sp key, another SP's account", sp, "/accounts/" + acctB, 403},
		{"admin", admin, "/accounts/" + acctB, 200},
		{"malformed sid", admin, "/accounts/not-a-sid", 404},
		{"malformed sid with junk", admin, "/accounts/%3Cscript%3E", 404},
		{"unknown sid", admin, "/accounts/dd000000-0000-4000-8000-0000000000d1", 404},
		{"client of another account", admin, "/accounts/" + acctA + "/clients/c0000000-0000-4000-8000-0000000000b1", 404},
		{"malformed client sid", admin, "/accounts/" + acctA + "/clients/xyz", 404},
		{"client page of a forbidden account", acct, "/accounts/" + acctB + "/clients/c0000000-0000-4000-8000-0000000000b1", 403},
		{"new client form", acct, "/accounts/" + acctA + "/clients/new", 200},
		{"no such page", admin, "/nowhere", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do(http.MethodGet, tt.path, nil, tt.session)
			wantStatus(t, w, tt.want)
			if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if w.Header().Get("Content-Security-Policy") != CSP {
				t.Errorf("CSP missing on a %d page", w.Code)
			}
			if strings.Contains(w.Body.String(), "<script>") {
				t.Errorf("reflected script")
			}
			if tt.want != 200 {
				doc := parseHTML(t, w.Body.String())
				if attrVal(oneByTestID(t, doc, "error-page"), "data-status") != fmt.Sprint(tt.want) {
					t.Errorf("error page status attr wrong")
				}
			}
		})
	}
}

func TestAccountPage(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodGet, "/accounts/"+acctA, nil, e.session("acct-key"))
	wantStatus(t, w, http.StatusOK)

	h := w.Header()
	for k, v := range map[string]string{
		"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "same-origin",
		"Cache-Control":           "no-store",
	} {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}

	doc := parseHTML(t, w.Body.String())
	assertCSPClean(t, doc)

	rows := byTestID(doc, "user-row")
	var got []string
	for _, r := range rows {
		got = append(got, attrVal(r, "data-user")+"="+attrVal(r, "data-status"))
	}
	if want := "alice=online Bob=expiring carol=offline dave=online"; strings.Join(got, " ") != want {
		t.Errorf("rows = %v, want %s", got, want)
	}
	for id, want := range map[string]string{"count-online": "2", "count-expiring": "1", "count-offline": "1", "count-total": "4", "chart-now": "3"} {
		if got := textOf(oneByTestID(t, doc, id)); got != want {
			t.Errorf("%s = %s, want %s", id, got, want)
		}
	}
	if n := len(byTestID(doc, "feed-item")); n != 2 {
		t.Errorf("feed items = %d", n)
	}
	conn := oneByTestID(t, doc, "connection-state")
	if attrVal(conn, "data-state") != "offline" {
		t.Errorf("connection state = %s", attrVal(conn, "data-state"))
	}
	// An account key has no overview to go back to.
	if strings.Contains(w.Body.String(), `href="/">Accounts`) {
		t.Error("account key is offered the overview")
	}

	// The JS: one module script, from the versioned static path.
	var modules []string
	for _, s := range byTag(doc, "script") {
		if attrVal(s, "type") == "module" {
			modules = append(modules, attrVal(s, "src"))
		}
	}
	if len(modules) != 1 || modules[0] != "/static/"+static.Version+"/dashboard.js" {
		t.Errorf("module scripts = %v", modules)
	}

	// The data block: the same snapshot, and the stream position to resume from.
	blocks := byAttr(doc, "id", "account-data")
	if len(blocks) != 1 || attrVal(blocks[0], "type") != "application/json" {
		t.Fatalf("no JSON data block")
	}
	var d struct {
		AccountSID string `json:"account_sid"`
		Epoch      string
		Seq        uint64
		Users      []map[string]any
		Clients    []map[string]any
	}
	if err := json.Unmarshal([]byte(blocks[0].FirstChild.Data), &d); err != nil {
		t.Fatal(err)
	}
	if d.AccountSID != acctA || d.Epoch != "e1" || d.Seq != 17 || len(d.Users) != 3 || len(d.Clients) != 3 {
		t.Errorf("data block = %+v", d)
	}

	// The create form is on the page, with its CSRF token.
	form := oneByTestID(t, doc, "client-create-form")
	if attrVal(inputNamed(form, csrfField), "value") == "" {
		t.Error("create form without CSRF token")
	}
	for _, n := range []string{"username", "password", "is_active", "allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling"} {
		if inputNamed(form, n) == nil {
			t.Errorf("create form lacks %s", n)
		}
	}
	// Every form that posts carries the token.
	for _, f := range byTag(doc, "form") {
		if attrVal(f, "method") == "post" && attrVal(inputNamed(f, csrfField), "value") != csrfToken(e.firstSession()) {
			t.Errorf("form %s without the session's CSRF token", attrVal(f, "action"))
		}
	}
}

func (e *env) firstSession() string {
	for tok := range e.dir.sessions {
		return tok
	}
	return ""
}

func TestAccountPageQuery(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodGet, "/accounts/"+acctA+"?status=online&sort=left&dir=desc", nil, e.session("admin-key"))
	wantStatus(t, w, http.StatusOK)
	doc := parseHTML(t, w.Body.String())
	var got []string
	for _, r := range byTestID(doc, "user-row") {
		got = append(got, attrVal(r, "data-user"))
	}
	if strings.Join(got, ",") != "alice,dave" {
		t.Errorf("filtered rows = %v", got)
	}
	th := byAttr(doc, "data-col", "left")[0]
	if attrVal(th, "aria-sort") != "descending" {
		t.Errorf("aria-sort = %s", attrVal(th, "aria-sort"))
	}
	if href := attrVal(byTag(th, "a")[0], "href"); href != "/accounts/"+acctA+"?sort=left&status=online" {
		t.Errorf("sort link = %s", href)
	}
	if textOf(oneByTestID(t, doc, "table-summary")) != "2 of 4 users" {
		t.Errorf("summary = %s", textOf(oneByTestID(t, doc, "table-summary")))
	}
}

func TestAccountWithoutRealm(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodGet, "/accounts/"+acctC, nil, e.session("admin-key"))
	wantStatus(t, w, http.StatusOK)
	doc := parseHTML(t, w.Body.String())
	if n := len(byTestID(doc, "user-row")); n != 0 {
		t.Errorf("rows = %d", n)
	}
	if textOf(oneByTestID(t, doc, "count-total")) != "0" {
		t.Error("counters wrong")
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	tok := e.session("admin-key")
	other := e.session("admin-key")
	form := url.Values{"username": {"eve"}, "password": {"pw"}}
	for name, f := range map[string]url.Values{
		"missing":             form,
		"wrong":               {"username": {"eve"}, csrfField: {"nope"}},
		"other session's":     {"username": {"eve"}, csrfField: {csrfToken(other)}},
		"empty":               {"username": {"eve"}, csrfField: {""}},
		"the session's token": {"username": {"eve"}, csrfField: {tok}},
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{
				"/accounts/" + acctA + "/clients",
				"/accounts/" + acctA + "/clients/c0000000-0000-4000-8000-000000000001",
				"/accounts/" + acctA + "/clients/c0000000-0000-4000-8000-000000000001/delete",
			} {
				w := e.do(http.MethodPost, path, f, tok)
				wantStatus(t, w, http.StatusForbidden)
			}
		})
	}
	if len(e.dir.created)+len(e.dir.updated)+len(e.dir.deleted) != 0 {
		t.Errorf("the directory was written without a valid token")
	}

	// Cross-origin POST with the right token: refused by origin.
	f := url.Values{"username": {"eve"}, csrfField: {csrfToken(tok)}}
	w := e.do(http.MethodPost, "/accounts/"+acctA+"/clients", f, tok, "Sec-Fetch-Site", "cross-site")
	wantStatus(t, w, http.StatusForbidden)
	if w.Header().Get("Content-Security-Policy") != CSP {
		t.Error("no CSP on the cross-origin refusal")
	}
	w = e.do(http.MethodPost, "/accounts/"+acctA+"/clients", f, tok, "Origin", "https://evil.example")
	wantStatus(t, w, http.StatusForbidden)
	if len(e.dir.created) != 0 {
		t.Error("cross-origin create went through")
	}
}

func TestCreateClient(t *testing.T) {
	e := newEnv(t)
	tok := e.session("acct-key")
	w := e.post("/accounts/"+acctA+"/clients", url.Values{
		"username": {" eve "}, "password": {" s3cret "}, "is_active": {"1"}, "allow_direct_queue_calling": {"on"},
	}, tok)
	wantRedirect(t, w, "/accounts/"+acctA+"?created=eve")
	if len(e.dir.created) != 1 {
		t.Fatalf("CreateClient calls = %d", len(e.dir.created))
	}
	got := e.dir.created[0]
	want := createCall{store.Client{AccountSID: acctA, Username: "eve", IsActive: true, AllowDirectQueueCalling: true}, " s3cret "}
	if got != want {
		t.Errorf("CreateClient(%+v), want %+v", got, want)
	}

	// The redirect target shows what happened.
	w = e.do(http.MethodGet, "/accounts/"+acctA+"?created=eve", nil, tok)
	if got := textOf(oneByTestID(t, parseHTML(t, w.Body.String()), "flash")); got != "SIP client “eve” created." {
		t.Errorf("flash = %q", got)
	}

	// An account key cannot create in another account.
	w = e.post("/accounts/"+acctB+"/clients", url.Values{"username": {"x"}}, tok)
	wantStatus(t, w, http.StatusForbidden)
	if len(e.dir.created) != 1 {
		t.Error("created in a forbidden account")
	}
}

func TestCreateClientErrors(t *testing.T) {
	e := newEnv(t)
	tok := e.session("admin-key")
	path := "/accounts/" + acctA + "/clients"

	// Missing username: caught before the store.
	w := e.post(path, url.Values{"password": {"hunter2"}, "allow_direct_app_calling": {"1"}}, tok)
	wantStatus(t, w, http.StatusBadRequest)
	doc := parseHTML(t, w.Body.String())
	oneByTestID(t, doc, "error-username")
	if len(e.dir.created) != 0 {
		t.Error("store called without a username")
	}
	if strings.Contains(w.Body.String(), "hunter2") {
		t.Error("password echoed")
	}

	// Duplicate: 409, form re-rendered with the kept values.
	e.dir.createErr = &store.Error{Kind: store.KindConflict, Field: "username", Message: "the client's username already exists"}
	w = e.post(path, url.Values{"username": {"alice"}, "password": {"hunter2"}, "allow_direct_user_calling": {"1"}}, tok)
	wantStatus(t, w, http.StatusConflict)
	doc = parseHTML(t, w.Body.String())
	assertCSPClean(t, doc)
	form := oneByTestID(t, doc, "client-create-form")
	if attrVal(inputNamed(form, "username"), "value") != "alice" {
		t.Error("username not kept")
	}
	if _, on := attr(inputNamed(form, "allow_direct_user_calling"), "checked"); !on {
		t.Error("flag not kept")
	}
	if _, on := attr(inputNamed(form, "is_active"), "checked"); on {
		t.Error("unticked box re-rendered ticked")
	}
	if !strings.Contains(textOf(oneByTestID(t, doc, "error-username")), "already exists") {
		t.Error("no duplicate message")
	}
	if strings.Contains(w.Body.String(), "hunter2") {
		t.Error("password echoed")
	}
	if attrVal(inputNamed(form, csrfField), "value") != csrfToken(tok) {
		t.Error("re-rendered form lost its CSRF token")
	}

	// The store's validation message reaches the form.
	e.dir.createErr = &store.Error{Kind: store.KindInvalid, Field: "username", Message: "username must not contain '@'"}
	w = e.post(path, url.Values{"username": {"a@b"}}, tok)
	wantStatus(t, w, http.StatusBadRequest)
	if got := textOf(oneByTestID(t, parseHTML(t, w.Body.String()), "error-username")); got != "username must not contain '@'" {
		t.Errorf("error = %q", got)
	}
	e.dir.createErr = &store.Error{Kind: store.KindInvalid, Field: "password", Message: "password is longer than 1024 bytes"}
	w = e.post(path, url.Values{"username": {"ok"}, "password": {strings.Repeat("x", 1100)}}, tok)
	wantStatus(t, w, http.StatusBadRequest)
	oneByTestID(t, parseHTML(t, w.Body.String()), "error-password")

	// Anything else is the server's fault: 500, nothing leaked.
	e.dir.createErr = errors.New("connection reset by peer")
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(url.Values{"username": {"z"}, csrfField: {csrfToken(tok)}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(&http.Cookie{Name: store.SessionCookie, Value: tok})
	w = httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	wantStatus(t, w, http.StatusInternalServerError)
	if strings.Contains(w.Body.String(), "connection reset") || !strings.Contains(e.logs.String(), "connection reset") {
		t.Error("internal error shown, or not logged")
	}
}

func TestUpdateClient(t *testing.T) {
	e := newEnv(t)
	tok := e.session("sp-key")
	path := "/accounts/" + acctA + "/clients/c0000000-0000-4000-8000-000000000001"

	w := e.do(http.MethodGet, path, nil, tok)
	wantStatus(t, w, http.StatusOK)
	oneByTestID(t, parseHTML(t, w.Body.String()), "client-edit-form")

	// Flags only: every box is sent, the password is kept.
	w = e.post(path, url.Values{"allow_direct_app_calling": {"1"}, "username": {"renamed"}}, tok)
	wantRedirect(t, w, "/accounts/"+acctA+"?updated=alice")
	u := e.dir.updated[0]
	if u.SID != "c0000000-0000-4000-8000-000000000001" || u.Update.Password != nil || u.Update.Username != nil ||
		*u.Update.IsActive || !*u.Update.AllowDirectAppCalling || *u.Update.AllowDirectQueueCalling || *u.Update.AllowDirectUserCalling {
		t.Errorf("update = %s %+v", u.SID, u.Update)
	}
	// Password reset.
	w = e.post(path, url.Values{"password": {"n3w"}, "is_active": {"1"}}, tok)
	wantRedirect(t, w, "/accounts/"+acctA+"?updated=alice")
	if u := e.dir.updated[1].Update; u.Password == nil || *u.Password != "n3w" || !*u.IsActive {
		t.Errorf("password reset = %+v", u)
	}
	// Store refuses: 400 with the message, the edit form again.
	e.dir.updateErr = &store.Error{Kind: store.KindInvalid, Field: "password", Message: "password is longer than 1024 bytes"}
	w = e.post(path, url.Values{"password": {"x"}}, tok)
	wantStatus(t, w, http.StatusBadRequest)
	doc := parseHTML(t, w.Body.String())
	oneByTestID(t, doc, "client-edit-form")
	oneByTestID(t, doc, "error-password")
	// A client of another account, through this account's URL: 404.
	e.dir.updateErr = nil
	w = e.post("/accounts/"+acctA+"/clients/c0000000-0000-4000-8000-0000000000b1", url.Values{}, e.session("admin-key"))
	wantStatus(t, w, http.StatusNotFound)
	if len(e.dir.updated) != 3 {
		t.Errorf("updates = %d", len(e.dir.updated))
	}
}

func TestDeleteClient(t *testing.T) {
	e := newEnv(t)
	tok := e.session("acct-key")
	sid := "c0000000-0000-4000-8000-000000000003"
	w := e.post("/accounts/"+acctA+"/clients/"+sid+"/delete", nil, tok)
	wantRedirect(t, w, "/accounts/"+acctA+"?deleted=carol")
	if len(e.dir.deleted) != 1 || e.dir.deleted[0] != sid {
		t.Errorf("deleted = %v", e.dir.deleted)
	}
	// Gone: 404, not 500.
	wantStatus(t, e.post("/accounts/"+acctA+"/clients/"+sid+"/delete", nil, tok), http.StatusNotFound)
	// Another tenant's: 403 (the account is checked first).
	wantStatus(t, e.post("/accounts/"+acctB+"/clients/c0000000-0000-4000-8000-0000000000b1/delete", nil, tok), http.StatusForbidden)
}

func TestStatic(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"presence.js", "dashboard.js", "app.css"} {
		w := e.do(http.MethodGet, "/static/"+static.Version+"/"+name, nil, "")
		wantStatus(t, w, http.StatusOK)
		if cc := w.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s Cache-Control = %q", name, cc)
		}
		want := map[string]string{"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}[name[strings.LastIndexByte(name, '.')+1:]]
		if ct := w.Header().Get("Content-Type"); ct != want {
			t.Errorf("%s Content-Type = %q", name, ct)
		}
		b, _ := io.ReadAll(w.Body)
		if len(b) == 0 {
			t.Errorf("%s empty", name)
		}
	}
	w := e.do(http.MethodGet, "/static/0ld/app.css", nil, "")
	wantStatus(t, w, http.StatusOK)
	if cc := w.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("old version Cache-Control = %q", cc)
	}
	for _, p := range []string{"/static/", "/static/nope.js", "/static/" + static.Version + "/", "/static/" + static.Version + "/../static.go", "/static/a/b/c.js"} {
		if w := e.do(http.MethodGet, p, nil, ""); w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d", p, w.Code)
		}
	}
}

func TestStaticVersion(t *testing.T) {
	if len(static.Version) != 12 {
		t.Errorf("Version = %q", static.Version)
	}
	js, err := static.FS.ReadFile("dashboard.js")
	if err != nil {
		t.Fatal(err)
	}
	// The relative import keeps the version path segment.
	if !strings.Contains(string(js), `from './presence.js'`) {
		t.Error("dashboard.js must import presence.js relatively")
	}
}

func TestDirectoryFailureIs500(t *testing.T) {
	e := newEnv(t)
	tok := e.session("admin-key")
	e.dir.failAll = errors.New("db down")
	r := httptest.NewRequest(http.MethodGet, "/accounts/"+acctA, nil)
	r.AddCookie(&http.Cookie{Name: store.SessionCookie, Value: tok})
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	wantStatus(t, w, http.StatusInternalServerError)
	if strings.Contains(w.Body.String(), "db down") {
		t.Error("internal error text shown")
	}
	if w.Header().Get("Content-Security-Policy") != CSP {
		t.Error("no CSP on the 500 page")
	}
}

func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t)
	w := e.do(http.MethodDelete, "/signin", nil, "")
	wantStatus(t, w, http.StatusMethodNotAllowed)
}

func TestAccountPageEscapesUserData(t *testing.T) {
	e := newEnv(t)
	evil := `</script><script>alert(1)</script>`
	e.pres.users["a.example"] = []hub.UserView{{Name: evil, Contact: `"><img src=x onerror=alert(1)>`, Protocol: "udp",
		ExpiryTime: t0.Add(time.Hour).UnixMilli(), EventTime: t0, Since: t0, LastEvent: hub.EventRegistered}}
	e.pres.recent["a.example"] = []*hub.Change{{Seq: 1, Event: hub.EventRegistered, User: evil, Time: t0}}
	w := e.do(http.MethodGet, "/accounts/"+acctA+"?q="+url.QueryEscape(evil), nil, e.session("admin-key"))
	wantStatus(t, w, http.StatusOK)
	body := w.Body.String()
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
		t.Fatal("user data breaks out of its context")
	}
	doc := parseHTML(t, body)
	assertCSPClean(t, doc)
	if n := len(byTag(doc, "script")); n != 2 { // the module and the data block
		t.Errorf("%d script elements", n)
	}
	rows := byTestID(doc, "user-row")
	if len(rows) != 1 || attrVal(rows[0], "data-user") != evil {
		t.Errorf("rows = %d", len(rows))
	}
	var d struct{ Users []struct{ Name string } }
	if err := json.Unmarshal([]byte(byAttr(doc, "id", "account-data")[0].FirstChild.Data), &d); err != nil || d.Users[0].Name != evil {
		t.Errorf("data block round trip: %v %+v", err, d)
	}
	if attrVal(byAttr(doc, "id", "filter-q")[0], "value") != evil {
		t.Error("search box lost its value")
	}
}

// TestSignInRateLimited: sign-in attempts per client IP are limited (brute
// force of keys through the form), with Retry-After and a readable page.
func TestSignInRateLimited(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SignIns = ratelimit.New(ratelimit.Spec{Rate: 0.01, Burst: 2}, 0) })
	got := []int{e.signIn("wrong-key", "", false).Code, e.signIn("wrong-key", "", false).Code}
	w := e.signIn("admin-key", "", false)
	got = append(got, w.Code)
	if fmt.Sprint(got) != "[401 401 429]" {
		t.Fatalf("three sign-ins with a burst of 2: %v, want [401 401 429]", got)
	}
	if w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "Too many sign-in attempts") {
		t.Errorf("429 page: Retry-After %q, body %s", w.Header().Get("Retry-After"), w.Body.String())
	}
	if cookieNamed(w, store.SessionCookie) != nil {
		t.Error("a session was created past the limit")
	}
}

// TestManagedInJambonz: with clients mirrored from jambonz the pages show
// them without forms and the form endpoints answer 409 without writing.
func TestManagedInJambonz(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ManagedInJambonz = true })
	tok := e.session("sp-key")
	clientPath := "/accounts/" + acctA + "/clients/c0000000-0000-4000-8000-000000000001"

	w := e.do(http.MethodGet, "/accounts/"+acctA, nil, tok)
	wantStatus(t, w, http.StatusOK)
	body := w.Body.String()
	if strings.Contains(body, `data-testid="client-create-form"`) || !strings.Contains(body, `data-testid="managed-note"`) {
		t.Errorf("account page: want the managed note and no create form")
	}
	w = e.do(http.MethodGet, clientPath, nil, tok)
	wantStatus(t, w, http.StatusOK)
	body = w.Body.String()
	if strings.Contains(body, "<form method=\"post\" action=\""+clientPath) || strings.Contains(body, `data-testid="client-edit-form"`) ||
		strings.Contains(body, `data-testid="client-delete-form"`) || !strings.Contains(body, `data-testid="client-details"`) {
		t.Errorf("client page: want the details without edit or delete forms")
	}

	for _, tt := range []struct{ method, path string }{
		{http.MethodGet, "/accounts/" + acctA + "/clients/new"},
		{http.MethodPost, "/accounts/" + acctA + "/clients"},
		{http.MethodPost, clientPath},
		{http.MethodPost, clientPath + "/delete"},
	} {
		var w *httptest.ResponseRecorder
		if tt.method == http.MethodPost {
			w = e.post(tt.path, url.Values{"username": {"eve"}, "password": {"x"}}, tok)
		} else {
			w = e.do(tt.method, tt.path, nil, tok)
		}
		if w.Code != http.StatusConflict {
			t.Errorf("%s %s = %d, want 409", tt.method, tt.path, w.Code)
		}
	}
	if len(e.dir.created)+len(e.dir.updated)+len(e.dir.deleted) != 0 {
		t.Errorf("writes reached the directory: created %d, updated %d, deleted %d", len(e.dir.created), len(e.dir.updated), len(e.dir.deleted))
	}
}
