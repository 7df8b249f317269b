package api_test

import (
	"testing"
)

// TestAPIHeaders: every API answer, errors included, forbids MIME sniffing
// and keeps its URL out of Referer.
func TestAPIHeaders(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct{ who, path string }{
		{asNone, "/healthz"}, {asNone, "/v1/nope"}, {asNone, "/v1/Accounts"}, {asAdmin, "/v1/Accounts"},
	} {
		r := f.do(tt.who, "GET", tt.path, nil)
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := r.header.Get(k); got != want {
				t.Errorf("GET %s as %s (%d): %s = %q, want %q", tt.path, tt.who, r.status, k, got, want)
			}
		}
	}
}
