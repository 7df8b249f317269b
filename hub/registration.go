package hub

import (
	"strings"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// Registration is one SIP registration as the SBC stored it under
// "user:<User>@<Realm>". SBC addresses and hooks are kept so nothing is lost,
// but they are never part of any encoding the hub produces.
type Registration struct {
	User  string
	Realm string // lower-cased

	Contact           string
	Protocol          string // udp|tcp|tls|ws|wss, "" when the SBC left it out
	Proxy             string // sip:ip:port, the NAT binding
	SBCAddress        string
	PrivateSBCAddress string
	CallHook          string
	CallStatusHook    string

	AllowDirectApp   int // 0 or 1, as granted by the SBC
	AllowDirectQueue int
	AllowDirectUser  int

	// ExpiryTime is the SBC's expiry in epoch milliseconds (0 if absent).
	ExpiryTime int64
	// Deadline is when the hub itself considers the registration lapsed,
	// computed on this machine's clock from the key's TTL.
	Deadline time.Time
}

// AOR returns "user@realm".
func (r *Registration) AOR() string { return r.User + "@" + r.Realm }

// Flags are the three allow_direct_* permissions of a SIP client.
type Flags = wire.Flags

// SplitAOR splits "user@realm" at its last '@' (as jambonz's registrar does)
// and lower-cases the realm. ok is false when either part is empty.
//
// The realm is folded with Fold, exactly as every other realm the hub sees:
// with strings.ToLower a non-ASCII realm from a notification's AOR would not
// find the entry a Registration stored, and never be removed.
func SplitAOR(aor string) (user, realm string, ok bool) {
	i := strings.LastIndexByte(aor, '@')
	if i <= 0 || i == len(aor)-1 {
		return "", "", false
	}
	return aor[:i], Fold(aor[i+1:]), true
}

// Status values of a user.
const (
	StatusActive   = wire.StatusActive
	StatusInactive = wire.StatusInactive
)

// flags returns the allow_direct_* permissions the SBC granted.
func (r *Registration) flags() Flags {
	return Flags{App: r.AllowDirectApp != 0, Queue: r.AllowDirectQueue != 0, User: r.AllowDirectUser != 0}
}

// userJSONSize is what appendUser needs for r when nothing is escaped, so
// that the cached encoding is allocated once, at its size.
func userJSONSize(r *Registration) int {
	return len(`{"name":"","contact":"","expiryTime":,"protocol":"","allow_direct_app_calling":,"allow_direct_queue_calling":,"allow_direct_user_calling":,"registered_status":"active","proxy":""}`) +
		len(r.User) + len(r.Contact) + len(r.Protocol) + len(r.Proxy) + 20 + 3
}

// appendUser appends the 9-field user object of an active registration.
func appendUser(b []byte, r *Registration) []byte {
	return wire.AppendActive(b, &wire.Active{
		Name: r.User, Contact: r.Contact, ExpiryTime: r.ExpiryTime,
		Protocol: r.Protocol, Proxy: r.Proxy, Flags: r.flags(),
	})
}

// Fold is presencehub's one case-folding rule for SIP usernames and realms:
// ASCII letters are lower-cased, every other byte is kept. The hub keys
// realms and SIP clients by it, the store's unique index on a client's
// username enforces it (fold_username in migration 0002) and the dashboard
// merges SIP clients with registered users by it. It is ASCII-only on
// purpose: Unicode folding differs between Go (strings.ToLower("İ") is
// "i̇") and PostgreSQL, whose lower() follows the database's locale ("i"
// under C.UTF-8, "İ" under C), so two rules would disagree about which
// names are the same.
func Fold(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
