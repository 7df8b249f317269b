package api

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/presencehub/presencehub/store"
)

// handleGet answers GET with what load returns; load checks visibility.
func handleGet[T any](s *server, load func(*http.Request) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := load(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		encode(w, http.StatusOK, v)
	})
}

// handleDelete answers DELETE with 204: target resolves what the caller may
// delete (visibility and scope checked) to its sid, del removes it.
func handleDelete(s *server, target func(*http.Request) (string, error), del func(context.Context, string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sid, err := target(r)
		if err == nil {
			err = del(r.Context(), sid)
		}
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// deletableSP: only admin deletes service providers.
func (s *server) deletableSP(r *http.Request) (string, error) {
	sp, err := s.visibleSP(r)
	if err == nil && principal(r.Context()).Scope != store.ScopeAdmin {
		err = errForbidden
	}
	return sp.SID, err
}

// deletableAccount: admin and the account's service provider, not the account itself.
func (s *server) deletableAccount(r *http.Request) (string, error) {
	a, err := s.visibleAccount(r)
	if err == nil && principal(r.Context()).Scope == store.ScopeAccount {
		err = errForbidden
	}
	return a.SID, err
}

func (s *server) deletableKey(r *http.Request) (string, error) {
	k, err := s.visibleKey(r)
	return k.SID, err
}

// visibleAccount resolves {AccountSid} for the caller.
func (s *server) visibleAccount(r *http.Request) (store.Account, error) {
	return s.account(r.Context(), chi.URLParam(r, "AccountSid"))
}

// sidParam validates a sid path value: 400 when malformed.
func sidParam(r *http.Request, name, what string) (string, error) {
	sid := chi.URLParam(r, name)
	if !store.ValidSID(sid) {
		return "", badRequest("malformed %s sid %q", what, truncate(sid, 64))
	}
	return sid, nil
}

func created(w http.ResponseWriter, sid string) {
	encode(w, http.StatusCreated, map[string]string{"sid": sid})
}
