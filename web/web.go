// Package web is presencehub's dashboard: templ pages rendered from the hub's
// snapshot (the same one REST and the stream read), made live in the browser
// by static/dashboard.js over /v1/stream.
//
// Sign-in exchanges an API key for a server-side session (cookie ph_session:
// HttpOnly, SameSite=Strict, Secure over TLS); the key never reaches browser
// storage. Every form carries a CSRF token derived from the session (or, for
// the sign-in form, a double-submit cookie) and cross-origin POSTs are
// refused outright. Pages carry a strict Content-Security-Policy: no inline
// script, style or handler anywhere; data for JS travels in a JSON data block.
//
// Components never call the hub or the store: handlers build view models with
// pure functions (BuildRows, Count, ApplyQuery, …) and pass them in.
package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// Presence is the part of *hub.Hub the dashboard reads.
type Presence interface {
	Users(realm string) []hub.UserView
	Stats(realm string) hub.Stats
	Recent(realm string, n int) []*hub.Change
	// Claim records which account holds a realm; a change of holder drops
	// the realm's history and gives it a new epoch (see hub.Hub.Claim).
	Claim(realm, owner string)
}

// Sessions signs users in and out: an API key becomes a dashboard session.
type Sessions interface {
	// Authenticate returns store.ErrUnauthorized for a bad or expired key.
	Authenticate(ctx context.Context, token string) (store.Principal, error)
	CreateSession(ctx context.Context, p store.Principal, ttl time.Duration) (string, error)
	// Session returns store.ErrUnauthorized for an unknown or expired session.
	Session(ctx context.Context, token string) (store.Principal, error)
	DeleteSession(ctx context.Context, token string) error
}

// Accounts reads the accounts a page shows.
type Accounts interface {
	// Account returns store.ErrNotFound, or store.ErrInvalid for a malformed sid.
	Account(ctx context.Context, sid string) (store.Account, error)
	// Accounts lists the accounts of a service provider ("" for all).
	Accounts(ctx context.Context, serviceProviderSID string) ([]store.Account, error)
}

// Clients lists and edits SIP clients (the client pages and forms).
type Clients interface {
	Clients(ctx context.Context, f store.ClientFilter) ([]store.Client, error)
	Client(ctx context.Context, sid string) (store.Client, error)
	// CreateClient returns a *store.Error of KindConflict for a duplicate
	// username and of KindInvalid, naming the Field, for a value it refuses.
	CreateClient(ctx context.Context, c store.Client, password string) (store.Client, error)
	UpdateClient(ctx context.Context, sid string, u store.ClientUpdate) error
	DeleteClient(ctx context.Context, sid string) error
}

// Options configure the dashboard.
type Options struct {
	Presence Presence
	// Sessions, Accounts and Clients are where the tenants live (serve
	// passes its *store.DB for each).
	Sessions Sessions
	Accounts Accounts
	Clients  Clients
	// Logger receives the dashboard's logs (default slog.Default()).
	Logger *slog.Logger
	// SessionTTL is how long a sign-in lasts (default 12h).
	SessionTTL time.Duration
	// Secure marks cookies Secure even when the request itself is not TLS
	// (set it behind a TLS-terminating proxy).
	Secure bool
	// Now is the clock (default time.Now); tests may replace it.
	Now func() time.Time
	// SignIns limits sign-in attempts per client IP (nil: no limit).
	SignIns *ratelimit.Limiter
	// Proxies whose X-Forwarded-For names the client.
	Proxies ratelimit.Proxies
	// ManagedInJambonz says SIP clients are mirrored from jambonz's
	// database: pages show them without edit forms, and the form
	// endpoints answer 409.
	ManagedInJambonz bool
	// History gives the user pages their sessions; nil when the
	// registration history is off.
	History History
	// FlapSessions: a user is flapping with more than this many sessions,
	// or NAT binding changes, in the last hour (default 6).
	FlapSessions int
}

