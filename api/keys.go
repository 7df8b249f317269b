package api

import (
	"context"
	"net/http"
	"time"

	"github.com/presencehub/presencehub/store"
)

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
	// A key never outlives the key that minted it: deleting the parent
	// deletes it too, and its expiry is capped below.
	k := store.APIKey{ParentSID: p.KeySID}
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
