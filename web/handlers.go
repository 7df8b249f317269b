package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// pageMeta is what the layout needs.
type pageMeta struct {
	Title     string
	SignedIn  bool
	Principal store.Principal
	CSRF      string
	Script    string // the page's module in static/, "" for none
}

// signInForm is the sign-in page's model. It never holds the key.
type signInForm struct {
	CSRF  string
	Next  string
	Error string
}

func (s *server) handleSignInForm() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		next := safeNext(r.URL.Query().Get("next"))
		if _, ok, err := s.lookupSession(r); err != nil {
			s.internalError(w, r, err)
			return
		} else if ok {
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		s.renderSignIn(w, r, http.StatusOK, next, "")
	}
}

// renderSignIn renders the sign-in form with a fresh double-submit token
// (reusing the one in the cookie, so several tabs can sign in).
func (s *server) renderSignIn(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	tok := ""
	if c, err := s.readCookie(r, signInCookie); err == nil && len(c.Value) >= 32 && len(c.Value) <= 64 {
		tok = c.Value
	} else {
		tok = randomToken()
	}
	http.SetCookie(w, s.cookie(r, signInCookie, tok, 3600))
	s.render(w, r, status, signInPage(pageMeta{Title: "Sign in"}, signInForm{CSRF: tok, Next: next, Error: msg}))
}

func (s *server) handleSignIn() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d := s.signIns.Allow(s.proxies.ClientIP(r)); !d.OK {
			d.SetHeaders(w.Header())
			s.renderSignIn(w, r, http.StatusTooManyRequests, "/", fmt.Sprintf(
				"Too many sign-in attempts from your address. Please wait %d seconds and try again.", max(1, int(math.Ceil(d.RetryAfter.Seconds())))))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			s.renderSignIn(w, r, http.StatusBadRequest, "/", "The form could not be read. Please try again.")
			return
		}
		next := safeNext(r.PostForm.Get("next"))
		c, err := s.readCookie(r, signInCookie)
		got := r.PostForm.Get(csrfField)
		if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(c.Value)) != 1 {
			s.renderSignIn(w, r, http.StatusForbidden, next, "This sign-in form has expired. Please enter your key again.")
			return
		}
		key := strings.TrimSpace(r.PostForm.Get("api_key"))
		if key == "" {
			s.renderSignIn(w, r, http.StatusBadRequest, next, "Enter an API key.")
			return
		}
		const badKey = "That API key is not valid or has expired."
		if len(key) > 1024 {
			s.renderSignIn(w, r, http.StatusUnauthorized, next, badKey)
			return
		}
		p, err := s.sessions.Authenticate(r.Context(), key)
		switch {
		case errors.Is(err, store.ErrUnauthorized), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
			s.log.Info("dashboard sign-in refused", "remote", r.RemoteAddr)
			s.renderSignIn(w, r, http.StatusUnauthorized, next, badKey)
			return
		case err != nil:
			s.internalError(w, r, err)
			return
		}
		ttl := s.ttl
		if p.ExpiresAt != nil {
			// A session never outlives the key it was made from.
			ttl = min(ttl, p.ExpiresAt.Sub(s.now()))
			if ttl < time.Second {
				s.renderSignIn(w, r, http.StatusUnauthorized, next, badKey)
				return
			}
		}
		token, err := s.sessions.CreateSession(r.Context(), p, ttl)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		// A new sign-in replaces whatever session the browser had.
		if old, err := s.readCookie(r, store.SessionCookie); err == nil && old.Value != "" && len(old.Value) <= 512 {
			if err := s.sessions.DeleteSession(r.Context(), old.Value); err != nil && !isClientError(err) {
				s.log.Warn("could not delete the previous session", "err", err)
			}
		}
		http.SetCookie(w, s.cookie(r, store.SessionCookie, token, int(ttl/time.Second)))
		s.clearCookie(w, r, signInCookie)
		s.log.Info("dashboard sign-in", "key", p.KeySID, "scope", p.Scope)
		http.Redirect(w, r, next, http.StatusSeeOther)
	}
}