// Cookie names.
const (
	// store.SessionCookie holds the dashboard session; /v1/stream
	// authenticates browsers by it.
	signInCookie = "ph_signin" // double-submit CSRF token of the sign-in form
	csrfField    = "csrf_token"
)

// CSP is the Content-Security-Policy of every response.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// maxForm bounds every form body.
const maxForm = 64 << 10

type server struct {
	pres     Presence
	sessions Sessions
	accounts Accounts
	clients  Clients
	log      *slog.Logger
	ttl      time.Duration
	secure   bool
	now      func() time.Time

	signIns *ratelimit.Limiter
	proxies ratelimit.Proxies
	// managed: clients are mirrored from jambonz and read-only here.
	managed bool

	hist History
	flap int
}

// New returns the dashboard as one http.Handler serving /, /signin,
// /signout, /accounts/… and /static/….
func New(opts Options) http.Handler {
	s := &server{pres: opts.Presence, sessions: opts.Sessions, accounts: opts.Accounts, clients: opts.Clients, log: opts.Logger, ttl: opts.SessionTTL,
		secure: opts.Secure, now: opts.Now, signIns: opts.SignIns, proxies: opts.Proxies,
		managed: opts.ManagedInJambonz, hist: opts.History, flap: opts.FlapSessions}
	if s.flap <= 0 {
		s.flap = 6
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.ttl <= 0 {
		s.ttl = 12 * time.Hour
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s.routes()
}

// clientWrite refuses the client forms while clients are mirrored from
// jambonz (a change here would be overwritten by the next sync).
func (s *server) clientWrite(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.managed {
			s.errorPage(w, r, http.StatusConflict, "Managed in jambonz",
				"SIP clients are mirrored from jambonz: create, change and delete them in jambonz.")
			return
		}
		h(w, r)
	}
}

// routes lists every page of the dashboard.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(securityHeaders)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { s.notFound(w, r) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed", "This address does not accept that kind of request.")
	})

	r.Get("/static/*", staticHandler().ServeHTTP)
	r.Head("/static/*", staticHandler().ServeHTTP)

	r.Get("/signin", s.handleSignInForm())
	r.Post("/signin", s.handleSignIn())
	r.Post("/signout", s.handleSignOut())

	r.Group(func(r chi.Router) {
		r.Use(s.requireSession)
		r.Get("/", s.handleHome())
		r.Get("/accounts/{AccountSid}", s.handleAccount())
		r.Get("/accounts/{AccountSid}/chart", s.handleChart())
		r.Get("/accounts/{AccountSid}/users/{name}", s.handleUser())
		r.Get("/accounts/{AccountSid}/clients/new", s.clientWrite(s.handleClientNew()))
		r.Post("/accounts/{AccountSid}/clients", s.clientWrite(s.handleClientCreate()))
		r.Get("/accounts/{AccountSid}/clients/{ClientSid}", s.handleClientEdit())
		r.Post("/accounts/{AccountSid}/clients/{ClientSid}", s.clientWrite(s.handleClientUpdate()))
		r.Post("/accounts/{AccountSid}/clients/{ClientSid}/delete", s.clientWrite(s.handleClientDelete()))
	})

	// Browsers say where a request comes from (Sec-Fetch-Site, Origin):
	// refuse cross-origin POSTs before any handler runs. The per-session
	// token below is the second line, for browsers that send neither.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		s.errorPage(w, r, http.StatusForbidden, "Forbidden", "Cross-site requests are not accepted.")
	}))
	return cop.Handler(r)
}

func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// securityHeaders sets the CSP and friends on every response.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

// session is the signed-in caller of a request.
type session struct {
	Principal store.Principal
	Token     string
}

// CSRF is the session's form token: an HMAC keyed by the session token, so
// it is stable for the session's life (across restarts and replicas), needs
// no storage, and cannot be computed without the HttpOnly cookie.
func (ss session) CSRF() string { return csrfToken(ss.Token) }

