package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/store"
)

type principalKey struct{}

func withPrincipal(ctx context.Context, p store.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principal returns the caller set by requireAuth.
func principal(ctx context.Context) store.Principal {
	p, _ := ctx.Value(principalKey{}).(store.Principal)
	return p
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// requireAuth lets a request through only with a valid, unexpired API key,
// within the rate limits: its client IP's bucket, then (before the token is
// looked up) its IP's failed-authentication bucket, then its key's bucket.
func requireAuth(s *server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := s.lim.proxies.ClientIP(r)
		if d := s.lim.ip.Allow(ip); !d.OK {
			s.tooMany(w, d, "too many requests from your address")
			return
		}
		token, ok := bearer(r)
		if !ok {
			unauthorized(w, "", "missing bearer token: send Authorization: Bearer <api key>")
			return
		}
		p, err := s.authenticate(r, ip, token)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		d := s.lim.key.Allow(p.KeySID)
		if !d.OK {
			s.tooMany(w, d, "too many requests with this api key")
			return
		}
		d.SetHeaders(w.Header())
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// authenticate checks an API key token for a request from ip. An IP whose
// failed-authentication bucket is empty is refused before the lookup, so a
// client spraying made-up tokens costs no database round trip per token;
// only failures take from that bucket, so a valid key is never charged.
func (s *server) authenticate(r *http.Request, ip, token string) (store.Principal, error) {
	if d := s.lim.authFails.Peek(ip); !d.OK {
		s.lim.limited.Add(1)
		return store.Principal{}, &rateLimited{d, "too many failed authentications from your address"}
	}
	p, err := s.auth.Authenticate(r.Context(), token)
	if errors.Is(err, store.ErrUnauthorized) {
		s.lim.authFails.Allow(ip)
	}
	return p, err
}

// rateLimited is a 429 with its bucket's state, for fail.
type rateLimited struct {
	d   ratelimit.Decision
	msg string
}

func (e *rateLimited) Error() string { return e.msg }

// tooMany answers 429 with Retry-After and RateLimit-* headers.
func (s *server) tooMany(w http.ResponseWriter, d ratelimit.Decision, message string) {
	s.lim.limited.Add(1)
	d.SetHeaders(w.Header())
	encode(w, http.StatusTooManyRequests, msg{message})
}

// account resolves an {AccountSid} path value for the caller: 400 when
// malformed, 404 when unknown, 403 when it belongs to another tenant.
func (s *server) account(ctx context.Context, sid string) (store.Account, error) {
	if !store.ValidSID(sid) {
		return store.Account{}, badRequest("malformed account sid %q", truncate(sid, 64))
	}
	a, err := s.accounts.Account(ctx, sid)
	if err != nil {
		return store.Account{}, err
	}
	if !principal(ctx).CanSeeAccount(a) {
		return store.Account{}, errForbidden
	}
	return a, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
