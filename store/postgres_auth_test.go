package store

import (
	"context"
	"crypto/sha256"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
)

func TestCreateAPIKeyDerivesScope(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp, other := mustSP(t, db, "sp"), mustSP(t, db, "other")
	acct := mustAccount(t, db, sp, "acct", "")
	past := time.Now().Add(-time.Minute)
	future := time.Now().Add(time.Hour).Truncate(time.Microsecond)

	tests := []struct {
		name      string
		in        APIKey
		wantScope string
		wantSP    string
		wantErr   error
	}{
		{"no sids: admin", APIKey{}, ScopeAdmin, "", nil},
		{"provider: service_provider", APIKey{ServiceProviderSID: sp.SID}, ScopeServiceProvider, sp.SID, nil},
		{"account: account, provider filled in", APIKey{AccountSID: acct.SID}, ScopeAccount, sp.SID, nil},
		{"account with its own provider", APIKey{AccountSID: acct.SID, ServiceProviderSID: sp.SID}, ScopeAccount, sp.SID, nil},
		{"account with another provider", APIKey{AccountSID: acct.SID, ServiceProviderSID: other.SID}, "", "", ErrInvalid},
		{"unknown account", APIKey{AccountSID: missingSID}, "", "", ErrInvalid},
		{"unknown provider", APIKey{ServiceProviderSID: missingSID}, "", "", ErrInvalid},
		{"malformed account", APIKey{AccountSID: "acct"}, "", "", ErrInvalid},
		{"expired", APIKey{ExpiresAt: &past}, "", "", ErrInvalid},
		{"expiring later", APIKey{ExpiresAt: &future}, ScopeAdmin, "", nil},
		{"scope given is ignored", APIKey{Scope: ScopeAdmin, ServiceProviderSID: sp.SID}, ScopeServiceProvider, sp.SID, nil},
	}
	for _, tt := range tests {
		k, token, err := db.CreateAPIKey(ctx, tt.in)
		wantErr(t, tt.name, err, tt.wantErr)
		if err != nil {
			continue
		}
		if k.Scope != tt.wantScope || k.ServiceProviderSID != tt.wantSP || k.AccountSID != tt.in.AccountSID {
			t.Errorf("%s: got scope %q sp %q account %q; want %q %q %q", tt.name, k.Scope, k.ServiceProviderSID, k.AccountSID, tt.wantScope, tt.wantSP, tt.in.AccountSID)
		}
		if !strings.HasPrefix(token, "ph_") || len(token) < 40 {
			t.Errorf("%s: token %q: want ph_ and at least 256 random bits", tt.name, token)
		}
		stored, err := db.APIKey(ctx, k.SID)
		if err != nil {
			t.Errorf("%s: APIKey: %v", tt.name, err)
			continue
		}
		if stored.Scope != k.Scope || stored.ServiceProviderSID != k.ServiceProviderSID || stored.CreatedAt.IsZero() ||
			(tt.in.ExpiresAt == nil) != (stored.ExpiresAt == nil) || (stored.ExpiresAt != nil && !stored.ExpiresAt.Equal(*tt.in.ExpiresAt)) {
			t.Errorf("%s: stored key %+v differs from the created %+v", tt.name, stored, k)
		}
		p, err := db.Authenticate(ctx, token)
		if err != nil || p.KeySID != k.SID || p.Scope != k.Scope || p.ServiceProviderSID != k.ServiceProviderSID || p.AccountSID != k.AccountSID {
			t.Errorf("%s: Authenticate = %+v, %v; want the key's principal", tt.name, p, err)
		}
	}
}

