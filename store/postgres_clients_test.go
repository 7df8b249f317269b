package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestMaskPassword(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a", "a"},
		{"ab", "aX"},
		{"sdf12412", "sXXXXXXX"}, // jambonz test/clients.js
		{"élan", "éXXX"},         // characters, not bytes
		{"漢字パス", "漢XXX"},
	}
	for _, tt := range tests {
		if got := maskPassword(tt.in); got != tt.want {
			t.Errorf("maskPassword(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsernameValidation(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")

	tests := []struct {
		username string
		want     error
		msg      string // part of the error message
	}{
		{"alice", nil, ""},
		{"+15551234567", nil, ""},
		{"ünïcode", nil, ""},
		{strings.Repeat("x", 64), nil, ""},
		{strings.Repeat("é", 64), nil, ""}, // 64 characters, 128 bytes
		{"", ErrInvalid, "username"},
		{strings.Repeat("y", 65), ErrInvalid, "64"},
		{"bob@example.com", ErrInvalid, "'@'"},
		{"bob smith", ErrInvalid, "whitespace"},
		{"bob\tsmith", ErrInvalid, "whitespace"},
		{"bob\x00", ErrInvalid, "control"},
		{"bob\x7f", ErrInvalid, "control"},
		{"bob\u00a0x", ErrInvalid, "whitespace"},
		{"bad\xffutf8", ErrInvalid, "UTF-8"},
	}
	for _, tt := range tests {
		_, err := db.CreateClient(ctx, Client{AccountSID: acct.SID, Username: tt.username}, "pw")
		wantErr(t, fmt.Sprintf("CreateClient(username %q)", tt.username), err, tt.want)
		if err != nil && tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("CreateClient(username %q): message %q does not mention %q", tt.username, err, tt.msg)
		}
		if se := asError(err); err != nil && (se == nil || se.Field != "username" || se.Kind != KindInvalid) {
			t.Errorf("CreateClient(username %q) = %#v, want an *Error of KindInvalid for field username", tt.username, err)
		}
	}
}

func TestClientUsernameIsUniquePerAccountIgnoringCase(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp := mustSP(t, db, "sp")
	a1, a2 := mustAccount(t, db, sp, "a1", ""), mustAccount(t, db, sp, "a2", "")

	alice := mustClient(t, db, a1, "Alice", "pw")
	_, err := db.CreateClient(ctx, Client{AccountSID: a1.SID, Username: "aLICE"}, "pw")
	wantErr(t, "same username, other case, same account", err, ErrConflict)
	if err != nil && !strings.Contains(err.Error(), "the client's username already exists") {
		t.Errorf("conflict message %q should say \"the client's username already exists\"", err)
	}
	if se := asError(err); se == nil || se.Field != "username" || se.Kind != KindConflict {
		t.Errorf("conflict error = %#v, want an *Error of KindConflict for field username", err)
	}
	mustClient(t, db, a2, "alice", "pw") // another account may use it

	bob := mustClient(t, db, a1, "bob", "pw")
	taken := "ALICE"
	wantErr(t, "rename onto a taken username", db.UpdateClient(ctx, bob.SID, ClientUpdate{Username: &taken}), ErrConflict)
	own := "ALICE"
	wantErr(t, "change the case of one's own username", db.UpdateClient(ctx, alice.SID, ClientUpdate{Username: &own}), nil)
	bad := "a b"
	wantErr(t, "rename to an invalid username", db.UpdateClient(ctx, bob.SID, ClientUpdate{Username: &bad}), ErrInvalid)
}

