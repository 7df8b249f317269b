package api_test

import (
	"strings"
	"testing"
)

// TestControlCharactersAndLengths: names, descriptions and realms with
// control characters or beyond jambonz's column sizes are a 400 that says
// which field, never a PostgreSQL error (a NUL used to be a 500).
func TestControlCharactersAndLengths(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, path string
		body               map[string]any
		field              string
	}{
		{"NUL in SP name", "POST", "/v1/ServiceProviders", map[string]any{"name": "a\x00b"}, "name"},
		{"escape in SP name", "POST", "/v1/ServiceProviders", map[string]any{"name": "a\x1b[31m"}, "name"},
		{"65-character SP name", "POST", "/v1/ServiceProviders", map[string]any{"name": strings.Repeat("n", 65)}, "name"},
		{"1 MB SP description", "POST", "/v1/ServiceProviders", map[string]any{"name": "big", "description": strings.Repeat("d", 1<<20-100)}, ""},
		{"256-character SP description", "POST", "/v1/ServiceProviders", map[string]any{"name": "d256", "description": strings.Repeat("d", 256)}, "description"},
		{"NUL in SP description", "POST", "/v1/ServiceProviders", map[string]any{"name": "dnul", "description": "x\x00"}, "description"},
		{"NUL in SP name (update)", "PUT", "/v1/ServiceProviders/" + f.spA.SID, map[string]any{"name": "a\x00"}, "name"},
		{"NUL in account name", "POST", "/v1/Accounts", map[string]any{"name": "a\x00", "service_provider_sid": f.spA.SID}, "name"},
		{"65-character account name", "PUT", "/v1/Accounts/" + f.a1.SID, map[string]any{"name": strings.Repeat("n", 65)}, "name"},
		{"133-character realm", "POST", "/v1/Accounts", map[string]any{"name": "r", "service_provider_sid": f.spA.SID, "sip_realm": strings.Repeat("abcdefghi.", 13) + "com"}, "sip_realm"},
		{"NUL in username", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": "a\x00", "password": "pw"}, "username"},
		{"65-character username", "POST", "/v1/Clients", map[string]any{"account_sid": f.a1.SID, "username": strings.Repeat("u", 65), "password": "pw"}, "username"},
	}
	for _, tt := range tests {
		r := f.do(asAdmin, tt.method, tt.path, tt.body)
		if r.status != 400 {
			t.Errorf("%s: got %d %s, want 400", tt.name, r.status, r.body)
			continue
		}
		if tt.field != "" && !strings.Contains(string(r.body), tt.field) {
			t.Errorf("%s: message %s does not name %q", tt.name, r.body, tt.field)
		}
	}
	// Within the limits, with line breaks in a description: accepted.
	if r := f.do(asAdmin, "POST", "/v1/ServiceProviders", map[string]any{"name": strings.Repeat("n", 64), "description": "line one\nline two\t" + strings.Repeat("d", 200)}); r.status != 201 {
		t.Errorf("64-character name, multi-line 219-character description: %d %s", r.status, r.body)
	}
}
