package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/presencehub/presencehub/store"
)

type accountBody struct {
	Name               *string `json:"name"`
	ServiceProviderSID *string `json:"service_provider_sid"`
	SIPRealm           *string `json:"sip_realm"`
}

func (s *server) handleAccountList() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal(r.Context())
		var as []store.Account
		var err error
		switch p.Scope {
		case store.ScopeAdmin:
			as, err = s.accounts.Accounts(r.Context(), r.URL.Query().Get("service_provider_sid"))
		case store.ScopeServiceProvider:
			as, err = s.accounts.Accounts(r.Context(), p.ServiceProviderSID)
		default:
			var a store.Account
			a, err = s.accounts.Account(r.Context(), p.AccountSID)
			as = []store.Account{a}
		}
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		if as == nil {
			as = []store.Account{}
		}
		encode(w, http.StatusOK, as)
	})
}

func (s *server) handleAccountCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal(r.Context())
		if p.Scope == store.ScopeAccount {
			fail(w, r, s.log, errForbidden)
			return
		}
		var b accountBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		a := store.Account{}
		if b.Name == nil || *b.Name == "" {
			fail(w, r, s.log, badRequest("missing field name"))
			return
		}
		a.Name = *b.Name
		if b.SIPRealm != nil {
			a.SIPRealm = *b.SIPRealm
		}
		switch {
		case p.Scope == store.ScopeServiceProvider:
			if b.ServiceProviderSID != nil && *b.ServiceProviderSID != p.ServiceProviderSID {
				fail(w, r, s.log, errForbidden)
				return
			}
			a.ServiceProviderSID = p.ServiceProviderSID
		case b.ServiceProviderSID == nil || *b.ServiceProviderSID == "":
			fail(w, r, s.log, badRequest("missing field service_provider_sid"))
			return
		case !store.ValidSID(*b.ServiceProviderSID):
			fail(w, r, s.log, badRequest("malformed service_provider_sid"))
			return
		default:
			a.ServiceProviderSID = *b.ServiceProviderSID
		}
		if err := s.checkRealmClaim(r.Context(), p, a.ServiceProviderSID, "", a.SIPRealm); err != nil {
			fail(w, r, s.log, err)
			return
		}
		a, err := s.accounts.CreateAccount(r.Context(), a)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		created(w, a.SID)
	})
}

func (s *server) handleAccountUpdate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.account(r.Context(), chi.URLParam(r, "AccountSid"))
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		var b accountBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		p := principal(r.Context())
		if b.ServiceProviderSID != nil && *b.ServiceProviderSID != a.ServiceProviderSID && p.Scope != store.ScopeAdmin {
			fail(w, r, s.log, errForbidden)
			return
		}
		if b.SIPRealm != nil && *b.SIPRealm != a.SIPRealm && p.Scope == store.ScopeAccount {
			fail(w, r, s.log, &apiError{http.StatusForbidden, "an account key cannot change the account's sip_realm"})
			return
		}
		if b.SIPRealm != nil {
			if err := s.checkRealmClaim(r.Context(), p, a.ServiceProviderSID, a.SIPRealm, *b.SIPRealm); err != nil {
				fail(w, r, s.log, err)
				return
			}
			a.SIPRealm = *b.SIPRealm
		}
		if b.Name != nil {
			a.Name = *b.Name
		}
		if b.ServiceProviderSID != nil {
			a.ServiceProviderSID = *b.ServiceProviderSID
		}
		if err := s.accounts.UpdateAccount(r.Context(), a); err != nil {
			fail(w, r, s.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// checkRealmClaim applies the rule of who may give an account a sip_realm
// (issue #9 finding 6; jambonz's root_domain): an admin any realm; a
// service-provider key only its provider's root_domain or a name under it
// (acme.sp.example under sp.example), and none at all while the provider
// has no root_domain. Keeping the current realm (old) or giving it up is
// always allowed. Account keys never get here with a new realm (403
// earlier). A malformed realm is the store's 400.
func (s *server) checkRealmClaim(ctx context.Context, p store.Principal, spSID, old, realm string) error {
	norm, err := store.NormalizeRealm(realm)
	if err != nil {
		return err
	}
	if p.Scope == store.ScopeAdmin || norm == "" || norm == old {
		return nil
	}
	sp, err := s.providers.ServiceProvider(ctx, spSID)
	if err != nil {
		return err
	}
	if sp.RootDomain == "" {
		return &apiError{http.StatusForbidden, fmt.Sprintf("sip_realm %q: the service provider has no root_domain, so only an admin can assign a sip_realm", norm)}
	}
	if !store.RealmUnder(norm, sp.RootDomain) {
		return &apiError{http.StatusForbidden, fmt.Sprintf("sip_realm %q is not the service provider's root_domain %q or a name under it", norm, sp.RootDomain)}
	}
	return nil
}

// sameDomain compares two domains as they are stored.
func sameDomain(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}
