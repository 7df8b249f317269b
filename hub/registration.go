package hub

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
type Flags struct {
	App, Queue, User int
}

// SplitAOR splits "user@realm" at its last '@' (as jambonz's registrar does)
// and lower-cases the realm. ok is false when either part is empty.
//
// The realm is lower-cased in ASCII only, exactly as every other realm the hub
// sees: with strings.ToLower a non-ASCII realm from a notification's AOR would
// not find the entry a Registration stored, and never be removed.
func SplitAOR(aor string) (user, realm string, ok bool) {
	i := strings.LastIndexByte(aor, '@')
	if i <= 0 || i == len(aor)-1 {
		return "", "", false
	}
	return aor[:i], lower(aor[i+1:]), true
}

// Status values of a user.
const (
	StatusActive   = "active"
	StatusInactive = "inactive"
)

// appendUser encodes the 9-field jambonz shape of an active registration:
// name, contact, expiryTime, protocol, allow_direct_*, registered_status, proxy.
func appendUser(b []byte, r *Registration) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, r.User)
	b = append(b, `,"contact":`...)
	b = appendNullable(b, r.Contact)
	b = append(b, `,"expiryTime":`...)
	b = strconv.AppendInt(b, r.ExpiryTime, 10)
	b = append(b, `,"protocol":`...)
	b = appendNullable(b, r.Protocol)
	b = appendFlags(b, Flags{r.AllowDirectApp, r.AllowDirectQueue, r.AllowDirectUser})
	b = append(b, `,"registered_status":"active","proxy":`...)
	b = appendNullable(b, r.Proxy)
	return append(b, '}')
}

// appendInactive encodes the 9-field shape of a user with no registration.
func appendInactive(b []byte, name string, f Flags) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, name)
	b = append(b, `,"contact":null,"expiryTime":0,"protocol":null`...)
	b = appendFlags(b, f)
	return append(b, `,"registered_status":"inactive","proxy":null}`...)
}

func appendFlags(b []byte, f Flags) []byte {
	b = append(b, `,"allow_direct_app_calling":`...)
	b = strconv.AppendInt(b, int64(f.App), 10)
	b = append(b, `,"allow_direct_queue_calling":`...)
	b = strconv.AppendInt(b, int64(f.Queue), 10)
	b = append(b, `,"allow_direct_user_calling":`...)
	return strconv.AppendInt(b, int64(f.User), 10)
}

// withEventTime turns a 9-field object into the stream's 10-field object.
func withEventTime(b, user []byte, t time.Time) []byte {
	b = append(b, user[:len(user)-1]...)
	b = append(b, `,"event_time":`...)
	if t.IsZero() {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, t.UnixMilli(), 10)
	}
	return append(b, '}')
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendString(b, s)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
