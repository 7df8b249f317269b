package store

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzTenantInput feeds the checks every REST and dashboard write of a
// service provider, account or SIP client goes through anything. They must
// not panic; what they refuse is ErrInvalid naming a field (a 400, never a
// PostgreSQL error surfacing as a 500); and what they accept is valid UTF-8
// without NUL or control characters (line breaks only in descriptions),
// within jambonz's column sizes, with realms in their stored form.
func FuzzTenantInput(f *testing.F) {
	f.Add("acme", "an SP\nwith two lines", "acme.sp.example", "sp.example", "alice", "pw")
	f.Add("a\x00b", "d\x00", "ACME.example.", " sp.example ", "al ice", "")
	f.Add(strings.Repeat("n", MaxNameLen+1), strings.Repeat("d", MaxDescriptionLen+1), strings.Repeat("a.", 70), "-sp.example", "a@b", strings.Repeat("p", maxPasswordBytes+1))
	f.Add("\xff", "\xfe", "xn--bcher-kva.example", "ünicode.example", "ünïcode", "\xff")
	f.Add("  ", "\t", "a..b", "a.-b", "\u200b", "\u0085")
	f.Fuzz(func(t *testing.T, name, description, realm, rootDomain, username, password string) {
		accepted := func(what, v string, max int, multiline bool) {
			t.Helper()
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				t.Fatalf("%s %q accepted: not valid UTF-8 or holds NUL (PostgreSQL refuses it)", what, v)
			}
			if n := utf8.RuneCountInString(v); n > max {
				t.Fatalf("%s of %d characters accepted, cap %d", what, n, max)
			}
			for _, r := range v {
				if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
					t.Fatalf("%s %q accepted with control character U+%04X", what, v, r)
				}
			}
		}
		refused := func(what string, err error) {
			t.Helper()
			var se *Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &se) || se.Field == "" {
				t.Fatalf("%s refused with %v: want ErrInvalid naming the field", what, err)
			}
		}

		sp := ServiceProvider{Name: name, Description: description, RootDomain: rootDomain}
		if err := checkServiceProvider(&sp); err != nil {
			refused("service provider", err)
		} else {
			accepted("sp name", sp.Name, MaxNameLen, false)
			accepted("sp description", sp.Description, MaxDescriptionLen, true)
			accepted("root_domain", sp.RootDomain, MaxRootDomainLen, false)
			if again, err := normalizeRootDomain(sp.RootDomain); err != nil || again != sp.RootDomain {
				t.Fatalf("root_domain %q is not in its stored form: %q, %v", sp.RootDomain, again, err)
			}
		}

		a := Account{Name: name, ServiceProviderSID: "2d3a5c1e-0000-4000-8000-000000000001", SIPRealm: realm}
		if err := checkAccount(&a); err != nil {
			refused("account", err)
		} else {
			accepted("account name", a.Name, MaxNameLen, false)
			accepted("sip_realm", a.SIPRealm, MaxRealmLen, false)
			if again, err := normalizeRealm(a.SIPRealm); err != nil || again != a.SIPRealm {
				t.Fatalf("sip_realm %q is not in its stored form: %q, %v", a.SIPRealm, again, err)
			}
			if a.SIPRealm != "" && RealmUnder(a.SIPRealm, rootDomain) != (RealmUnder(realm, rootDomain)) {
				t.Fatalf("RealmUnder differs between %q and its stored form %q", realm, a.SIPRealm)
			}
		}

		if err := checkUsername(username); err != nil {
			refused("username", err)
		} else {
			accepted("username", username, 64, false)
			if strings.ContainsAny(username, "@") || strings.IndexFunc(username, unicode.IsSpace) >= 0 {
				t.Fatalf("username %q accepted with '@' or white space", username)
			}
		}
		if err := checkPassword(password); err != nil {
			refused("password", err)
		} else if len(password) > maxPasswordBytes {
			t.Fatalf("a %d-byte password accepted", len(password))
		}
	})
}
