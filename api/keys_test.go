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
