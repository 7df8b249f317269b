package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParseRecord feeds parseRecord (key and value, both decoders: the
// fast one and encoding/json behind it) anything. It must not panic; a
// value above MaxRecordBytes is refused; whatever it accepts, encoding/json
// alone accepts too and decodes to the same registration (so the fast path
// never changes an answer); and nothing in the result is larger than the
// input it came from.
func FuzzParseRecord(f *testing.F) {
	for _, v := range recordCorpus {
		f.Add("user:alice@Example.COM", []byte(v))
	}
	for _, k := range []string{"user:@x", "user:a@", "user:a@b@c", "user:", "alice@example.com", "user:a\x00@b", "user:é@ü.example"} {
		f.Add(k, []byte(recordCorpus[2]))
	}
	f.Add("user:big@example.com", append(append([]byte(`{"contact":"`), bytes.Repeat([]byte{'x'}, MaxRecordBytes)...), `"}`...))
	f.Add("user:deep@example.com", []byte(`{"callHook":`+strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+`}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		reg, err := parseRecord(key, value)
		if len(value) > MaxRecordBytes {
			if err == nil {
				t.Fatalf("a %d-byte value was accepted (cap %d)", len(value), MaxRecordBytes)
			}
			return
		}
		if err != nil {
			return
		}
		user, realm, ok := aorOfKey(key)
		if !ok || reg.User != user || reg.Realm != realm {
			t.Fatalf("key %q gave user %q realm %q; aorOfKey says %q %q %v", key, reg.User, reg.Realm, user, realm, ok)
		}
		var rec recordJSON
		if err := json.Unmarshal(bytes.TrimSpace(value), &rec); err != nil {
			t.Fatalf("parseRecord accepted %q, encoding/json alone refuses it: %v", value, err)
		}
		if want := recordOf(user, realm, &rec, false); reg != want {
			t.Fatalf("%q:\n parseRecord %+v\n encoding/json %+v", value, reg, want)
		}
		for name, s := range map[string]string{"contact": reg.Contact, "protocol": reg.Protocol, "proxy": reg.Proxy,
			"sbcAddress": reg.SBCAddress, "privateSbcAddress": reg.PrivateSBCAddress, "callHook": reg.CallHook, "callStatusHook": reg.CallStatusHook} {
			if len(s) > len(value) {
				t.Fatalf("%s is %d bytes from a %d-byte value", name, len(s), len(value))
			}
		}
	})
}
