package store

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Column sizes, as jambonz's schema has them.
const (
	MaxNameLen        = 64  // service_providers.name, accounts.name
	MaxDescriptionLen = 255 // service_providers.description
	MaxRealmLen       = 132 // accounts.sip_realm
	MaxRootDomainLen  = 128 // service_providers.root_domain
)

var errMalformedSID = newError(KindInvalid, "", "malformed sid")

// checkSID rejects sids that are not UUIDs before they reach the database
// (where they would fail as invalid_text_representation) and returns the
// canonical lower-case form, which the caches are keyed by.
func checkSID(sid string) (string, error) {
	if !ValidSID(sid) {
		return "", errMalformedSID
	}
	return strings.ToLower(sid), nil
}

// checkOptionalSID is checkSID for a reference that may be empty.
func checkOptionalSID(sid string) (string, error) {
	if sid == "" {
		return "", nil
	}
	return checkSID(sid)
}

// sidOrNew returns sid in canonical form, or a new one when it is empty.
func sidOrNew(sid string) (string, error) {
	if sid == "" {
		return newSID(), nil
	}
	return checkSID(sid)
}

// nullIfEmpty maps "" to SQL NULL for optional columns.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// normalizeRealm lower-cases and trims a SIP realm and checks that it looks
// like a host name (see normalizeDomain). "" (no realm) is allowed.
func normalizeRealm(realm string) (string, error) {
	return normalizeDomain("sip_realm", realm, MaxRealmLen)
}

// NormalizeRealm is the form in which a SIP realm is stored and compared:
// lower-cased and trimmed; ErrInvalid (field sip_realm) when it is not a
// host name.
func NormalizeRealm(realm string) (string, error) { return normalizeRealm(realm) }

// normalizeRootDomain is normalizeRealm for a service provider's
// root_domain (at most 128 characters, as jambonz's column).
func normalizeRootDomain(d string) (string, error) {
	return normalizeDomain("root_domain", d, MaxRootDomainLen)
}

// RealmUnder reports whether realm is rootDomain or a name under it
// (acme.sp.example is under sp.example; evilsp.example is not), comparing
// both as they are stored: lower-cased, trimmed, and only when both are
// valid host names (a trailing dot is not one). An empty rootDomain has
// nothing under it.
func RealmUnder(realm, rootDomain string) bool {
	r, err1 := normalizeRealm(realm)
	d, err2 := normalizeRootDomain(rootDomain)
	if err1 != nil || err2 != nil || r == "" || d == "" {
		return false
	}
	return r == d || strings.HasSuffix(r, "."+d)
}

// normalizeDomain lower-cases and trims a host name held in field and checks
// it: dot-separated labels of letters, digits and hyphens, 1–63 characters
// each, no label starting or ending with a hyphen, max characters at most.
// "" is allowed.
func normalizeDomain(field, name string, max int) (string, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return "", nil
	}
	bad := func(why string) (string, error) {
		return "", newError(KindInvalid, field, "%s %q is not a valid domain name (%s)", field, name, why)
	}
	if err := checkText(field, name, max, false); err != nil {
		return "", err
	}
	for _, label := range strings.Split(name, ".") {
		switch {
		case label == "":
			return bad("empty label")
		case len(label) > 63:
			return bad("label longer than 63 characters")
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad("label starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return bad("only letters, digits, hyphens and dots are allowed")
			}
		}
	}
	return name, nil
}

// checkText refuses what PostgreSQL would refuse (invalid UTF-8, NUL) or
// should not hold: control characters (line breaks and tabs allowed where
// multiline is true) and more than max characters.
func checkText(field, v string, max int, multiline bool) error {
	if !utf8.ValidString(v) {
		return newError(KindInvalid, field, "%s is not valid UTF-8", field)
	}
	n := 0
	for _, r := range v {
		n++
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			return newError(KindInvalid, field, "%s must not contain control characters (found U+%04X)", field, r)
		}
	}
	if n > max {
		return newError(KindInvalid, field, "%s is longer than %d characters", field, max)
	}
	return nil
}

// checkUsername enforces what a SIP user part can carry in our system: 1–64
// characters, no '@' (it would split the AOR "user@realm" wrongly), no
// whitespace or control characters.
func checkUsername(u string) error {
	switch n := utf8.RuneCountInString(u); {
	case u == "":
		return newError(KindInvalid, "username", "missing field username")
	case !utf8.ValidString(u):
		return newError(KindInvalid, "username", "username is not valid UTF-8")
	case n > 64:
		return newError(KindInvalid, "username", "username is longer than 64 characters")
	}
	for _, r := range u {
		switch {
		case r == '@':
			return newError(KindInvalid, "username", "username must not contain '@'")
		case unicode.IsSpace(r):
			return newError(KindInvalid, "username", "username must not contain whitespace")
		case unicode.IsControl(r):
			return newError(KindInvalid, "username", "username must not contain control characters")
		}
	}
	return nil
}
