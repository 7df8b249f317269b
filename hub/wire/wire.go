// Package wire is the one home of presencehub's JSON wire format: the
// jambonz user object that the REST API answers with, and every frame of the
// websocket stream (GET /v1/stream), in both directions.
//
// The encoders append to a caller's buffer and never use reflection: the hub
// encodes each user object once when it changes, and a change once for all
// its subscribers. How the bytes of one change frame come together:
//
//	AppendActive / AppendInactive   {"name":…,"contact":…,…,"proxy":…}            the 9-field user object (REST)
//	AppendChange                    "seq":N,"event":"…","user":{…,"event_time":T}}  hub.Change.Body, encoded once
//	AppendChangePrefix              {"type":"change","id":…,"account_sid":…,        per subscription, written before Body
//
// The decode types (User, Frame, Request) are what the Go client and the
// dashboard read and what the server reads from clients.
//
// wire imports only the standard library.
package wire

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Status values of a user object's "registered_status".
const (
	StatusActive   = "active"
	StatusInactive = "inactive"
)

// Frame types the server sends.
const (
	TypeSnapshot     = "snapshot"
	TypeResumed      = "resumed"
	TypeChange       = "change"
	TypeUnsubscribed = "unsubscribed"
	TypeError        = "error"
)

// Frame types a client sends.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
)

// Flags are the three allow_direct_* permissions; 1 or 0 on the wire.
type Flags struct {
	App, Queue, User bool
}

// Active is what the user object of a registered user shows. An empty
// Contact, Protocol or Proxy is encoded as null.
type Active struct {
	Name       string
	Contact    string
	ExpiryTime int64 // epoch milliseconds
	Protocol   string
	Proxy      string
	Flags      Flags
}

// AppendActive appends the 9-field jambonz object of a registered user:
// name, contact, expiryTime, protocol, allow_direct_*, registered_status
// ("active"), proxy.
func AppendActive(b []byte, u *Active) []byte {
	b = append(b, `{"name":`...)
	b = AppendString(b, u.Name)
	b = append(b, `,"contact":`...)
	b = appendNullable(b, u.Contact)
	b = append(b, `,"expiryTime":`...)
	b = strconv.AppendInt(b, u.ExpiryTime, 10)
	b = append(b, `,"protocol":`...)
	b = appendNullable(b, u.Protocol)
	b = appendFlags(b, u.Flags)
	b = append(b, `,"registered_status":"active","proxy":`...)
	b = appendNullable(b, u.Proxy)
	return append(b, '}')
}

// AppendInactive appends the 9-field object of a user with no registration:
// contact, protocol and proxy null, expiryTime 0, the given flags.
func AppendInactive(b []byte, name string, f Flags) []byte {
	b = append(b, `{"name":`...)
	b = AppendString(b, name)
	b = append(b, `,"contact":null,"expiryTime":0,"protocol":null`...)
	b = appendFlags(b, f)
	return append(b, `,"registered_status":"inactive","proxy":null}`...)
}

func appendFlags(b []byte, f Flags) []byte {
	b = append(b, `,"allow_direct_app_calling":`...)
	b = appendBit(b, f.App)
	b = append(b, `,"allow_direct_queue_calling":`...)
	b = appendBit(b, f.Queue)
	b = append(b, `,"allow_direct_user_calling":`...)
	return appendBit(b, f.User)
}

func appendBit(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}

// AppendStreamUser appends the stream's 10-field user object: the 9-field
// object user (from AppendActive or AppendInactive) with "event_time" (epoch
// ms, null for the zero time) added before its closing brace.
func AppendStreamUser(b, user []byte, eventTime time.Time) []byte {
	b = append(b, user[:len(user)-1]...)
	b = append(b, `,"event_time":`...)
	if eventTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, eventTime.UnixMilli(), 10)
	}
	return append(b, '}')
}

// AppendChange appends the part of a change frame that is the same for every
// subscriber: `"seq":N,"event":"…","user":{…10 fields…}}` (with the frame's
// closing brace). user is the 9-field object, t the change's time. A
// transport writes AppendChangePrefix's bytes and then these.
func AppendChange(b []byte, seq uint64, event string, user []byte, t time.Time) []byte {
	b = append(b, `"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"event":`...)
	b = AppendString(b, event)
	b = append(b, `,"user":`...)
	b = AppendStreamUser(b, user, t)
	return append(b, '}')
}

