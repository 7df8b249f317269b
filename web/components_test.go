package web

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/a-h/templ"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

func renderString(t *testing.T, c templ.Component) string {
	t.Helper()
	var b strings.Builder
	if err := c.Render(context.Background(), &b); err != nil {
		t.Fatalf("render: %v", err)
	}
	return b.String()
}

// renderRow renders one user row inside a table, so the parser keeps it.
func renderRow(t *testing.T, r UserRow) string {
	t.Helper()
	return "<table><tbody>" + renderString(t, userRow(acctA, r, t0)) + "</tbody></table>"
}

func TestUserRowComponent(t *testing.T) {
	rows := BuildRows(fixtureClients(), fixtureUsers(), t0)
	tests := []struct {
		row        UserRow
		user       string
		status     string
		flags      string // app queue user data-value
		left       string
		clientLink bool
		tags       []string
	}{
		{rows[0], "alice", "online", "011", "1h 00m", true, nil},
		{rows[1], "Bob", "expiring", "000", "30s", true, []string{"inactive"}},
		{rows[2], "carol", "offline", "111", "—", true, nil},
		{rows[3], "dave", "online", "111", "5m 00s", false, []string{"no-client"}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			doc := parseHTML(t, renderRow(t, tt.row))
			tr := oneByTestID(t, doc, "user-row")
			if got := attrVal(tr, "data-user"); got != tt.user {
				t.Errorf("data-user = %q, want %q", got, tt.user)
			}
			if got := attrVal(tr, "data-status"); got != tt.status {
				t.Errorf("data-status = %q, want %q", got, tt.status)
			}
			var flags string
			for _, f := range []string{"app", "queue", "user"} {
				cells := byAttr(tr, "data-flag", f)
				if len(cells) != 1 {
					t.Fatalf("flag %s: %d cells", f, len(cells))
				}
				v := attrVal(cells[0], "data-value")
				flags += v
				if want := map[string]string{"1": "yes", "0": "no"}[v]; textOf(cells[0]) != want {
					t.Errorf("flag %s text %q, want %q", f, textOf(cells[0]), want)
				}
			}
			if flags != tt.flags {
				t.Errorf("flags = %s, want %s", flags, tt.flags)
			}
			if got := textOf(oneByTestID(t, tr, "time-left")); got != tt.left {
				t.Errorf("time left = %q, want %q", got, tt.left)
			}
			links := byTestID(tr, "client-link")
			if (len(links) == 1) != tt.clientLink {
				t.Errorf("client link present = %v, want %v", len(links) == 1, tt.clientLink)
			}
			if tt.clientLink && attrVal(links[0], "href") != clientURL(acctA, tt.row.ClientSID) {
				t.Errorf("client link = %q", attrVal(links[0], "href"))
			}
			for _, tag := range tt.tags {
				if len(byTestID(tr, tag)) != 1 {
					t.Errorf("missing tag %s", tag)
				}
			}
		})
	}
}

func TestUserRowEscapes(t *testing.T) {
	r := UserRow{Name: `<script>alert(1)</script>"x`, Registered: true, Status: StatusOnline,
		Contact: `sip:"><img src=x onerror=alert(1)>`, Expiry: t0.Add(time.Hour)}
	s := renderRow(t, r)
	if strings.Contains(s, "<script>") || strings.Contains(s, "<img") {
		t.Fatalf("unescaped user data: %s", s)
	}
	doc := parseHTML(t, s)
	if got := attrVal(oneByTestID(t, doc, "user-row"), "data-user"); got != r.Name {
		t.Errorf("data-user = %q", got)
	}
}

func TestCountersComponent(t *testing.T) {
	c := Count(BuildRows(fixtureClients(), fixtureUsers(), t0))
	doc := parseHTML(t, renderString(t, counters(c)))
	for id, want := range map[string]string{
		"count-online": "2", "count-expiring": "1", "count-offline": "1", "count-registered": "3", "count-total": "4",
	} {
		if got := textOf(oneByTestID(t, doc, id)); got != want {
			t.Errorf("%s = %q, want %q", id, got, want)
		}
	}
	protos := byTestID(doc, "count-protocol")
	var got []string
	for _, p := range protos {
		got = append(got, attrVal(p, "data-protocol")+"="+textOf(byTag(p, "strong")[0]))
	}
	if strings.Join(got, ",") != "tcp=1,udp=1,wss=1" {
		t.Errorf("protocol counters = %v", got)
	}
}

func TestFeedComponent(t *testing.T) {
	items := BuildFeed([]*hub.Change{
		{Seq: 9, Event: hub.EventExpired, User: "bob", Time: t0},
		{Seq: 8, Event: hub.EventRegistered, User: "alice", Time: t0.Add(-time.Second)},
	})
	doc := parseHTML(t, renderString(t, feed("acct", items)))
	li := byTestID(doc, "feed-item")
	if len(li) != 2 {
		t.Fatalf("feed items = %d", len(li))
	}
	if attrVal(li[0], "data-seq") != "9" || attrVal(li[0], "data-event") != "expired" || attrVal(li[0], "data-user") != "bob" {
		t.Errorf("first item = %s", renderNode(li[0]))
	}
	if !strings.Contains(textOf(li[1]), "10:29:59 alice registered") {
		t.Errorf("second item text = %q", textOf(li[1]))
	}
}

