package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehub/presencehub/store/storetest"
)

// TestParseEncryptionKey is issue #9 finding 12: a key must carry at least
// 256 bits, in hex or base64; anything else is refused with a message that
// says how to make one and never quotes the key.
func TestParseEncryptionKey(t *testing.T) {
	b32 := bytes.Repeat([]byte{0xfb}, 32) // 0xfb gives '+' and '/' in standard base64, '-' and '_' in URL base64
	b31 := b32[:31]
	tests := []struct {
		name    string
		in      string
		want    []byte // nil: refused
		wantMsg string
	}{
		{"one letter", "a", nil, "neither hex nor base64"},
		{"a passphrase", "presencehub-bench-only", nil, "neither hex nor base64"},
		{"empty", "", nil, "is empty"},
		{"blank", "  \n", nil, "is empty"},
		{"31 bytes of hex", hex.EncodeToString(b31), nil, "carries 248 bits, at least 256"},
		{"63 hex digits", hex.EncodeToString(b32)[:63], nil, "neither hex nor base64"},
		{"31 bytes of base64", base64.StdEncoding.EncodeToString(b31), nil, "carries 248 bits"},
		{"hex", hex.EncodeToString(b32), b32, ""},
		{"upper-case hex", strings.ToUpper(hex.EncodeToString(b32)), b32, ""},
		{"hex with a newline", hex.EncodeToString(b32) + "\n", b32, ""},
		{"48 bytes of hex", hex.EncodeToString(append(b32, b32[:16]...)), append(b32, b32[:16]...), ""},
		{"base64", base64.StdEncoding.EncodeToString(b32), b32, ""},
		{"base64 unpadded", base64.RawStdEncoding.EncodeToString(b32), b32, ""},
		{"base64url", base64.URLEncoding.EncodeToString(b32), b32, ""},
		{"base64url unpadded", base64.RawURLEncoding.EncodeToString(b32), b32, ""},
	}
	for _, tt := range tests {
		got, err := ParseEncryptionKey("PRESENCEHUB_ENCRYPTION_KEY", tt.in)
		if tt.want != nil {
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("%s: got %x, %v; want %x", tt.name, got, err, tt.want)
			}
			continue
		}
		switch {
		case err == nil:
			t.Errorf("%s: %q accepted as a key", tt.name, tt.in)
		case !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantMsg) ||
			!strings.Contains(err.Error(), "openssl rand -hex 32") || !strings.Contains(err.Error(), "PRESENCEHUB_ENCRYPTION_KEY"):
			t.Errorf("%s: error %q; want ErrInvalid naming the variable, saying %q and how to make a key", tt.name, err, tt.wantMsg)
		case len(strings.TrimSpace(tt.in)) > 3 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)):
			t.Errorf("%s: the error quotes the key: %q", tt.name, err)
		}
	}
}

func TestOpenRefusesWeakKeys(t *testing.T) {
	tests := []struct {
		name string
		keys Keys
		want string
	}{
		{"weak current key", Keys{Current: "a"}, "PRESENCEHUB_ENCRYPTION_KEY is neither"},
		{"weak previous key", Keys{Current: storetest.EncryptionKey, Previous: "old"}, "PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS is neither"},
		{"previous is the current key", Keys{Current: storetest.EncryptionKey, Previous: " " + storetest.EncryptionKey}, "is the current key"},
	}
	for _, tt := range tests {
		_, err := Open(context.Background(), "postgres://127.0.0.1/x", Options{Keys: tt.keys})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Open = %v, want ErrInvalid saying %q", tt.name, err, tt.want)
		}
	}
}

