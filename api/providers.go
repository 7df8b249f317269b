package api

import (
	"net/http"

	"github.com/presencehub/presencehub/store"
)

type spBody struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	RootDomain  *string `json:"root_domain"` // jambonz's field; "" clears it, null or absent keeps it
}

func (s *server) handleSPList() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal(r.Context())
		all, err := s.providers.ServiceProviders(r.Context())
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		out := make([]store.ServiceProvider, 0, len(all))
		for _, sp := range all {
			if p.CanSeeServiceProvider(sp.SID) {
				out = append(out, sp)
			}
		}
		encode(w, http.StatusOK, out)
	})
}

func (s *server) handleSPCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if principal(r.Context()).Scope != store.ScopeAdmin {
			fail(w, r, s.log, errForbidden)
			return
		}
		var b spBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		if b.Name == nil || *b.Name == "" {
			fail(w, r, s.log, badRequest("missing field name"))
			return
		}
		sp := store.ServiceProvider{Name: *b.Name}
		if b.Description != nil {
			sp.Description = *b.Description
		}
		if b.RootDomain != nil {
			sp.RootDomain = *b.RootDomain
		}
		sp, err := s.providers.CreateServiceProvider(r.Context(), sp)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		created(w, sp.SID)
	})
}

// visibleSP resolves {ServiceProviderSid} for the caller.
func (s *server) visibleSP(r *http.Request) (store.ServiceProvider, error) {
	sid, err := sidParam(r, "ServiceProviderSid", "service provider")
	if err != nil {
		return store.ServiceProvider{}, err
	}
	sp, err := s.providers.ServiceProvider(r.Context(), sid)
	if err != nil {
		return sp, err
	}
	if !principal(r.Context()).CanSeeServiceProvider(sp.SID) {
		return sp, errForbidden
	}
	return sp, nil
}

func (s *server) handleSPUpdate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sp, err := s.visibleSP(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		if principal(r.Context()).Scope == store.ScopeAccount {
			fail(w, r, s.log, errForbidden)
			return
		}
		var b spBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		if b.Name != nil {
			sp.Name = *b.Name
		}
		if b.Description != nil {
			sp.Description = *b.Description
		}
		if b.RootDomain != nil {
			// A provider that could set its own root domain could claim
			// any realm with it: only an admin assigns root domains.
			if !sameDomain(*b.RootDomain, sp.RootDomain) && principal(r.Context()).Scope != store.ScopeAdmin {
				fail(w, r, s.log, &apiError{http.StatusForbidden, "only an admin can change a service provider's root_domain"})
				return
			}
			sp.RootDomain = *b.RootDomain
		}
		if err := s.providers.UpdateServiceProvider(r.Context(), sp); err != nil {
			fail(w, r, s.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