func TestClientFormNeverShowsPasswords(t *testing.T) {
	c := store.Client{SID: "c0000000-0000-4000-8000-000000000001", AccountSID: acctA, Username: "alice",
		Password: "s3cret-plain", IsActive: true, AllowDirectQueueCalling: true}
	page := clientPage(pageMeta{Title: "x", SignedIn: true, CSRF: "tok"}, clientPageView{
		Account: store.Account{SID: acctA, Name: "Alpha"}, Form: editClientForm(c), CSRF: "tok",
	})
	s := renderString(t, page)
	if strings.Contains(s, "s3cret") || strings.Contains(s, "sXXX") {
		t.Fatalf("the client's password appears on its page")
	}
	doc := parseHTML(t, s)
	form := oneByTestID(t, doc, "client-edit-form")
	pw := inputNamed(form, "password")
	if pw == nil || attrVal(pw, "type") != "password" {
		t.Fatalf("no password field")
	}
	if _, ok := attr(pw, "value"); ok {
		t.Errorf("password field has a value")
	}
	if _, ok := attr(pw, "required"); ok {
		t.Errorf("password is required on edit (empty keeps it)")
	}
	// The username is shown but not submitted: renaming is not offered.
	if inputNamed(form, "username") != nil {
		t.Errorf("edit form submits a username")
	}
	for name, want := range map[string]bool{
		"is_active": true, "allow_direct_app_calling": false, "allow_direct_queue_calling": true, "allow_direct_user_calling": false,
	} {
		in := inputNamed(form, name)
		if in == nil {
			t.Fatalf("no %s checkbox", name)
		}
		if _, on := attr(in, "checked"); on != want {
			t.Errorf("%s checked = %v, want %v", name, on, want)
		}
	}
	if attrVal(form, "action") != clientURL(acctA, c.SID) || attrVal(form, "method") != "post" {
		t.Errorf("form posts to %s %s", attrVal(form, "method"), attrVal(form, "action"))
	}
	del := oneByTestID(t, doc, "client-delete-form")
	if attrVal(del, "action") != clientURL(acctA, c.SID)+"/delete" || attrVal(inputNamed(del, "csrf_token"), "value") != "tok" {
		t.Errorf("delete form = %s", renderNode(del))
	}
	oneByTestID(t, doc, "client-save-submit")
	oneByTestID(t, doc, "client-delete-submit")
	assertCSPClean(t, doc)
}

func TestClientFormErrors(t *testing.T) {
	f := newClientForm(acctA)
	f.Username = "alice"
	f.App = false
	f.Errors = map[string]string{"username": "A SIP client with this username already exists."}
	doc := parseHTML(t, renderString(t, clientFormView(f, "tok")))
	form := oneByTestID(t, doc, "client-create-form")
	if attrVal(form, "action") != accountURL(acctA)+"/clients" {
		t.Errorf("action = %s", attrVal(form, "action"))
	}
	in := inputNamed(form, "username")
	if attrVal(in, "value") != "alice" || attrVal(in, "aria-invalid") != "true" || attrVal(in, "aria-describedby") != "new-username-error" {
		t.Errorf("username input = %s", renderNode(in))
	}
	if got := textOf(oneByTestID(t, doc, "error-username")); got != f.Errors["username"] {
		t.Errorf("error = %q", got)
	}
	oneByTestID(t, doc, "form-error")
	if _, on := attr(inputNamed(form, "allow_direct_app_calling"), "checked"); on {
		t.Errorf("kept value lost: app flag re-rendered checked")
	}
	if _, on := attr(inputNamed(form, "allow_direct_user_calling"), "checked"); !on {
		t.Errorf("kept value lost: user flag re-rendered unchecked")
	}
	// Every label points at a control.
	for _, l := range byTag(doc, "label") {
		if len(byAttr(doc, "id", attrVal(l, "for"))) != 1 {
			t.Errorf("label for=%q has no control", attrVal(l, "for"))
		}
	}
}

func TestSignInPageComponent(t *testing.T) {
	doc := parseHTML(t, renderString(t, signInPage(pageMeta{Title: "Sign in"}, signInForm{CSRF: "tok", Next: "/", Error: "bad"})))
	form := oneByTestID(t, doc, "signin-form")
	key := inputNamed(form, "api_key")
	if key == nil || attrVal(key, "type") != "password" || attrVal(key, "autocomplete") != "off" {
		t.Fatalf("api_key field = %v", key)
	}
	if attrVal(inputNamed(form, "csrf_token"), "value") != "tok" {
		t.Errorf("no csrf token")
	}
	if textOf(oneByTestID(t, doc, "signin-error")) != "bad" {
		t.Errorf("no error shown")
	}
	oneByTestID(t, doc, "signin-submit")
	if len(byTestID(doc, "signout-form")) != 0 {
		t.Errorf("a signed-out page offers sign-out")
	}
	assertCSPClean(t, doc)
}