func csrfToken(sessionToken string) string {
	m := hmac.New(sha256.New, []byte(sessionToken))
	m.Write([]byte("presencehub dashboard csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

type sessionKey struct{}

func sessionFrom(ctx context.Context) session {
	ss, _ := ctx.Value(sessionKey{}).(session)
	return ss
}

// lookupSession returns the request's session; ok is false when there is
// none or it expired. err is set only for an unexpected failure.
func (s *server) lookupSession(r *http.Request) (ss session, ok bool, err error) {
	c, cerr := s.readCookie(r, store.SessionCookie)
	if cerr != nil || c.Value == "" || len(c.Value) > 512 {
		return session{}, false, nil
	}
	p, err := s.sessions.Session(r.Context(), c.Value)
	switch {
	case errors.Is(err, store.ErrUnauthorized), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return session{}, false, nil
	case err != nil:
		return session{}, false, err
	}
	return session{Principal: p, Token: c.Value}, true, nil
}

// requireSession sends a signed-out visitor to the sign-in page (303 with
// the page to come back to).
func (s *server) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, ok, err := s.lookupSession(r)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		if !ok {
			if _, err := s.readCookie(r, store.SessionCookie); err == nil {
				s.clearCookie(w, r, store.SessionCookie) // expired or revoked
			}
			to := "/signin"
			if r.Method == http.MethodGet && r.URL.Path != "/" {
				to += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, ss)))
	})
}

// checkCSRF parses the form and compares its token with the session's.
func (s *server) checkCSRF(w http.ResponseWriter, r *http.Request) bool {
	ss := sessionFrom(r.Context())
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return false
	}
	got := r.PostForm.Get(csrfField)
	if ss.Token == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(ss.CSRF())) != 1 {
		s.errorPage(w, r, http.StatusForbidden, "Forbidden",
			"The form's security token is missing or out of date. Go back, reload the page and try again.")
		return false
	}
	return true
}

// cookieName is name with the __Host- prefix when cookies are Secure: the
// browser then accepts the cookie only from this host over HTTPS with Path=/
// and no Domain, so a sibling subdomain cannot plant or shadow it.
func (s *server) cookieName(r *http.Request, name string) string {
	if s.secure || r.TLS != nil {
		return store.SecureCookiePrefix + name
	}
	return name
}

// readCookie returns the request's cookie called name (prefixed when secure).
func (s *server) readCookie(r *http.Request, name string) (*http.Cookie, error) {
	return r.Cookie(s.cookieName(r, name))
}

func (s *server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: s.cookieName(r, name), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure || r.TLS != nil,
	}
}

func (s *server) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, s.cookie(r, name, "", -1))
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// safeNext returns next when it is a path on this site, else "/": a sign-in
// link must not be able to send the user elsewhere.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || strings.HasPrefix(next, "//") ||
		strings.ContainsAny(next, "\\\r\n\t") {
		return "/"
	}
	return next
}

// render writes a full page. The page is rendered into a buffer first, so a
// rendering error still becomes a clean 500 and headers precede the body.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		s.log.Error("render failed", "path", r.URL.Path, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("internal error\n"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages hold tenant data and the CSRF token: never cache them.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// meta is the layout's data for a request.
func (s *server) meta(r *http.Request, title string) pageMeta {
	ss := sessionFrom(r.Context())
	m := pageMeta{Title: title}
	if ss.Token != "" {
		m.SignedIn, m.Principal, m.CSRF = true, ss.Principal, ss.CSRF()
	}
	return m
}

func (s *server) errorPage(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	s.render(w, r, status, errorPage(s.meta(r, title), status, title, msg))
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	s.errorPage(w, r, http.StatusNotFound, "Not found", "There is no page at this address.")
}

func (s *server) forbidden(w http.ResponseWriter, r *http.Request) {
	s.errorPage(w, r, http.StatusForbidden, "Forbidden", "Your key does not give access to this account.")
}

// internalError logs err and answers a generic 500: only for failures that
// are not the client's doing.
func (s *server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	s.errorPage(w, r, http.StatusInternalServerError, "Something went wrong", "The server could not complete this request. Try again in a moment.")
}
