package api

import (
	"context"
	"net/http"
	"strings"

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

// requireAuth lets a request through only with a valid, unexpired API key.
func requireAuth(s *server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			unauthorized(w, "", "missing bearer token: send Authorization: Bearer <api key>")
			return
		}
		p, err := s.dir.Authenticate(r.Context(), token)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// account resolves an {AccountSid} path value for the caller: 400 when
// malformed, 404 when unknown, 403 when it belongs to another tenant.
func (s *server) account(ctx context.Context, sid string) (store.Account, error) {
	if !store.ValidSID(sid) {
		return store.Account{}, badRequest("malformed account sid %q", truncate(sid, 64))
	}
	a, err := s.dir.Account(ctx, sid)
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
