package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
)

// TestChildKeyNeverOutlivesParent: a key minted by a key with an expiry
// expires no later than it, whatever expiry the request asks for.
func TestChildKeyNeverOutlivesParent(t *testing.T) {
	f := newFixture(t)
	parentExp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	_, parent, err := f.db.CreateAPIKey(context.Background(), store.APIKey{ServiceProviderSID: f.spA.SID, ExpiresAt: &parentExp})
	if err != nil {
		t.Fatal(err)
	}
	f.keys["parent"] = parent
	tests := []struct {
		name string
		body map[string]any
		want time.Time // zero: the requested expiry stands
	}{
		{"no expiry asked", map[string]any{}, parentExp},
		{"a later expiry asked", map[string]any{"expiry_secs": 7200}, parentExp},
		{"an absurd expiry asked", map[string]any{"expiry_secs": int64(1) << 62}, parentExp},
		{"an account key without expiry", map[string]any{"account_sid": f.a1.SID}, parentExp},
		{"an earlier expiry stands", map[string]any{"expiry_secs": 60}, time.Time{}},
	}
	for _, tt := range tests {
		r := f.do("parent", "POST", "/v1/ApiKeys", tt.body)
		if r.status != 201 {
			t.Fatalf("%s: %d %s", tt.name, r.status, r.body)
		}
		var c struct{ Sid string }
		r.json(t, &c)
		k, err := f.db.APIKey(context.Background(), c.Sid)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case k.ExpiresAt == nil:
			t.Errorf("%s: the child never expires; the parent expires at %v", tt.name, parentExp)
		case !tt.want.IsZero() && !k.ExpiresAt.Equal(tt.want):
			t.Errorf("%s: child expires at %v, want the parent's %v", tt.name, k.ExpiresAt, tt.want)
		case tt.want.IsZero() && !k.ExpiresAt.Before(parentExp):
			t.Errorf("%s: child expires at %v, not before the parent's %v", tt.name, k.ExpiresAt, parentExp)
		}
	}
}

// TestDeletingAKeyRevokesTheKeysItMinted is issue #9's "child keys never
// outlive the key that minted them" for deletion: a key minted by a key
// (and the key minted by that one) answers 401 once the first is deleted;
// a key minted by someone else is untouched.
func TestDeletingAKeyRevokesTheKeysItMinted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	parent, parentTok, err := f.db.CreateAPIKey(ctx, store.APIKey{ServiceProviderSID: f.spA.SID})
	if err != nil {
		t.Fatal(err)
	}
	f.keys["parent"] = parentTok
	mint := func(by, name string, body map[string]any) {
		t.Helper()
		r := f.do(by, "POST", "/v1/ApiKeys", body)
		if r.status != 201 {
			t.Fatalf("%s mints %s: %d %s", by, name, r.status, r.body)
		}
		var k struct{ Token string }
		r.json(t, &k)
		f.keys[name] = k.Token
	}
	mint("parent", "child", map[string]any{})
	mint("child", "grandchild", map[string]any{"account_sid": f.a1.SID})
	mint(asSP, "sibling", map[string]any{}) // minted by another key of the same provider
	for _, who := range []string{"parent", "child", "grandchild", "sibling"} {
		if got := f.do(who, "GET", "/v1/Accounts/"+f.a1.SID, nil).status; got != 200 {
			t.Fatalf("%s before the delete: GET account %d, want 200", who, got)
		}
	}
	if got := f.do(asAdmin, "DELETE", "/v1/ApiKeys/"+parent.SID, nil).status; got != 204 {
		t.Fatalf("DELETE parent: %d", got)
	}
	for who, want := range map[string]int{"parent": 401, "child": 401, "grandchild": 401, "sibling": 200} {
		if got := f.do(who, "GET", "/v1/Accounts/"+f.a1.SID, nil).status; got != want {
			t.Errorf("%s after the parent's delete: GET account %d, want %d", who, got, want)
		}
	}
}