func (s *server) handleSignOut() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss, ok, err := s.lookupSession(r)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		if !ok {
			// Already signed out (or expired): nothing to protect.
			s.clearCookie(w, r, store.SessionCookie)
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, ss))
		if !s.checkCSRF(w, r) {
			return
		}
		if err := s.sessions.DeleteSession(r.Context(), ss.Token); err != nil && !isClientError(err) {
			s.internalError(w, r, err)
			return
		}
		s.clearCookie(w, r, store.SessionCookie)
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
	}
}

// isClientError reports whether err is one of the store's "your request"
// errors rather than a failure.
func isClientError(err error) bool {
	return store.KindOf(err) != 0
}

// overviewView is the overview page's model.
type overviewView struct {
	Rows        []OverviewRow // the visible page
	Total       OverviewRow   // sums over every account
	Count       int           // accounts in all
	Page, Pages int
	Data        overviewData
}

// OverviewPageSize is how many accounts one overview page shows (and
// follows live: one stream subscription each).
const OverviewPageSize = 50

// overviewData is the overview's JSON data block for static/overview.js.
type overviewData struct {
	Now            int64             `json:"now"`
	ExpiringWithin int64             `json:"expiring_within_ms"`
	Accounts       []overviewAccount `json:"accounts"`
}

type overviewAccount struct {
	SID    string `json:"account_sid"`
	Realm  string `json:"realm"`
	Series []int  `json:"series"`
}

func (s *server) handleHome() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := sessionFrom(r.Context()).Principal
		var spSID string
		switch p.Scope {
		case store.ScopeAccount:
			if !store.ValidSID(p.AccountSID) {
				s.forbidden(w, r)
				return
			}
			http.Redirect(w, r, accountURL(p.AccountSID), http.StatusSeeOther)
			return
		case store.ScopeServiceProvider:
			if p.ServiceProviderSID == "" {
				s.forbidden(w, r)
				return
			}
			spSID = p.ServiceProviderSID
		case store.ScopeAdmin:
		default:
			s.forbidden(w, r)
			return
		}
		accounts, err := s.accounts.Accounts(r.Context(), spSID)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		// Belt and braces: show only what the principal may see.
		accounts = slices.DeleteFunc(accounts, func(a store.Account) bool { return !p.CanSeeAccount(a) })
		clients, err := s.clients.Clients(r.Context(), store.ClientFilter{ServiceProviderSID: spSID})
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		rows := BuildOverview(accounts, clients, s.pres.Stats)
		v := overviewView{Count: len(rows), Page: 1, Pages: max(1, (len(rows)+OverviewPageSize-1)/OverviewPageSize)}
		for _, row := range rows {
			v.Total.Online += row.Online
			v.Total.Clients += row.Clients
			v.Total.ChangesLastMinute += row.ChangesLastMinute
		}
		if n, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && n >= 1 && n <= v.Pages {
			v.Page = n
		}
		v.Rows = rows[min(len(rows), (v.Page-1)*OverviewPageSize):min(len(rows), v.Page*OverviewPageSize)]
		now := s.now()
		v.Data = overviewData{Now: now.UnixMilli(), ExpiringWithin: ExpiringWithin.Milliseconds(), Accounts: []overviewAccount{}}
		for i := range v.Rows {
			row := &v.Rows[i]
			if row.Realm != "" {
				for _, u := range s.pres.Users(row.Realm) {
					if exp := userExpiry(u); !exp.IsZero() && exp.After(now) && exp.Sub(now) < ExpiringWithin {
						row.Expiring++
					}
				}
			}
			row.Spark = Sparkline(row.Series)
			v.Data.Accounts = append(v.Data.Accounts, overviewAccount{SID: row.SID, Realm: row.Realm, Series: row.Series})
		}
		m := s.meta(r, "Accounts")
		m.Script = "overview.js"
		s.render(w, r, http.StatusOK, overviewPage(m, v))
	}
}

// accountView is the account page's model.
type accountView struct {
	Account   store.Account
	Overview  bool   // the caller has an overview to go back to
	Flash     string // what the last form did
	Now       time.Time
	Counters  Counters
	Query     TableQuery
	Table     Table
	Protocols []string // filter choices
	Chart     Chart
	Feed      []FeedItem
	Data      pageData
	Create    clientForm
	CSRF      string
	Managed   bool // clients are mirrored from jambonz: no create form
	History   bool // the registration history is on: flapping filter
	Flap      int  // FlapSessions
}

