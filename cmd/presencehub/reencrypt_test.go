package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store/storetest"
)

// TestWeakEncryptionKeyRefused is issue #9 finding 12: serve, seed and
// reencrypt refuse to start with a key of less than 256 bits, saying how to
// make one (and never quoting the key).
func TestWeakEncryptionKeyRefused(t *testing.T) {
	for _, key := range []string{"a", "presencehub-bench-only", "0123456789abcdef0123456789abcdef"} {
		for _, cmd := range []string{"serve", "seed", "reencrypt"} {
			env := map[string]string{
				"PRESENCEHUB_ENCRYPTION_KEY": key,
				// Nothing is listening there: a command that got past the
				// key would fail differently (or, for serve, keep running).
				"PRESENCEHUB_DATABASE_URL": "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
				"PRESENCEHUB_REDIS_URL":    "redis://127.0.0.1:1/0",
				"PRESENCEHUB_LISTEN":       "127.0.0.1:0",
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := run(ctx, []string{cmd}, func(k string) string { return env[k] }, io.Discard, io.Discard)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "openssl rand -hex 32") || !strings.Contains(err.Error(), "PRESENCEHUB_ENCRYPTION_KEY") {
				t.Errorf("%s with key %q: %v; want a refusal naming PRESENCEHUB_ENCRYPTION_KEY and how to make a key", cmd, key, err)
			} else if len(key) > 3 && strings.Contains(err.Error(), key) {
				t.Errorf("%s: the refusal quotes the key: %v", cmd, err)
			}
		}
	}
}

// TestReencryptCommand: after a rotation, reencrypt moves every password to
// the new key (and says how many), a second run finds nothing to do, and
// the previous key is then not needed; a password no configured key reads
// makes it exit non-zero.
func TestReencryptCommand(t *testing.T) {
	db := storetest.NewDatabase(t)
	run1 := func(wantErr bool, env map[string]string, args ...string) string {
		t.Helper()
		env["PRESENCEHUB_DATABASE_URL"] = db
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
		if (err != nil) != wantErr {
			t.Fatalf("%v: %v, want an error: %v\n%s%s", args, err, wantErr, out.String(), errOut.String())
		}
		return out.String()
	}
	old := map[string]string{"PRESENCEHUB_ENCRYPTION_KEY": storetest.EncryptionKey}
	run1(false, old, "seed") // 8 demo clients with passwords
	rotated := map[string]string{"PRESENCEHUB_ENCRYPTION_KEY": storetest.OtherEncryptionKey, "PRESENCEHUB_ENCRYPTION_KEY_PREVIOUS": storetest.EncryptionKey}
	if out := run1(false, rotated, "reencrypt", "--batch", "3"); !strings.Contains(out, "8 passwords read, 8 re-encrypted, 0 already current, 0 did not decrypt") {
		t.Errorf("first reencrypt printed %q, want 8 re-encrypted", out)
	}
	if out := run1(false, rotated, "reencrypt"); !strings.Contains(out, "8 passwords read, 0 re-encrypted, 8 already current") {
		t.Errorf("second reencrypt printed %q, want 8 already current", out)
	}
	if out := run1(false, map[string]string{"PRESENCEHUB_ENCRYPTION_KEY": storetest.OtherEncryptionKey}, "reencrypt"); !strings.Contains(out, "8 already current, 0 did not decrypt") {
		t.Errorf("reencrypt without the previous key printed %q, want 8 already current", out)
	}
	// The old key alone reads none of them now.
	if out := run1(true, old, "reencrypt"); !strings.Contains(out, "8 did not decrypt") {
		t.Errorf("reencrypt with the old key alone printed %q, want 8 did not decrypt", out)
	}
}
