package api_test

import (
	"strings"
	"testing"

	"github.com/presencehub/presencehub/hub"
)

// TestRealmClaims is issue #9 finding 6: a service-provider key created an
// account with a realm it never owned (201) and then read that realm's
// registrations, contacts and NAT addresses. Now an SP key may only give an
// account its provider's root_domain or a name under it; an admin may give
// any realm. The setup uses only REST, so the test runs unchanged against
// the code before the fix (where the root_domain field did not exist and
// every claim below was 201).
func TestRealmClaims(t *testing.T) {
	f := newFixture(t)
	// A registration in a realm nobody holds yet: what a squatter wants.
	f.register("ceo", "victim.example.net", "udp", hub.Flags{})

	// Admin makes a provider with a root domain and one without, and a key
	// for each.
	var rooted, bare struct{ Sid string }
	f.do(asAdmin, "POST", "/v1/ServiceProviders", map[string]any{"name": "rooted"}).json(t, &rooted)
	f.do(asAdmin, "POST", "/v1/ServiceProviders", map[string]any{"name": "bare"}).json(t, &bare)
	if r := f.do(asAdmin, "PUT", "/v1/ServiceProviders/"+rooted.Sid, map[string]any{"root_domain": "SP.example"}); r.status != 204 {
		t.Errorf("admin sets root_domain: PUT = %d %s, want 204", r.status, r.body)
	}
	var rootedKey, bareKey struct{ Token string }
	f.do(asAdmin, "POST", "/v1/ApiKeys", map[string]any{"service_provider_sid": rooted.Sid}).json(t, &rootedKey)
	f.do(asAdmin, "POST", "/v1/ApiKeys", map[string]any{"service_provider_sid": bare.Sid}).json(t, &bareKey)
	f.keys["rooted"], f.keys["bare"] = rootedKey.Token, bareKey.Token

	var sp map[string]any
	f.do(asAdmin, "GET", "/v1/ServiceProviders/"+rooted.Sid, nil).json(t, &sp)
	if sp["root_domain"] != "sp.example" {
		t.Errorf("GET service provider = %v, want root_domain sp.example (stored lower-cased)", sp)
	}

	n := 0
	create := func(who, realm string) (int, string, string) {
		n++
		body := map[string]any{"name": "acct" + string(rune('a'+n))}
		if realm != "" {
			body["sip_realm"] = realm
		}
		if who == asAdmin {
			body["service_provider_sid"] = rooted.Sid
		}
		r := f.do(who, "POST", "/v1/Accounts", body)
		var c struct{ Sid string }
		if r.status == 201 {
			r.json(t, &c)
		}
		return r.status, string(r.body), c.Sid
	}
	for _, tt := range []struct {
		name, who, realm string
		want             int
		msg              string
	}{
		{"foreign realm", "rooted", "victim.example.net", 403, "not the service provider's root_domain"},
		{"a suffix that is not a subdomain", "rooted", "evilsp.example", 403, "root_domain"},
		{"the parent of the root domain", "rooted", "example", 403, "root_domain"},
		{"trailing dot", "rooted", "acme.sp.example.", 400, "sip_realm"},
		{"under the root domain", "rooted", "acme.sp.example", 201, ""},
		{"deeper under it, other case", "rooted", "Dev.Team.SP.Example", 201, ""},
		{"the root domain itself", "rooted", "sp.example", 201, ""},
		{"no realm", "rooted", "", 201, ""},
		{"provider without root domain claims a realm", "bare", "bare.example.org", 403, "no root_domain"},
		{"provider without root domain, no realm", "bare", "", 201, ""},
		{"admin assigns any realm", asAdmin, "anything.example.org", 201, ""},
	} {
		code, body, _ := create(tt.who, tt.realm)
		if code != tt.want || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: POST /v1/Accounts sip_realm %q as %s = %d %s, want %d containing %q", tt.name, tt.realm, tt.who, code, body, tt.want, tt.msg)
		}
	}

	// The squatter must not read the victim realm's registrations by any
	// account it made.
	var accts []struct {
		Sid   string `json:"account_sid"`
		Realm string `json:"sip_realm"`
	}
	f.do("rooted", "GET", "/v1/Accounts", nil).json(t, &accts)
	for _, a := range accts {
		if a.Realm == "victim.example.net" {
			r := f.do("rooted", "GET", "/v1/Accounts/"+a.Sid+"/RegisteredSipUsers", nil)
			t.Errorf("the SP key holds the foreign realm in account %s and reads its registrations: %d %s", a.Sid, r.status, r.body)
		}
	}

	// Renaming: into a foreign realm 403, within the root domain 204, and
	// keeping a realm the admin assigned outside it (any case) is allowed.
	_, _, acct := create("rooted", "one.sp.example")
	_, _, assigned := create(asAdmin, "assigned.example.org")
	for _, tt := range []struct {
		name, sid, realm string
		want             int
	}{
		{"rename into a foreign realm", acct, "victim.example.net", 403},
		{"rename within the root domain", acct, "two.sp.example", 204},
		{"keep an admin-assigned realm", assigned, "Assigned.Example.org", 204},
		{"move an admin-assigned realm elsewhere outside", assigned, "other.example.org", 403},
		{"give up the realm", assigned, "", 204},
	} {
		if r := f.do("rooted", "PUT", "/v1/Accounts/"+tt.sid, map[string]any{"sip_realm": tt.realm}); r.status != tt.want {
			t.Errorf("%s: PUT sip_realm %q = %d %s, want %d", tt.name, tt.realm, r.status, r.body, tt.want)
		}
	}

	// Only an admin assigns root domains: a provider that set its own could
	// claim any realm.
	for _, tt := range []struct {
		name, who, sid, root string
		want                 int
	}{
		{"SP key widens its own root domain", "rooted", rooted.Sid, "example.net", 403},
		{"SP key gives itself one", "bare", bare.Sid, "example.net", 403},
		{"SP key sends its root domain unchanged", "rooted", rooted.Sid, "sp.example", 204},
		{"admin nests one under another's", asAdmin, bare.Sid, "x.sp.example", 409},
		{"admin sets a malformed one", asAdmin, bare.Sid, "bad domain", 400},
		{"admin assigns one", asAdmin, bare.Sid, "bare.example.org", 204},
	} {
		if r := f.do(tt.who, "PUT", "/v1/ServiceProviders/"+tt.sid, map[string]any{"root_domain": tt.root}); r.status != tt.want {
			t.Errorf("%s: PUT root_domain %q = %d %s, want %d", tt.name, tt.root, r.status, r.body, tt.want)
		}
	}
	if code, body, _ := create("bare", "x.bare.example.org"); code != 201 {
		t.Errorf("after the admin assigned bare.example.org: POST sip_realm x.bare.example.org = %d %s, want 201", code, body)
	}
}
