package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/presencehub/presencehub/store"
)

// flag is a jambonz boolean: accepts true/false or 0/1, encodes as 0/1.
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", "1":
		*f = true
	case "false", "0":
		*f = false
	default:
		return badRequest("flags must be true, false, 0 or 1, not %s", truncate(string(b), 20))
	}
	return nil
}

func (f flag) MarshalJSON() ([]byte, error) {
	if f {
		return []byte("1"), nil
	}
	return []byte("0"), nil
}

// clientJSON is the jambonz shape of a SIP client.
type clientJSON struct {
	ClientSID               string  `json:"client_sid"`
	AccountSID              string  `json:"account_sid"`
	Username                string  `json:"username"`
	Password                *string `json:"password"` // masked; null when it does not decrypt
	IsActive                flag    `json:"is_active"`
	AllowDirectAppCalling   flag    `json:"allow_direct_app_calling"`
	AllowDirectQueueCalling flag    `json:"allow_direct_queue_calling"`
	AllowDirectUserCalling  flag    `json:"allow_direct_user_calling"`
	// DecryptFailed (only when true; not in jambonz's shape): the stored
	// password does not decrypt with the configured keys.
	DecryptFailed bool `json:"decrypt_failed,omitempty"`
}

func toClientJSON(c store.Client) clientJSON {
	var pw *string
	if !c.DecryptFailed {
		pw = &c.Password
	}
	return clientJSON{c.SID, c.AccountSID, c.Username, pw, flag(c.IsActive),
		flag(c.AllowDirectAppCalling), flag(c.AllowDirectQueueCalling), flag(c.AllowDirectUserCalling), c.DecryptFailed}
}

// clientBody is what POST and PUT accept; absent fields stay unchanged (PUT)
// or take their defaults (POST: active, every flag 1, as jambonz).
type clientBody struct {
	ClientSID               *string `json:"client_sid"`
	AccountSID              *string `json:"account_sid"`
	Username                *string `json:"username"`
	Password                *string `json:"password"`
	IsActive                *flag   `json:"is_active"`
	AllowDirectAppCalling   *flag   `json:"allow_direct_app_calling"`
	AllowDirectQueueCalling *flag   `json:"allow_direct_queue_calling"`
	AllowDirectUserCalling  *flag   `json:"allow_direct_user_calling"`
}

func (s *server) handleClientList() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal(r.Context())
		var f store.ClientFilter
		switch p.Scope {
		case store.ScopeAccount:
			f.AccountSID = p.AccountSID
		case store.ScopeServiceProvider:
			f.ServiceProviderSID = p.ServiceProviderSID
		}
		if sid := r.URL.Query().Get("account_sid"); sid != "" {
			a, err := s.account(r.Context(), sid)
			if err != nil {
				fail(w, r, s.log, err)
				return
			}
			f.AccountSID = a.SID
		}
		cs, err := s.clients.Clients(r.Context(), f)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		out := make([]clientJSON, 0, len(cs))
		for _, c := range cs {
			out = append(out, toClientJSON(c))
		}
		encode(w, http.StatusOK, out)
	})
}

// ownClient loads a client the caller may see; another tenant's client is
// reported as not found, as jambonz does.
func (s *server) ownClient(ctx context.Context, sid string) (store.Client, error) {
	if !store.ValidSID(sid) {
		return store.Client{}, badRequest("malformed client sid %q", truncate(sid, 64))
	}
	c, err := s.clients.Client(ctx, sid)
	if err != nil {
		return store.Client{}, err
	}
	a, err := s.accounts.Account(ctx, c.AccountSID)
	if err != nil || !principal(ctx).CanSeeAccount(a) {
		return store.Client{}, errNotFound
	}
	return c, nil
}

// visibleClient resolves {ClientSid} for the caller.
func (s *server) visibleClient(r *http.Request) (clientJSON, error) {
	c, err := s.ownClient(r.Context(), chi.URLParam(r, "ClientSid"))
	return toClientJSON(c), err
}

func (s *server) deletableClient(r *http.Request) (string, error) {
	c, err := s.ownClient(r.Context(), chi.URLParam(r, "ClientSid"))
	return c.SID, err
}

func (s *server) handleClientCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b clientBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		p := principal(r.Context())
		if b.ClientSID != nil {
			fail(w, r, s.log, badRequest("client_sid is assigned by the server"))
			return
		}
		if p.Scope == store.ScopeAccount {
			// An account key creates clients in its own account; naming
			// another account is refused rather than silently ignored.
			if b.AccountSID != nil && *b.AccountSID != "" && *b.AccountSID != p.AccountSID {
				fail(w, r, s.log, errForbidden)
				return
			}
			b.AccountSID = &p.AccountSID
		}
		if b.AccountSID == nil || *b.AccountSID == "" {
			fail(w, r, s.log, badRequest("missing field account_sid"))
			return
		}
		if b.Username == nil || *b.Username == "" {
			fail(w, r, s.log, badRequest("missing field username"))
			return
		}
		a, err := s.account(r.Context(), *b.AccountSID)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		c := store.Client{AccountSID: a.SID, Username: *b.Username, IsActive: true,
			AllowDirectAppCalling: true, AllowDirectQueueCalling: true, AllowDirectUserCalling: true}
		setFlag(&c.IsActive, b.IsActive)
		setFlag(&c.AllowDirectAppCalling, b.AllowDirectAppCalling)
		setFlag(&c.AllowDirectQueueCalling, b.AllowDirectQueueCalling)
		setFlag(&c.AllowDirectUserCalling, b.AllowDirectUserCalling)
		var password string
		if b.Password != nil {
			password = *b.Password
		}
		created, err := s.clients.CreateClient(r.Context(), c, password)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		encode(w, http.StatusCreated, map[string]string{"sid": created.SID})
	})
}

func setFlag(dst *bool, f *flag) {
	if f != nil {
		*dst = bool(*f)
	}
}

func boolPtr(f *flag) *bool {
	if f == nil {
		return nil
	}
	b := bool(*f)
	return &b
}

func (s *server) handleClientUpdate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.ownClient(r.Context(), chi.URLParam(r, "ClientSid"))
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		var b clientBody
		if err := decode(r, &b); err != nil {
			fail(w, r, s.log, err)
			return
		}
		if b.ClientSID != nil && *b.ClientSID != c.SID {
			fail(w, r, s.log, badRequest("primary key client_sid is immutable"))
			return
		}
		if b.AccountSID != nil && *b.AccountSID != c.AccountSID {
			fail(w, r, s.log, badRequest("account_sid of a client cannot be changed"))
			return
		}
		u := store.ClientUpdate{Username: b.Username, Password: b.Password, IsActive: boolPtr(b.IsActive),
			AllowDirectAppCalling: boolPtr(b.AllowDirectAppCalling), AllowDirectQueueCalling: boolPtr(b.AllowDirectQueueCalling),
			AllowDirectUserCalling: boolPtr(b.AllowDirectUserCalling)}
		if err := s.clients.UpdateClient(r.Context(), c.SID, u); err != nil {
			fail(w, r, s.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// flag encodes as jambonz 0/1.
var _ json.Marshaler = flag(false)