// loadAccount resolves {AccountSid} for the caller, answering 404 for a
// malformed or unknown sid and 403 for another tenant's account.
func (s *server) loadAccount(w http.ResponseWriter, r *http.Request) (store.Account, bool) {
	a, ok := load(s, w, r, "AccountSid", s.accounts.Account)
	if ok && !sessionFrom(r.Context()).Principal.CanSeeAccount(a) {
		s.forbidden(w, r)
		return store.Account{}, false
	}
	return a, ok
}

// loadClient resolves {AccountSid} as loadAccount does and {ClientSid}
// within it (404 otherwise).
func (s *server) loadClient(w http.ResponseWriter, r *http.Request) (store.Account, store.Client, bool) {
	a, ok := s.loadAccount(w, r)
	if !ok {
		return a, store.Client{}, false
	}
	c, ok := load(s, w, r, "ClientSid", s.clients.Client)
	if ok && c.AccountSID != a.SID {
		s.notFound(w, r)
		return a, store.Client{}, false
	}
	return a, c, ok
}

// load reads the row the sid in URL parameter param names, answering 404
// for a malformed or unknown sid and 500 when the read fails otherwise.
func load[T any](s *server, w http.ResponseWriter, r *http.Request, param string, get func(context.Context, string) (T, error)) (T, bool) {
	var zero T
	sid := chi.URLParam(r, param)
	if !store.ValidSID(sid) {
		s.notFound(w, r)
		return zero, false
	}
	v, err := get(r.Context(), sid)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		s.notFound(w, r)
		return zero, false
	case err != nil:
		s.internalError(w, r, err)
		return zero, false
	}
	return v, true
}

var knownProtocols = []string{"udp", "tcp", "tls", "ws", "wss"}

func (s *server) handleAccount() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.loadAccount(w, r)
		if !ok {
			return
		}
		s.renderAccount(w, r, a, http.StatusOK, newClientForm(a.SID))
	}
}

// renderAccount renders the account page with create (the create form, possibly
// with errors) at status.
func (s *server) renderAccount(w http.ResponseWriter, r *http.Request, a store.Account, status int, create clientForm) {
	clients, err := s.clients.Clients(r.Context(), store.ClientFilter{AccountSID: a.SID})
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	// Stats first: its Seq is where the browser resumes the stream, and a
	// change landing between the reads is then replayed, never missed
	// (replaying a change is harmless: it carries the user's whole state).
	st := hub.Stats{Protocols: map[string]int{}, Series: make([]int, 60)}
	var users []hub.UserView
	var recent []*hub.Change
	if a.SIPRealm != "" {
		// The page reads the realm as this account's: if the hub still
		// counts it as someone else's (the notification of the change is
		// on its way), the earlier holder's history goes first.
		s.pres.Claim(a.SIPRealm, a.SID)
		st = s.pres.Stats(a.SIPRealm)
		users = s.pres.Users(a.SIPRealm)
		recent = s.pres.Recent(a.SIPRealm, FeedSize)
	}
	now := s.now()
	q := ParseTableQuery(r.URL.Query())
	rows := BuildRows(clients, users, now)
	var flapping []string
	if s.hist != nil {
		// One query for the whole table, counted as Presence counts.
		counts, err := s.hist.SessionCounts(r.Context(), a.SID, now)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		flap := map[string]bool{}
		for name, c := range counts {
			if c.Flapping(s.flap) {
				flap[hub.Fold(name)] = true
				flapping = append(flapping, name)
			}
		}
		slices.Sort(flapping)
		for i := range rows {
			rows[i].Flapping = flap[hub.Fold(rows[i].Name)]
		}
	}
	ss := sessionFrom(r.Context())
	v := accountView{
		Account:  a,
		Overview: ss.Principal.Scope != store.ScopeAccount,
		Flash:    flash(r.URL.Query()),
		Now:      now,
		Counters: Count(rows),
		Query:    q,
		Table:    ApplyQuery(rows, q, now),
		Chart:    s.buildAccountChart(r, a, q.Range, st, now),
		Feed:     BuildFeed(recent),
		Data:     buildPageData(a, clients, users, st, q, now),
		Create:   create,
		CSRF:     ss.CSRF(),
		Managed:  s.managed,
		History:  s.hist != nil,
		Flap:     s.flap,
	}
	if flapping != nil {
		v.Data.Flapping = flapping
	}
	v.Query.Page = v.Table.Page
	v.Protocols = append([]string(nil), knownProtocols...)
	for _, pc := range v.Counters.Protocols {
		if !slices.Contains(v.Protocols, pc.Protocol) {
			v.Protocols = append(v.Protocols, pc.Protocol)
		}
	}
	if q.Protocol != "" && !slices.Contains(v.Protocols, q.Protocol) {
		v.Protocols = append(v.Protocols, q.Protocol)
	}
	m := s.meta(r, accountTitle(a))
	m.Script = "dashboard.js"
	s.render(w, r, status, accountPage(m, v))
}

