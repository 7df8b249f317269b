// Package store talks to Redis (the SBC's registrations) and PostgreSQL
// (service providers, accounts, API keys, SIP clients and dashboard
// sessions).
//
// Errors meant for a client are *Error values (errors.go): a Kind that
// unwraps to ErrNotFound, ErrConflict, ErrInvalid or ErrUnauthorized, the
// field at fault and a message; anything else is unexpected.
// store declares no interfaces: its consumers declare the subsets they use.
package store

import "time"

// The dashboard's session cookie: web sets it at sign-in, the stream (api)
// accepts it instead of a bearer key.
const (
	// SessionCookie carries a session token (CreateSession).
	SessionCookie = "ph_session"
	// SecureCookiePrefix comes before a cookie's name when cookies are
	// Secure: the browser then takes the cookie only from this host, over
	// HTTPS, with Path=/ and no Domain.
	SecureCookiePrefix = "__Host-"
)

// Scopes of an API key or session.
const (
	ScopeAdmin           = "admin"
	ScopeServiceProvider = "service_provider"
	ScopeAccount         = "account"
)

// Principal is who a request acts as: the scope of its API key or session.
type Principal struct {
	KeySID             string
	Scope              string
	ServiceProviderSID string // set for service_provider scope (and for account scope: the account's SP)
	AccountSID         string // set for account scope
	ExpiresAt          *time.Time
}

// ServiceProvider is a tenant owning accounts.
type ServiceProvider struct {
	SID         string `json:"service_provider_sid"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// RootDomain, when set, is the domain under which the provider's own
	// keys may give accounts a sip_realm (see RealmUnder); lower-cased,
	// unique; "" when unset.
	RootDomain string `json:"root_domain"`
}

// Account is a tenant with one SIP realm.
type Account struct {
	SID                string `json:"account_sid"`
	Name               string `json:"name"`
	ServiceProviderSID string `json:"service_provider_sid"`
	SIPRealm           string `json:"sip_realm"` // lower-cased, unique; may be empty
}

// APIKey is a stored key. The token itself is only returned once, at
// creation; the database keeps its SHA-256 hash.
type APIKey struct {
	SID                string     `json:"api_key_sid"`
	Scope              string     `json:"scope"`
	ServiceProviderSID string     `json:"service_provider_sid"`
	AccountSID         string     `json:"account_sid"`
	ExpiresAt          *time.Time `json:"expires_at"`
	LastUsed           *time.Time `json:"last_used"`
	CreatedAt          time.Time  `json:"created_at"`
	// ParentSID is the key that minted this one through the API ("" for
	// keys made by the command line, the jambonz mirror, or before
	// migration 0004). Deleting it deletes this key.
	ParentSID string `json:"-"`
}

// Client is a SIP client (credentials a device registers with).
type Client struct {
	SID        string `json:"client_sid"`
	AccountSID string `json:"account_sid"`
	Username   string `json:"username"`
	Password   string `json:"password"` // masked: first character then X for every other
	// DecryptFailed: the stored password does not decrypt with the
	// configured keys; Password is then empty.
	DecryptFailed           bool `json:"decrypt_failed,omitempty"`
	IsActive                bool `json:"is_active"`
	AllowDirectAppCalling   bool `json:"allow_direct_app_calling"`
	AllowDirectQueueCalling bool `json:"allow_direct_queue_calling"`
	AllowDirectUserCalling  bool `json:"allow_direct_user_calling"`
}

// CanSeeAccount reports whether p may read or change account a: admin sees
// every account, a service-provider key the accounts of its provider, an
// account key its own account.
func (p Principal) CanSeeAccount(a Account) bool {
	switch p.Scope {
	case ScopeAdmin:
		return true
	case ScopeServiceProvider:
		return p.ServiceProviderSID != "" && a.ServiceProviderSID == p.ServiceProviderSID
	case ScopeAccount:
		return p.AccountSID != "" && a.SID == p.AccountSID
	}
	return false
}

// CanSeeServiceProvider reports whether p may read service provider sid:
// admin every provider, service-provider and account keys their own.
func (p Principal) CanSeeServiceProvider(sid string) bool {
	return p.Scope == ScopeAdmin || (p.ServiceProviderSID != "" && p.ServiceProviderSID == sid)
}

// CanSeeAPIKey reports whether p may see or delete API key k: admin every
// key, a service-provider key the keys of its provider and of its
// accounts, an account key the keys of its account. Like the other CanSee
// rules it grants nothing on an empty sid (api's canSeeKey matched an
// account principal without an account to every key without one: admin and
// service-provider keys).
func (p Principal) CanSeeAPIKey(k APIKey) bool {
	switch p.Scope {
	case ScopeAdmin:
		return true
	case ScopeServiceProvider:
		return p.ServiceProviderSID != "" && k.ServiceProviderSID == p.ServiceProviderSID
	case ScopeAccount:
		return p.AccountSID != "" && k.AccountSID == p.AccountSID
	}
	return false
}

// ValidSID reports whether s has the form of a sid: a UUID in its canonical
// 36-character form (any case).
func ValidSID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