func TestClientCRUD(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	sp1, sp2 := mustSP(t, db, "sp1"), mustSP(t, db, "sp2")
	a1, a2, b1 := mustAccount(t, db, sp1, "a1", ""), mustAccount(t, db, sp1, "a2", ""), mustAccount(t, db, sp2, "b1", "")

	c, err := db.CreateClient(ctx, Client{AccountSID: a1.SID, Username: "Carol", IsActive: true, AllowDirectQueueCalling: true}, "secret")
	if err != nil {
		t.Fatal(err)
	}
	want := Client{SID: c.SID, AccountSID: a1.SID, Username: "Carol", Password: "sXXXXX", IsActive: true, AllowDirectQueueCalling: true}
	if !ValidSID(c.SID) || c != want {
		t.Errorf("CreateClient returned %+v, want %+v (with a generated sid)", c, want)
	}
	if got, err := db.Client(ctx, c.SID); err != nil || got != want {
		t.Errorf("Client = %+v, %v; want %+v", got, err, want)
	}

	mustClient(t, db, a1, "alice", "pw")
	mustClient(t, db, a2, "Bob", "pw")
	mustClient(t, db, b1, "dave", "pw")
	usernames := func(f ClientFilter) string {
		cs, err := db.Clients(ctx, f)
		if err != nil {
			t.Fatalf("Clients(%+v): %v", f, err)
		}
		var s []string
		for _, c := range cs {
			s = append(s, c.Username)
		}
		return strings.Join(s, ",")
	}
	for _, tt := range []struct {
		f    ClientFilter
		want string
	}{
		{ClientFilter{}, "alice,Bob,Carol,dave"}, // by lower(username)
		{ClientFilter{AccountSID: a1.SID}, "alice,Carol"},
		{ClientFilter{ServiceProviderSID: sp1.SID}, "alice,Bob,Carol"},
		{ClientFilter{ServiceProviderSID: sp2.SID}, "dave"},
		{ClientFilter{AccountSID: a1.SID, ServiceProviderSID: sp2.SID}, ""},
	} {
		if got := usernames(tt.f); got != tt.want {
			t.Errorf("Clients(%+v) = %s, want %s", tt.f, got, tt.want)
		}
	}

	// A partial update changes only what is set.
	f, tr, pw := false, true, "new password"
	err = db.UpdateClient(ctx, c.SID, ClientUpdate{IsActive: &f, AllowDirectAppCalling: &tr, Password: &pw})
	wantErr(t, "UpdateClient", err, nil)
	want.IsActive, want.AllowDirectAppCalling, want.Password = false, true, "nXXXXXXXXXXX"
	if got, _ := db.Client(ctx, c.SID); got != want {
		t.Errorf("after update Client = %+v, want %+v", got, want)
	}
	if got, err := readPassword(db, c.SID); err != nil || got != pw {
		t.Errorf("password after update = %q, %v; want %q", got, err, pw)
	}
	wantErr(t, "an update that sets nothing", db.UpdateClient(ctx, c.SID, ClientUpdate{}), nil)
	if got, _ := db.Client(ctx, c.SID); got != want {
		t.Errorf("after an empty update Client = %+v, want it unchanged %+v", got, want)
	}

	wantErr(t, "DeleteClient", db.DeleteClient(ctx, c.SID), nil)
	_, err = db.Client(ctx, c.SID)
	wantErr(t, "Client after delete", err, ErrNotFound)

	// Deleting an account deletes its clients.
	wantErr(t, "DeleteAccount", db.DeleteAccount(ctx, a2.SID), nil)
	if got := usernames(ClientFilter{}); got != "alice,dave" {
		t.Errorf("clients after deleting account a2 = %s, want alice,dave", got)
	}
}

func TestClientPasswordIsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	db, url := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")
	const pw = "correct horse battery staple"
	c1 := mustClient(t, db, acct, "one", pw)
	c2 := mustClient(t, db, acct, "two", pw)

	raw := func(sid string) []byte {
		var b []byte
		if err := db.pool.QueryRow(ctx, `SELECT password FROM clients WHERE client_sid = $1`, sid).Scan(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	r1, r2 := raw(c1.SID), raw(c2.SID)
	if bytes.Contains(r1, []byte(pw)) || bytes.Contains(r1, []byte("horse")) {
		t.Errorf("stored password %q contains the plaintext", r1)
	}
	if bytes.Equal(r1, r2) {
		t.Errorf("two clients with the same password store the same bytes; want a random nonce per value")
	}
	if len(r1) != len(pw)+sealHeader+28 {
		t.Errorf("stored password is %d bytes, want %d (7 header + 12 nonce + plaintext + 16 tag)", len(r1), len(pw)+sealHeader+28)
	}
	for _, c := range []Client{c1, c2} {
		if got, err := readPassword(db, c.SID); err != nil || got != pw {
			t.Errorf("password of %s = %q, %v; want %q", c.Username, got, err, pw)
		}
	}

	// The ciphertext is bound to its row: copied to another client it does
	// not decrypt.
	sqlExec(t, db, `UPDATE clients SET password = $1 WHERE client_sid = $2`, r1, c2.SID)
	if got, err := readPassword(db, c2.SID); err == nil {
		t.Errorf("password of a row holding another row's ciphertext = %q; want an error", got)
	}

	// Another key cannot read it (and says so instead of returning junk).
	other := openDB(t, url, storetest.OtherEncryptionKey)
	if got, err := readPassword(other, c1.SID); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("password with the wrong key = %q, %v; want a decryption error", got, err)
	}
}

