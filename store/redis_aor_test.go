package store

import "testing"

func TestAorIn(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"user:alice@example.com", "alice@example.com"},
		{"user:alice@Example.COM", "alice@example.com"},
		{"user:a@b@example.com", "a@b@example.com"},
	} {
		user, realm, ok := aorOfKey(tc.key)
		if !ok {
			t.Fatalf("aorOfKey(%q) not ok", tc.key)
		}
		if got := aorIn(tc.key, user, realm); got != tc.want {
			t.Errorf("aorIn(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