// flash is the confirmation shown after a form redirected back.
func flash(v url.Values) string {
	name := func(k string) string {
		n := v.Get(k)
		if len(n) > 64 {
			n = n[:64] + "…"
		}
		return n
	}
	switch {
	case v.Has("created"):
		return "SIP client “" + name("created") + "” created."
	case v.Has("updated"):
		return "SIP client “" + name("updated") + "” saved."
	case v.Has("deleted"):
		return "SIP client “" + name("deleted") + "” deleted."
	}
	return ""
}

func accountTitle(a store.Account) string {
	if a.Name != "" {
		return a.Name
	}
	return a.SID
}

// clientPageView is the model of the standalone create/edit page.
type clientPageView struct {
	Account store.Account
	Form    clientForm
	CSRF    string
	Managed bool // mirrored from jambonz: details without forms
}

func (s *server) renderClientPage(w http.ResponseWriter, r *http.Request, status int, a store.Account, f clientForm) {
	title := "New SIP client"
	if f.editing() {
		title = "SIP client " + f.Username
	}
	v := clientPageView{Account: a, Form: f, CSRF: sessionFrom(r.Context()).CSRF(), Managed: s.managed}
	s.render(w, r, status, clientPage(s.meta(r, title), v))
}

func (s *server) handleClientNew() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.loadAccount(w, r)
		if !ok {
			return
		}
		s.renderClientPage(w, r, http.StatusOK, a, newClientForm(a.SID))
	}
}

// checked reads a checkbox: present with a true-ish value.
func checked(v url.Values, name string) bool {
	switch strings.ToLower(v.Get(name)) {
	case "1", "on", "true", "yes":
		return true
	}
	return false
}

// readClientForm fills f from the posted form and checks that the required
// fields are there; everything else is the store's to judge, exactly as for
// the REST API. The password is returned separately so it is never rendered
// back.
func readClientForm(v url.Values, f clientForm) (clientForm, string) {
	f.Errors = nil
	if !f.editing() {
		f.Username = strings.TrimSpace(v.Get("username"))
	}
	f.IsActive = checked(v, "is_active")
	f.App = checked(v, "allow_direct_app_calling")
	f.Queue = checked(v, "allow_direct_queue_calling")
	f.User = checked(v, "allow_direct_user_calling")
	password := v.Get("password")
	addErr := func(field, msg string) {
		if f.Errors == nil {
			f.Errors = map[string]string{}
		}
		f.Errors[field] = msg
	}
	if !f.editing() {
		if f.Username == "" {
			addErr("username", "Enter a username.")
		}
	}
	return f, password
}

// storeFormError puts a store error on the form and returns the status to
// answer with; ok is false for an error that is not the client's doing.
func storeFormError(f *clientForm, err error) (status int, ok bool) {
	if f.Errors == nil {
		f.Errors = map[string]string{}
	}
	switch {
	case errors.Is(err, store.ErrConflict):
		f.Errors["username"] = "A SIP client with this username already exists."
		return http.StatusConflict, true
	case errors.Is(err, store.ErrInvalid):
		field, msg := "", "The server did not accept these values."
		var se *store.Error
		if errors.As(err, &se) {
			field = se.Field
			if se.Message != "" {
				msg = se.Message
			}
		}
		switch {
		case field == "password", field == "username" && !f.editing():
			f.Errors[field] = msg
		default:
			f.Errors[""] = msg
		}
		return http.StatusBadRequest, true
	}
	return 0, false
}