// TestClientErrorFields: the dashboard puts an error next to the field the
// store names, so the store must name it.
func TestClientErrorFields(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")
	long := strings.Repeat("p", maxPasswordBytes+1)
	tests := []struct {
		name  string
		err   error
		kind  Kind
		field string
	}{
		{"password too long", func() error {
			_, err := db.CreateClient(ctx, Client{AccountSID: acct.SID, Username: "a"}, long)
			return err
		}(), KindInvalid, "password"},
		{"update password too long", func() error {
			c := mustClient(t, db, acct, "b", "pw")
			return db.UpdateClient(ctx, c.SID, ClientUpdate{Password: &long})
		}(), KindInvalid, "password"},
		{"no account", func() error { _, err := db.CreateClient(ctx, Client{Username: "c"}, "pw"); return err }(), KindInvalid, "account_sid"},
		{"unknown client", db.DeleteClient(ctx, "00000000-0000-0000-0000-000000000000"), KindNotFound, ""},
	}
	for _, tt := range tests {
		se := asError(tt.err)
		if se == nil || se.Kind != tt.kind || se.Field != tt.field || se.Message == "" {
			t.Errorf("%s: %#v, want an *Error of %v for field %q with a message", tt.name, tt.err, tt.kind, tt.field)
		}
	}
}

// TestUsernameFoldIsTheHubs: the database decides which usernames are the
// same (the unique index) by the rule the hub looks clients up by.
func TestUsernameFoldIsTheHubs(t *testing.T) {
	t.Parallel()
	db, _ := openTestDB(t)
	ctx := context.Background()
	for _, s := range []string{"", "alice", "ALICE", "MiXeD-07", "ZOË", "zoë", "İstanbul", "STRASSE ẞ", "Ǆemal", "ÀÉÎ", "日本"} {
		var got string
		if err := db.pool.QueryRow(ctx, `SELECT fold_username($1)`, s).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := hub.Fold(s); got != want {
			t.Errorf("fold_username(%q) = %q, hub.Fold = %q", s, got, want)
		}
	}

	acct := mustAccount(t, db, mustSP(t, db, "sp"), "acct", "")
	tests := []struct {
		first, second string
		want          error
	}{
		{"Bob", "bOB", ErrConflict}, // ASCII case: the same client
		{"ZOË", "zoë", nil},         // non-ASCII case: two names, as for the hub
		{"İsmail", "ismail", nil},   // lower() folds 'İ' under C.UTF-8; the hub does not
		{"Ǆemal", "ǆemal", nil},
	}
	for _, tt := range tests {
		mustClient(t, db, acct, tt.first, "pw")
		_, err := db.CreateClient(ctx, Client{AccountSID: acct.SID, Username: tt.second}, "pw")
		wantErr(t, fmt.Sprintf("CreateClient(%q) next to %q", tt.second, tt.first), err, tt.want)
	}
}

// readPassword is a client's password in clear, as an SBC reads it.
func readPassword(db *DB, sid string) (string, error) {
	var sealed []byte
	if err := db.pool.QueryRow(context.Background(), `SELECT password FROM clients WHERE client_sid = $1`, sid).Scan(&sealed); err != nil {
		return "", err
	}
	pw, _, err := db.sealer.open(sealed, passwordAAD(sid))
	return pw, err
}