func TestAPIKeyTokenIsNotStored(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	k, token := mustKey(t, db, APIKey{})
	var row string
	var hash []byte
	err := db.pool.QueryRow(ctx, `SELECT row_to_json(k)::text, token_hash FROM api_keys k WHERE api_key_sid = $1`, k.SID).Scan(&row, &hash)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(token, "ph_")
	if strings.Contains(row, secret) {
		t.Errorf("the api_keys row contains the token: %s", row)
	}
	if want := sha256.Sum256([]byte(token)); string(hash) != string(want[:]) {
		t.Errorf("token_hash = %x, want sha256(token) = %x", hash, want)
	}
	_, token2 := mustKey(t, db, APIKey{})
	if token2 == token {
		t.Errorf("two keys got the same token")
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	acct := mustAccount(t, db, sp, "acct", "")

	t.Run("valid", func(t *testing.T) {
		k, token := mustKey(t, db, APIKey{AccountSID: acct.SID})
		for i := range 2 { // from the database, then from the cache
			p, err := db.Authenticate(ctx, token)
			want := Principal{KeySID: k.SID, Scope: ScopeAccount, ServiceProviderSID: sp.SID, AccountSID: acct.SID}
			if err != nil || p != want {
				t.Errorf("call %d: Authenticate = %+v, %v; want %+v", i, p, err, want)
			}
		}
	})
	t.Run("unknown", func(t *testing.T) {
		for range 2 { // from the database, then from the cache
			_, err := db.Authenticate(ctx, "ph_not-a-token")
			wantErr(t, "unknown token", err, ErrUnauthorized)
		}
	})
	t.Run("expired in the database", func(t *testing.T) {
		k, token := mustKey(t, db, APIKey{})
		sqlExec(t, db, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE api_key_sid = $1`, k.SID)
		_, err := db.Authenticate(ctx, token)
		wantErr(t, "key with expires_at in the past", err, ErrUnauthorized)
	})
	t.Run("expires while cached", func(t *testing.T) {
		exp := time.Now().Add(300 * time.Millisecond)
		_, token := mustKey(t, db, APIKey{ExpiresAt: &exp})
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		time.Sleep(time.Until(exp) + 10*time.Millisecond)
		_, err := db.Authenticate(ctx, token) // well within the cache TTL
		wantErr(t, "after expiry, from the cache", err, ErrUnauthorized)
	})
	t.Run("deleted here", func(t *testing.T) {
		k, token := mustKey(t, db, APIKey{})
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteAPIKey", db.DeleteAPIKey(ctx, k.SID), nil)
		_, err := db.Authenticate(ctx, token)
		wantErr(t, "deleted key, right after", err, ErrUnauthorized)
	})
	t.Run("deleted by another process", func(t *testing.T) {
		// This process caches the key; another deletes it. The
		// notification must reach this process's cache long before its TTL.
		k, token := mustKey(t, db, APIKey{})
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- db.WatchClients(wctx, func(string, map[string]hub.Flags) {}) }()
		defer func() { cancel(); <-done }()
		waitListening(t, db)
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wantErr(t, "DeleteAPIKey elsewhere", openDB(t, url, testKey).DeleteAPIKey(ctx, k.SID), nil)
		eventually(t, "the deleted key still authenticates", func() bool {
			_, err := db.Authenticate(ctx, token)
			return err != nil
		})
		if d := time.Since(start); d >= authCacheTTL {
			t.Errorf("took %v, as long as the cache TTL: the notification did not do it", d)
		}
	})
	t.Run("last_used is recorded in the background", func(t *testing.T) {
		k, token := mustKey(t, db, APIKey{})
		if k.LastUsed != nil {
			t.Fatalf("a new key has last_used %v", k.LastUsed)
		}
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
		eventually(t, "last_used never set", func() bool {
			got, err := db.APIKey(ctx, k.SID)
			return err == nil && got.LastUsed != nil
		})
	})
	t.Run("principal is a copy", func(t *testing.T) {
		exp := time.Now().Add(time.Hour)
		_, token := mustKey(t, db, APIKey{ExpiresAt: &exp})
		p, _ := db.Authenticate(ctx, token)
		*p.ExpiresAt = time.Now().Add(-time.Hour) // a careless caller
		if _, err := db.Authenticate(ctx, token); err != nil {
			t.Errorf("changing a returned principal changed the cache: %v", err)
		}
	})
}

func TestTouchAtMostOncePerInterval(t *testing.T) {
	db := &DB{touchCh: make(chan string, 10)}
	now := time.Now()
	db.touch("k", now)
	db.touch("k", now.Add(time.Second))
	db.touch("k", now.Add(touchInterval-time.Millisecond))
	if n := len(db.touchCh); n != 1 {
		t.Fatalf("within one interval: %d updates queued, want 1", n)
	}
	db.touch("k", now.Add(touchInterval))
	db.touch("other", now)
	if n := len(db.touchCh); n != 3 {
		t.Fatalf("after the interval and for another key: %d updates queued, want 3", n)
	}
	for range 20 { // a full queue drops instead of blocking
		db.touch("x", now.Add(10*touchInterval))
		now = now.Add(touchInterval)
	}
}

func TestAPIKeysVisibility(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp1, sp2 := mustSP(t, db, "sp1"), mustSP(t, db, "sp2")
	a1, a2 := mustAccount(t, db, sp1, "a1", ""), mustAccount(t, db, sp2, "a2", "")
	admin, _ := mustKey(t, db, APIKey{})
	k1, _ := mustKey(t, db, APIKey{ServiceProviderSID: sp1.SID})
	k2, _ := mustKey(t, db, APIKey{ServiceProviderSID: sp2.SID})
	ka1, _ := mustKey(t, db, APIKey{AccountSID: a1.SID})
	ka2, _ := mustKey(t, db, APIKey{AccountSID: a2.SID})
	name := map[string]string{admin.SID: "admin", k1.SID: "sp1", k2.SID: "sp2", ka1.SID: "a1", ka2.SID: "a2"}

	tests := []struct {
		p    Principal
		want string
	}{
		{Principal{Scope: ScopeAdmin}, "a1 a2 admin sp1 sp2"},
		{Principal{Scope: ScopeServiceProvider, ServiceProviderSID: sp1.SID}, "a1 sp1"},
		{Principal{Scope: ScopeServiceProvider, ServiceProviderSID: sp2.SID}, "a2 sp2"},
		{Principal{Scope: ScopeAccount, ServiceProviderSID: sp1.SID, AccountSID: a1.SID}, "a1"},
		{Principal{Scope: ScopeAccount, AccountSID: a2.SID}, "a2"},
	}
	for _, tt := range tests {
		keys, err := db.APIKeys(ctx, tt.p)
		if err != nil {
			t.Errorf("APIKeys(%+v): %v", tt.p, err)
			continue
		}
		var got []string
		for _, k := range keys {
			got = append(got, name[k.SID])
		}
		sort.Strings(got)
		if strings.Join(got, " ") != tt.want {
			t.Errorf("APIKeys(%s %s%s) = %v, want %s", tt.p.Scope, tt.p.ServiceProviderSID, tt.p.AccountSID, got, tt.want)
		}
	}
	_, err := db.APIKeys(ctx, Principal{Scope: ScopeAccount, AccountSID: ""})
	wantErr(t, "account principal without account", err, ErrInvalid)

	// Deleting an account deletes its keys; deleting a provider its own.
	wantErr(t, "DeleteAccount", db.DeleteAccount(ctx, a2.SID), nil)
	_, err = db.APIKey(ctx, ka2.SID)
	wantErr(t, "key of a deleted account", err, ErrNotFound)
	wantErr(t, "DeleteServiceProvider", db.DeleteServiceProvider(ctx, sp2.SID), nil)
	_, err = db.APIKey(ctx, k2.SID)
	wantErr(t, "key of a deleted provider", err, ErrNotFound)
}

func TestSessions(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")

	t.Run("valid, with the key's scope", func(t *testing.T) {
		keyExp := time.Now().Add(time.Hour)
		k, token := mustKey(t, db, APIKey{ServiceProviderSID: sp.SID, ExpiresAt: &keyExp})
		p, err := db.Authenticate(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		st, err := db.CreateSession(ctx, p, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(st, "phs_") || st == token {
			t.Errorf("session token %q: want a new phs_ token", st)
		}
		for i := range 2 {
			got, err := db.Session(ctx, st)
			if err != nil || got.KeySID != k.SID || got.Scope != ScopeServiceProvider || got.ServiceProviderSID != sp.SID {
				t.Fatalf("call %d: Session = %+v, %v; want the key's principal", i, got, err)
			}
			if got.ExpiresAt == nil || got.ExpiresAt.Before(before.Add(10*time.Minute-time.Second)) || got.ExpiresAt.After(keyExp) {
				t.Errorf("call %d: session expires at %v; want about 10 minutes from now", i, got.ExpiresAt)
			}
		}
		var rows string
		if err := db.pool.QueryRow(ctx, `SELECT json_agg(s)::text FROM sessions s`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(rows, strings.TrimPrefix(st, "phs_")) {
			t.Errorf("the sessions table holds the session token: %s", rows)
		}

		wantErr(t, "DeleteSession", db.DeleteSession(ctx, st), nil)
		_, err = db.Session(ctx, st)
		wantErr(t, "Session after DeleteSession", err, ErrUnauthorized)
		wantErr(t, "DeleteSession twice", db.DeleteSession(ctx, st), nil)
	})
	t.Run("capped by the key's expiry", func(t *testing.T) {
		keyExp := time.Now().Add(time.Minute)
		k, _ := mustKey(t, db, APIKey{ExpiresAt: &keyExp})
		st, err := db.CreateSession(ctx, Principal{KeySID: k.SID}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		p, err := db.Session(ctx, st)
		if err != nil || p.ExpiresAt == nil || p.ExpiresAt.After(keyExp) {
			t.Errorf("Session = %+v, %v; want it to expire with its key at %v", p, err, keyExp)
		}
	})
	t.Run("expired", func(t *testing.T) {
		k, _ := mustKey(t, db, APIKey{})
		st, err := db.CreateSession(ctx, Principal{KeySID: k.SID}, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Session(ctx, st); err != nil {
			t.Fatalf("fresh session: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
		_, err = db.Session(ctx, st)
		wantErr(t, "Session after its lifetime", err, ErrUnauthorized)
	})
	t.Run("key deleted", func(t *testing.T) {
		k, _ := mustKey(t, db, APIKey{})
		st, err := db.CreateSession(ctx, Principal{KeySID: k.SID}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Session(ctx, st); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DeleteAPIKey", db.DeleteAPIKey(ctx, k.SID), nil)
		_, err = db.Session(ctx, st)
		wantErr(t, "Session of a deleted key", err, ErrUnauthorized)
	})
	t.Run("key expired", func(t *testing.T) {
		k, _ := mustKey(t, db, APIKey{})
		st, err := db.CreateSession(ctx, Principal{KeySID: k.SID}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sqlExec(t, db, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE api_key_sid = $1`, k.SID)
		_, err = db.Session(ctx, st)
		wantErr(t, "Session of an expired key", err, ErrUnauthorized)
		_, err = db.CreateSession(ctx, Principal{KeySID: k.SID}, time.Hour)
		wantErr(t, "CreateSession with an expired key", err, ErrUnauthorized)
	})
}

// TestAuthChanged: holders of long-lived authorisations (stream
// connections) hear of every change that can end one: a key or session
// deleted here, or by another process while the watcher listens.
func TestAuthChanged(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	ctx := context.Background()
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(3 * time.Second):
			return false
		}
	}
	k1, _ := mustKey(t, db, APIKey{})
	k2, _ := mustKey(t, db, APIKey{})
	session, err := db.CreateSession(ctx, Principal{KeySID: k1.SID}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- db.WatchClients(wctx, func(string, map[string]hub.Flags) {}) }()
	defer func() { cancel(); <-done }()
	waitListening(t, db)

	other := openDB(t, url, testKey)
	tests := []struct {
		name   string
		change func() error
	}{
		{"session deleted here (sign-out)", func() error { return db.DeleteSession(ctx, session) }},
		{"key deleted here", func() error { return db.DeleteAPIKey(ctx, k1.SID) }},
		{"key deleted by another process", func() error { return other.DeleteAPIKey(ctx, k2.SID) }},
	}
	for _, tc := range tests {
		ch := db.AuthChanged()
		if err := tc.change(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !closed(ch) {
			t.Errorf("%s: AuthChanged not signalled within 3s", tc.name)
		}
	}
}
