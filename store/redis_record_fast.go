package store

import (
	"strings"
	"unicode/utf8"
)

// parseRecordFast decodes the common shape of a stored registration — one
// flat JSON object whose values are plain strings (no escapes), numbers,
// true, false or null — into rec as json.Unmarshal would, about five times
// faster. It reports false for anything else (escapes, nested values, keys
// that only match a field case-insensitively, invalid UTF-8, a value of the
// wrong type, malformed JSON), and the caller then uses json.Unmarshal,
// which also gives the error. A cold start parses every record once.
func parseRecordFast(v []byte, rec *recordJSON) bool {
	var raw rawStrings
	if !parseRecordRaw(v, rec, &raw) {
		return false
	}
	rec.Contact, rec.Proxy = twoStrings(raw.contact, raw.proxy)
	return true
}

// rawStrings are the fields parseRecordFast copies out of the value, as
// they lie in it, until it is done: the contact and the proxy (the other
// strings are interned).
type rawStrings struct {
	contact, proxy []byte
}

// twoStrings copies a and b into one allocation: a registration's contact
// and proxy live as long as each other, and a change costs one allocation
// less.
func twoStrings(a, b []byte) (string, string) {
	if len(a)+len(b) == 0 {
		return "", ""
	}
	var sb strings.Builder
	sb.Grow(len(a) + len(b))
	sb.Write(a)
	sb.Write(b)
	s := sb.String()
	return s[:len(a)], s[len(a):]
}

// parseRecordRaw is parseRecordFast but for the fields raw receives.
func parseRecordRaw(v []byte, rec *recordJSON, raw *rawStrings) bool {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return false
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == '}' {
		return skipSpace(v, i+1) == len(v)
	}
	for {
		key, next, ok := plainString(v, i)
		if !ok {
			return false
		}
		i = skipSpace(v, next)
		if i >= len(v) || v[i] != ':' {
			return false
		}
		i = skipSpace(v, i+1)
		val, next, ok := scalar(v, i)
		if !ok {
			return false
		}
		if !rec.set(key, val, raw) {
			return false
		}
		i = skipSpace(v, next)
		if i >= len(v) {
			return false
		}
		switch v[i] {
		case ',':
			i = skipSpace(v, i+1)
		case '}':
			return skipSpace(v, i+1) == len(v)
		default:
			return false
		}
	}
}

// set stores one member's raw value (a plain string with its quotes, a
// number, true, false or null) as json.Unmarshal would, or reports false.
func (rec *recordJSON) set(key, val []byte, raw *rawStrings) bool {
	var s *string // a field recordOf interns: see internBytes
	switch string(key) {
	case "contact":
		return raw.set(&raw.contact, val)
	case "sbcAddress":
		s = &rec.SBCAddress
	case "privateSbcAddress":
		s = &rec.PrivateSBCAddress
	case "protocol":
		s = &rec.Protocol
	case "proxy":
		return raw.set(&raw.proxy, val)
	case "callHook":
		return rec.CallHook.set(val)
	case "callStatusHook":
		return rec.CallStatusHook.set(val)
	case "allow_direct_app_calling":
		return rec.AllowDirectApp.UnmarshalJSON(val) == nil
	case "allow_direct_queue_calling":
		return rec.AllowDirectQueue.UnmarshalJSON(val) == nil
	case "allow_direct_user_calling":
		return rec.AllowDirectUser.UnmarshalJSON(val) == nil
	case "expiryTime":
		return rec.ExpiryTime.UnmarshalJSON(val) == nil
	default:
		// json.Unmarshal also matches field names case-insensitively.
		for _, f := range recordFields {
			if len(f) == len(key) && equalFoldASCII(f, key) {
				return false
			}
		}
		return true
	}
	switch val[0] {
	case '"':
		*s = internBytes(val[1 : len(val)-1]) // the fields left here are interned
	case 'n': // null leaves a string as it is
	default: // a number or boolean where a string belongs
		return false
	}
	return true
}

// set keeps a plain string's text (without its quotes) in *dst, or leaves
// it for a null, as json.Unmarshal would.
func (*rawStrings) set(dst *[]byte, val []byte) bool {
	switch val[0] {
	case '"':
		*dst = val[1 : len(val)-1]
	case 'n':
	default: // a number or boolean where a string belongs
		return false
	}
	return true
}

// set is UnmarshalJSON for a scalar, with a plain string taken as it is.
func (a *anyText) set(val []byte) bool {
	switch val[0] {
	case '"': // both hooks are interned
		*a = anyText(internBytes(val[1 : len(val)-1]))
	case 'n':
		*a = ""
	default: // a number, true or false: its text, as UnmarshalJSON keeps it
		*a = anyText(internBytes(val))
	}
	return true
}

var recordFields = []string{"contact", "sbcAddress", "privateSbcAddress", "protocol", "proxy", "callHook",
	"callStatusHook", "allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling", "expiryTime"}

// equalFoldASCII compares ASCII case-insensitively; a non-ASCII byte in b
// counts as a match, so that the caller falls back to json.Unmarshal's
// Unicode folding (K and the Kelvin sign, say).
func equalFoldASCII(a string, b []byte) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if y >= utf8.RuneSelf {
			return true
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the string at v[i] without its quotes when it has no
// escapes, no control characters and only valid UTF-8.
func plainString(v []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(v) || v[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(v); j++ {
		c := v[j]
		if plainByte[c] { // one table look-up for the common byte
			continue
		}
		switch {
		case c == '"':
			s = v[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		default: // c >= utf8.RuneSelf
			ascii = false
		}
	}
	return nil, 0, false
}

// plainByte is true for the bytes plainString passes over: printable
// ASCII but the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scalar returns the raw value at v[i]: a plain string (quotes included), a
// number, true, false or null.
func scalar(v []byte, i int) (val []byte, next int, ok bool) {
	if i >= len(v) {
		return nil, 0, false
	}
	switch c := v[i]; {
	case c == '"':
		_, next, ok := plainString(v, i)
		if !ok {
			return nil, 0, false
		}
		return v[i:next], next, true
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(v)-i >= len(lit) && string(v[i:i+len(lit)]) == lit {
				return v[i : i+len(lit)], i + len(lit), true
			}
		}
		return nil, 0, false
	case c == '-' || '0' <= c && c <= '9':
		n := numberLen(v[i:])
		if n == 0 {
			return nil, 0, false
		}
		return v[i : i+n], i + n, true
	}
	return nil, 0, false
}

// numberLen returns the length of the JSON number at the start of b, or 0.
func numberLen(b []byte) int {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return 0
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0
		}
	}
	return i
}