// storedPassword is a client's password column as stored.
func storedPassword(t *testing.T, db *DB, sid string) []byte {
	t.Helper()
	var b []byte
	if err := db.pool.QueryRow(context.Background(), `SELECT password FROM clients WHERE client_sid = $1`, sid).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyRotation: rows carry the id of the key that wrote them; with the
// old key as --encryption-key-previous they stay readable, new writes use
// the new key, and Reencrypt moves the old rows (idempotently) so that the
// previous key can be dropped.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	old, url := openTestDB(t)
	acct := mustAccount(t, old, mustSP(t, old, "sp"), "acct", "")
	alice := mustClient(t, old, acct, "alice", "alice-pw")
	bob := mustClient(t, old, acct, "bob", "bob-pw")
	oldRaw, _ := ParseEncryptionKey("k", storetest.EncryptionKey)
	if got, want := storedKeyID(storedPassword(t, old, alice.SID)), KeyID(oldRaw); got != want {
		t.Fatalf("stored key id %s, want the key's %s", got, want)
	}

	// Rotated: the new key alone cannot read the old rows, and says so per row.
	alone := openDB(t, url, storetest.OtherEncryptionKey)
	cs, err := alone.Clients(context.Background(), ClientFilter{AccountSID: acct.SID})
	if err != nil {
		t.Fatalf("Clients with the new key alone: %v", err)
	}
	for _, c := range cs {
		if !c.DecryptFailed || c.Password != "" {
			t.Errorf("%s read with the new key alone: password %q, decrypt_failed %v; want it masked and flagged", c.Username, c.Password, c.DecryptFailed)
		}
	}

	rotated, err := Open(context.Background(), url, Options{Keys: Keys{Current: storetest.OtherEncryptionKey, Previous: storetest.EncryptionKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rotated.Close)
	for _, c := range []Client{alice, bob} {
		got, err := rotated.Client(context.Background(), c.SID)
		if err != nil || got.DecryptFailed || got.Password != c.Password {
			t.Errorf("%s with the previous key: %+v, %v; want password %q", c.Username, got, err, c.Password)
		}
	}
	pw := "carol-pw"
	carol := mustClient(t, rotated, acct, "carol", pw)
	if got, want := storedKeyID(storedPassword(t, rotated, carol.SID)), rotated.EncryptionKeyID(); got != want {
		t.Errorf("a new row carries key id %s, want the current key's %s", got, want)
	}

	res, err := rotated.Reencrypt(context.Background(), 1) // one row per batch: every batch boundary is crossed
	if want := (ReencryptResult{Scanned: 3, Reencrypted: 2, Current: 1}); err != nil || res != want {
		t.Fatalf("Reencrypt = %+v, %v; want %+v", res, err, want)
	}
	res, err = rotated.Reencrypt(context.Background(), 500)
	if want := (ReencryptResult{Scanned: 3, Current: 3}); err != nil || res != want {
		t.Fatalf("second Reencrypt = %+v, %v; want %+v (idempotent)", res, err, want)
	}
	// The previous key is no longer needed.
	for _, c := range []Client{alice, bob, carol} {
		got, err := readPassword(alone, c.SID)
		if want := strings.ToLower(c.Username) + "-pw"; err != nil || got != want {
			t.Errorf("%s after reencrypt with the new key alone: %q, %v; want %q", c.Username, got, err, want)
		}
	}
}

// TestLegacyRows: rows written before key ids (AES-GCM under SHA-256 of
// the secret string, no header) are read with --encryption-key-legacy, or
// with the current key's own string, and Reencrypt moves them to the
// current key.
func TestLegacyRows(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")
	legacyRow := func(username, pw, secret string) Client {
		c := mustClient(t, db, acct, username, "placeholder")
		sqlExec(t, db, `UPDATE clients SET password = $1 WHERE client_sid = $2`,
			legacyAEAD(secret).Seal(nil, nil, []byte(pw), []byte(passwordAAD(c.SID))), c.SID)
		return c
	}
	weak := legacyRow("weak", "weak-pw", "a")                                // the old secret was weak
	strong := legacyRow("strong", "strong-pw", storetest.OtherEncryptionKey) // it was already a strong key
	current := mustClient(t, db, acct, "current", "current-pw")

	var logs bytes.Buffer
	upgraded, err := Open(context.Background(), url, Options{
		Keys:   Keys{Current: storetest.OtherEncryptionKey, Legacy: "a"},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upgraded.Close)
	res, err := upgraded.Reencrypt(context.Background(), 500)
	// current was written with testKey, which upgraded does not have.
	if want := (ReencryptResult{Scanned: 3, Reencrypted: 2, Failed: 1}); err != nil || res != want {
		t.Fatalf("Reencrypt = %+v, %v; want %+v", res, err, want)
	}
	if !strings.Contains(logs.String(), current.SID) {
		t.Errorf("the row that did not decrypt is not named in the log:\n%s", logs.String())
	}
	after := openDB(t, url, storetest.OtherEncryptionKey) // no legacy secret any more
	for c, want := range map[Client]string{weak: "weak-pw", strong: "strong-pw"} {
		got, err := readPassword(after, c.SID)
		if err != nil || got != want {
			t.Errorf("%s after reencrypt: %q, %v; want %q", c.Username, got, err, want)
		}
		if id := storedKeyID(storedPassword(t, after, c.SID)); id != after.EncryptionKeyID() {
			t.Errorf("%s after reencrypt carries key id %s, want %s", c.Username, id, after.EncryptionKeyID())
		}
	}
}

// TestUndecryptableRowIsMasked is issue #9 finding 12: one row that does not
// decrypt is shown without its password and flagged, logged once, and the
// rest of the list is unaffected.
func TestUndecryptableRowIsMasked(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")
	mustClient(t, db, acct, "good", "good-pw")
	bad := mustClient(t, db, acct, "bad", "bad-pw")
	sqlExec(t, db, `UPDATE clients SET password = $1 WHERE client_sid = $2`, []byte("PH\x01\x00\x00\x00\x00 not a ciphertext"), bad.SID)

	var logs bytes.Buffer
	reader, err := Open(context.Background(), url, Options{Keys: Keys{Current: testKey}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.Close)
	for range 2 {
		cs, err := reader.Clients(context.Background(), ClientFilter{AccountSID: acct.SID})
		if err != nil || len(cs) != 2 {
			t.Fatalf("Clients = %v, %v; want both clients", cs, err)
		}
		for _, c := range cs {
			switch c.Username {
			case "bad":
				if !c.DecryptFailed || c.Password != "" {
					t.Errorf("bad: password %q decrypt_failed %v; want it empty and flagged", c.Password, c.DecryptFailed)
				}
			case "good":
				if c.DecryptFailed || c.Password != "gXXXXXX" {
					t.Errorf("good: password %q decrypt_failed %v; want gXXXXXX", c.Password, c.DecryptFailed)
				}
			}
		}
	}
	// Logged once, but counted at every read: two reads of one bad row.
	reg := prometheus.NewRegistry()
	reg.MustRegister(reader.Collectors()...)
	if got := gatheredValue(t, reg, "presencehub_decrypt_failures_total"); got != 2 {
		t.Errorf("presencehub_decrypt_failures_total = %v after two reads of one undecryptable row, want 2", got)
	}
	if n := strings.Count(logs.String(), bad.SID); n != 1 {
		t.Errorf("the bad row is logged %d times over two reads, want once:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "not a ciphertext") {
		t.Errorf("the log quotes the stored value:\n%s", logs.String())
	}
}

// gatheredValue is the value of the single counter sample name in reg.
func gatheredValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.Metric) == 1 {
			return f.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("registry has no single sample of %s", name)
	return 0
}
