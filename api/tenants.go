package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

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

// --- service providers -------------------------------------------------------

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

// --- accounts ----------------------------------------------------------------

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

// --- API keys ----------------------------------------------------------------

type keyBody struct {
	AccountSID         *string `json:"account_sid"`
	ServiceProviderSID *string `json:"service_provider_sid"`
	ExpirySecs         *int64  `json:"expiry_secs"`
}

func (s *server) handleKeyList() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks, err := s.keys.APIKeys(r.Context(), principal(r.Context()))
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		if ks == nil {
			ks = []store.APIKey{}
		}
		encode(w, http.StatusOK, ks)
	})
}

func (s *server) handleKeyCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b keyBody
		if r.ContentLength != 0 {
			if err := decode(r, &b); err != nil {
				fail(w, r, s.log, err)
				return
			}
		}
		k, err := s.keyToCreate(r.Context(), b)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		k, token, err := s.keys.CreateAPIKey(r.Context(), k)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		encode(w, http.StatusCreated, map[string]string{"sid": k.SID, "token": token})
	})
}

// keyToCreate applies the minting rules: an SP key cannot mint admin keys
// or keys of another provider; an account key only keys of its account.
func (s *server) keyToCreate(ctx context.Context, b keyBody) (store.APIKey, error) {
	p := principal(ctx)
	var k store.APIKey
	if b.ExpirySecs != nil {
		if *b.ExpirySecs <= 0 {
			return k, badRequest("expiry_secs must be a positive number of seconds")
		}
		secs := min(*b.ExpirySecs, 100*365*24*3600) // no overflow of time.Duration
		t := time.Now().Add(time.Duration(secs) * time.Second).UTC()
		k.ExpiresAt = &t
	}
	// A key never outlives the key that minted it: otherwise a short-lived
	// key could mint itself a permanent one.
	if p.ExpiresAt != nil && (k.ExpiresAt == nil || k.ExpiresAt.After(*p.ExpiresAt)) {
		t := p.ExpiresAt.UTC()
		k.ExpiresAt = &t
	}
	if b.AccountSID != nil && *b.AccountSID != "" {
		a, err := s.account(ctx, *b.AccountSID)
		if err != nil {
			return k, err
		}
		k.AccountSID = a.SID
		k.ServiceProviderSID = a.ServiceProviderSID
		return k, nil
	}
	if p.Scope == store.ScopeAccount {
		k.AccountSID = p.AccountSID
		return k, nil
	}
	if b.ServiceProviderSID != nil && *b.ServiceProviderSID != "" {
		if !store.ValidSID(*b.ServiceProviderSID) {
			return k, badRequest("malformed service_provider_sid")
		}
		if !p.CanSeeServiceProvider(*b.ServiceProviderSID) {
			return k, errForbidden
		}
		k.ServiceProviderSID = *b.ServiceProviderSID
		return k, nil
	}
	if p.Scope == store.ScopeServiceProvider {
		k.ServiceProviderSID = p.ServiceProviderSID
	}
	return k, nil // admin: an admin key
}

func (s *server) visibleKey(r *http.Request) (store.APIKey, error) {
	sid, err := sidParam(r, "ApiKeySid", "api key")
	if err != nil {
		return store.APIKey{}, err
	}
	k, err := s.keys.APIKey(r.Context(), sid)
	if err != nil {
		return k, err
	}
	if !principal(r.Context()).CanSeeAPIKey(k) {
		return k, errNotFound
	}
	return k, nil
}