// ChangeSize is an upper bound of what AppendChange adds to a 9-field user
// object of n bytes (for sizing the buffer: one allocation per change).
func ChangeSize(n int) int { return n + 100 }

// AppendChangePrefix appends the per-subscription start of a change frame:
// `{"type":"change","id":ID,"account_sid":SID,` (with `"conflated":true,`
// after the id when the queue was conflated before this change).
func AppendChangePrefix(b []byte, id, accountSID string, conflated bool) []byte {
	b = appendFrameStart(b, TypeChange, id)
	if conflated {
		b = append(b, `,"conflated":true`...)
	}
	b = append(b, `,"account_sid":`...)
	b = AppendString(b, accountSID)
	return append(b, ',')
}

// Snapshot is the header of a snapshot frame.
type Snapshot struct {
	ID         string
	AccountSID string
	Epoch      string
	Seq        uint64
	// NotResumed adds "resumed":false: the client asked to resume and the
	// history no longer reached back.
	NotResumed bool
	// Resync adds "resync":true: the subscriber fell behind.
	Resync bool
}

// AppendSnapshot appends a snapshot frame whose "users" are the given
// 10-field objects (from AppendStreamUser).
func AppendSnapshot(b []byte, s *Snapshot, users [][]byte) []byte {
	b = appendFrameStart(b, TypeSnapshot, s.ID)
	b = append(b, `,"account_sid":`...)
	b = AppendString(b, s.AccountSID)
	b = append(b, `,"epoch":`...)
	b = AppendString(b, s.Epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, s.Seq, 10)
	if s.NotResumed {
		b = append(b, `,"resumed":false`...)
	}
	if s.Resync {
		b = append(b, `,"resync":true`...)
	}
	b = append(b, `,"users":[`...)
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u...)
	}
	return append(b, "]}"...)
}

// SnapshotSize is a capacity hint for AppendSnapshot's output: the users
// and 128 bytes for the header.
func SnapshotSize(users [][]byte) int {
	n := 128
	for _, u := range users {
		n += len(u) + 1
	}
	return n
}

// AppendResumed appends the frame that confirms a resume from epoch/seq; the
// missed changes follow it as change frames.
func AppendResumed(b []byte, id, accountSID, epoch string, seq uint64) []byte {
	b = appendFrameStart(b, TypeResumed, id)
	b = append(b, `,"account_sid":`...)
	b = AppendString(b, accountSID)
	b = append(b, `,"epoch":`...)
	b = AppendString(b, epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// AppendUnsubscribed appends the answer to an unsubscribe.
func AppendUnsubscribed(b []byte, id string) []byte {
	return append(appendFrameStart(b, TypeUnsubscribed, id), '}')
}

// Error codes of an error frame.
const (
	CodeBadRequest = "bad_request"
	CodeForbidden  = "forbidden"
	CodeNotFound   = "not_found"
	CodeInternal   = "internal"
	// CodeUnauthorized ends a subscription (or, before close 4001, the
	// connection) whose authorisation is gone.
	CodeUnauthorized = "unauthorized"
	// CodeLimitExceeded refuses a subscribe past a subscription, watched-user
	// or output-budget cap.
	CodeLimitExceeded = "limit_exceeded"
	// CodeRateLimited refuses a subscribe past a subscribe rate limit.
	CodeRateLimited = "rate_limited"
)

// AppendError appends an error frame (id "" when the error belongs to no
// subscription).
func AppendError(b []byte, id, code, msg string) []byte {
	b = appendFrameStart(b, TypeError, id)
	b = append(b, `,"code":`...)
	b = AppendString(b, code)
	b = append(b, `,"msg":`...)
	b = AppendString(b, msg)
	return append(b, '}')
}

// appendFrameStart appends `{"type":"TYP","id":ID`.
func appendFrameStart(b []byte, typ, id string) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","id":`...)
	return AppendString(b, id)
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return AppendString(b, s)
}

const hexDigits = "0123456789abcdef"

// safeASCII is true for the bytes AppendString copies as they are:
// printable ASCII but the quote, the backslash and the HTML characters.
var safeASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// AppendString appends s as a JSON string, byte for byte as encoding/json's
// Marshal writes it: <, > and & escaped, invalid UTF-8 as U+FFFD, U+2028 and
// U+2029 escaped.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if safeASCII[c] { // one table look-up for the common byte
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
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