func (s *server) handleClientCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.checkCSRF(w, r) {
			return
		}
		a, ok := s.loadAccount(w, r)
		if !ok {
			return
		}
		f, password := readClientForm(r.PostForm, newClientForm(a.SID))
		if f.hasErrors() {
			s.renderClientPage(w, r, http.StatusBadRequest, a, f)
			return
		}
		c := store.Client{AccountSID: a.SID, Username: f.Username, IsActive: f.IsActive,
			AllowDirectAppCalling: f.App, AllowDirectQueueCalling: f.Queue, AllowDirectUserCalling: f.User}
		created, err := s.clients.CreateClient(r.Context(), c, password)
		if err != nil {
			s.writeFailed(w, r, a, f, err)
			return
		}
		s.log.Info("sip client created from the dashboard", "account", a.SID, "client", created.SID,
			"key", sessionFrom(r.Context()).Principal.KeySID)
		http.Redirect(w, r, accountURL(a.SID)+"?created="+url.QueryEscape(f.Username), http.StatusSeeOther)
	}
}

func (s *server) handleClientEdit() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, c, ok := s.loadClient(w, r)
		if !ok {
			return
		}
		s.renderClientPage(w, r, http.StatusOK, a, editClientForm(c))
	}
}

func (s *server) handleClientUpdate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.checkCSRF(w, r) {
			return
		}
		a, c, ok := s.loadClient(w, r)
		if !ok {
			return
		}
		f, password := readClientForm(r.PostForm, editClientForm(c))
		if f.hasErrors() {
			s.renderClientPage(w, r, http.StatusBadRequest, a, f)
			return
		}
		// Every field of the form is sent: an unticked box is "off". An
		// empty password keeps the current one.
		u := store.ClientUpdate{IsActive: &f.IsActive, AllowDirectAppCalling: &f.App,
			AllowDirectQueueCalling: &f.Queue, AllowDirectUserCalling: &f.User}
		if password != "" {
			u.Password = &password
		}
		if err := s.clients.UpdateClient(r.Context(), c.SID, u); err != nil {
			s.writeFailed(w, r, a, f, err)
			return
		}
		s.log.Info("sip client updated from the dashboard", "account", a.SID, "client", c.SID,
			"password_reset", password != "", "key", sessionFrom(r.Context()).Principal.KeySID)
		http.Redirect(w, r, accountURL(a.SID)+"?updated="+url.QueryEscape(c.Username), http.StatusSeeOther)
	}
}

func (s *server) handleClientDelete() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.checkCSRF(w, r) {
			return
		}
		a, c, ok := s.loadClient(w, r)
		if !ok {
			return
		}
		if err := s.clients.DeleteClient(r.Context(), c.SID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				s.notFound(w, r)
				return
			}
			s.internalError(w, r, err)
			return
		}
		s.log.Info("sip client deleted from the dashboard", "account", a.SID, "client", c.SID,
			"key", sessionFrom(r.Context()).Principal.KeySID)
		http.Redirect(w, r, accountURL(a.SID)+"?deleted="+url.QueryEscape(c.Username), http.StatusSeeOther)
	}
}

// writeFailed answers a create or update of a client that the store
// refused: 404 for a client gone meanwhile, the form again with the error
// at its field for a client mistake, 500 otherwise.
func (s *server) writeFailed(w http.ResponseWriter, r *http.Request, a store.Account, f clientForm, err error) {
	if errors.Is(err, store.ErrNotFound) {
		s.notFound(w, r)
		return
	}
	status, ok := storeFormError(&f, err)
	if !ok {
		s.internalError(w, r, err)
		return
	}
	s.renderClientPage(w, r, status, a, f)
}

func accountURL(sid string) string { return "/accounts/" + sid }

func clientURL(accountSID, clientSID string) string {
	return "/accounts/" + accountSID + "/clients/" + clientSID
}
