package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRealmUnder(t *testing.T) {
	tests := []struct {
		realm, root string
		want        bool
	}{
		{"acme.sp.example", "sp.example", true},
		{"sp.example", "sp.example", true},
		{"a.b.sp.example", "sp.example", true},
		{"ACME.SP.Example", "sp.EXAMPLE", true},
		{" acme.sp.example ", "sp.example", true},
		{"evilsp.example", "sp.example", false}, // a suffix, not a subdomain
		{"sp.example.evil", "sp.example", false},
		{"acme.sp.example.", "sp.example", false}, // a trailing dot is not a valid realm here
		{"acme.sp.example", "sp.example.", false},
		{"example", "sp.example", false},
		{"acme.sp.example", "", false}, // no root domain: nothing is under it
		{"", "sp.example", false},
		{"acme..sp.example", "sp.example", false},
		{"acme.sp.example", ".example", false},
	}
	for _, tt := range tests {
		if got := RealmUnder(tt.realm, tt.root); got != tt.want {
			t.Errorf("RealmUnder(%q, %q) = %v, want %v", tt.realm, tt.root, got, tt.want)
		}
	}
}

// TestServiceProviderRootDomain: stored lower-cased, validated like a
// domain (jambonz's 128 characters), unique, and never nested with another
// provider's.
func TestServiceProviderRootDomain(t *testing.T) {
	ctx := context.Background()
	db, _ := openTestDB(t)
	sp, err := db.CreateServiceProvider(ctx, ServiceProvider{Name: "carrier", RootDomain: " SP.Example "})
	if err != nil {
		t.Fatalf("CreateServiceProvider: %v", err)
	}
	if got, _ := db.ServiceProvider(ctx, sp.SID); got.RootDomain != "sp.example" {
		t.Errorf("stored root_domain = %q, want sp.example", got.RootDomain)
	}
	long := ""
	for len(long) < 125 {
		long += "abcdefghi."
	}
	long += "example" // > 128 characters
	tests := []struct {
		name, root string
		want       Kind
	}{
		{"same", "sp.example", KindConflict},
		{"under the other's", "acme.sp.example", KindConflict},
		{"above the other's", "example", KindConflict},
		{"a suffix but not a parent", "evilsp.example", 0},
		{"trailing dot", "other.example.", KindInvalid},
		{"not a domain", "a b.example", KindInvalid},
		{"too long", long, KindInvalid},
		{"control character", "x\x00.example", KindInvalid},
	}
	for i, tt := range tests {
		_, err := db.CreateServiceProvider(ctx, ServiceProvider{Name: "sp" + string(rune('a'+i)), RootDomain: tt.root})
		if got := KindOf(err); got != tt.want {
			t.Errorf("%s: CreateServiceProvider(root_domain %q) = %v, want kind %v", tt.name, tt.root, err, tt.want)
		}
		var e *Error
		if tt.want != 0 && errors.As(err, &e) && e.Field != "root_domain" {
			t.Errorf("%s: error field = %q, want root_domain", tt.name, e.Field)
		}
	}
	// An update is checked the same way, but not against the provider itself.
	sp.Description = "changed"
	if err := db.UpdateServiceProvider(ctx, sp); err != nil {
		t.Errorf("UpdateServiceProvider keeping its own root_domain: %v", err)
	}
	other := mustSP(t, db, "other")
	other.RootDomain = "x.sp.example"
	if err := db.UpdateServiceProvider(ctx, other); KindOf(err) != KindConflict {
		t.Errorf("UpdateServiceProvider to a root_domain under another's = %v, want conflict", err)
	}
	other.RootDomain = ""
	if err := db.UpdateServiceProvider(ctx, other); err != nil {
		t.Errorf("UpdateServiceProvider without root_domain: %v", err)
	}
	if got, _ := db.ServiceProvider(ctx, other.SID); got.RootDomain != "" {
		t.Errorf("root_domain after clearing = %q, want none", got.RootDomain)
	}
}

// TestJambonzMirrorsRootDomain: service_providers.root_domain is mirrored,
// lower-cased, followed when it changes (also when two providers swap
// theirs), and a malformed one leaves the provider mirrored without one.
func TestJambonzMirrorsRootDomain(t *testing.T) {
	ctx := context.Background()
	db, m, j, _ := openJambonz(t, time.Hour)
	a := j.sp("alpha") // root_domain alpha.example.com
	b := j.sp("beta")
	j.exec(`UPDATE service_providers SET root_domain = 'Alpha.Example.COM' WHERE service_provider_sid = ?`, a)
	mustSync(t, m)
	root := func(sid string) string {
		t.Helper()
		sp, err := db.ServiceProvider(ctx, sid)
		if err != nil {
			t.Fatalf("ServiceProvider(%s): %v", sid, err)
		}
		return sp.RootDomain
	}
	if got := root(a); got != "alpha.example.com" {
		t.Errorf("mirrored root_domain = %q, want alpha.example.com", got)
	}

	j.exec(`UPDATE service_providers SET root_domain = NULL WHERE service_provider_sid IN (?, ?)`, a, b)
	j.exec(`UPDATE service_providers SET root_domain = 'beta.example.com' WHERE service_provider_sid = ?`, a)
	j.exec(`UPDATE service_providers SET root_domain = 'alpha.example.com' WHERE service_provider_sid = ?`, b)
	if res := mustSync(t, m); res.Updated != 2 || res.Skipped != 0 {
		t.Errorf("sync after the swap = %+v, want 2 updated, none skipped", res)
	}
	if ga, gb := root(a), root(b); ga != "beta.example.com" || gb != "alpha.example.com" {
		t.Errorf("after the swap: %q, %q; want beta.example.com, alpha.example.com", ga, gb)
	}

	j.exec(`UPDATE service_providers SET root_domain = 'not a domain' WHERE service_provider_sid = ?`, a)
	j.exec(`UPDATE service_providers SET root_domain = NULL WHERE service_provider_sid = ?`, b)
	res := mustSync(t, m)
	if ga, gb := root(a), root(b); ga != "" || gb != "" {
		t.Errorf("malformed and removed root_domain: %q, %q; want none, none", ga, gb)
	}
	if res.Updated != 2 || res.Skipped != 0 {
		t.Errorf("sync with a malformed root_domain = %+v, want both providers updated (the malformed domain is logged, the provider kept)", res)
	}
}
