package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// maxErrorMsg bounds what a 400 may say: a message names a field or a
// position, it does not echo the body back.
const maxErrorMsg = 200

// checkClientError fails unless err is a 400 with a short message.
func checkClientError(t *testing.T, what string, err error) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusBadRequest {
		t.Fatalf("%s: error %v (%T) is not a 400 for the client", what, err, err)
	}
	if len(ae.msg) > maxErrorMsg {
		t.Fatalf("%s: a %d-byte error message: %.80q…", what, len(ae.msg), ae.msg)
	}
}

func postBody(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return r
}

// FuzzReadNames feeds the POST …/RegisteredSipUsers body parser anything.
// It must not panic; its errors are 400s; what it accepts stays within
// maxNames and maxNameLen; and whatever encoding/json reads as an array of
// strings within those limits, readNames reads the same (its fast path
// changes no answer).
func FuzzReadNames(f *testing.F) {
	for _, s := range []string{`["alice","bob"]`, ` [ "a" , "b" ] `, `[]`, `null`, ``, `["a\"b","\u00e9"]`, `["a",]`,
		`[1]`, `{"a":1}`, "[\"\xff\"]", `["` + strings.Repeat("x", maxNameLen+1) + `"]`, `[` + strings.Repeat(`"a",`, maxNames) + `"a"]`,
		`["a"] x`, "\u00a0[\"a\"]", `[[["a"]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		names, err := readNames(postBody(body))
		if err != nil {
			checkClientError(t, "readNames", err)
		} else {
			if len(names) > maxNames {
				t.Fatalf("%d names accepted, cap %d", len(names), maxNames)
			}
			for _, n := range names {
				if len(n) > maxNameLen {
					t.Fatalf("a %d-byte name accepted, cap %d", len(n), maxNameLen)
				}
			}
		}
		var want []string
		if json.Unmarshal(bytes.TrimSpace(body), &want) != nil || len(want) > maxNames {
			return
		}
		for _, n := range want {
			if len(n) > maxNameLen {
				return
			}
		}
		if err != nil || !reflect.DeepEqual(names, want) {
			t.Fatalf("%q: readNames %q, %v; encoding/json %q", body, names, err, want)
		}
	})
}

// FuzzDecodeBodies feeds the REST bodies (service providers, accounts,
// API keys, SIP clients; create and update take the same bodies) anything.
// decode must not panic, and everything it refuses is a 400 with a short
// message (no echo of the body, however long a field name).
func FuzzDecodeBodies(f *testing.F) {
	seeds := []string{
		`{"name":"acme","description":"d","root_domain":"sp.example"}`,
		`{"name":"acme","service_provider_sid":"2d3a5c1e-0000-4000-8000-000000000001","sip_realm":"acme.sp.example"}`,
		`{"account_sid":"2d3a5c1e-0000-4000-8000-000000000001","expiry_secs":3600}`,
		`{"username":"alice","password":"pw","is_active":1,"allow_direct_app_calling":false}`,
		`{"is_active":2}`, `{"is_active":"1"}`, `{"expiry_secs":1e99}`, `{"expiry_secs":-1}`, `{"name":null}`,
		`{"name":"a\u0000b"}`, `{"unknown":1}`, `{"` + strings.Repeat("k", 5000) + `":1}`, `{"name":"a"}{"name":"b"}`,
		`{"name":"a"} x`, `[]`, `null`, ``, `{`, `{"name":`, `{"name":"a",}`, "{\"name\":\"\xff\"}",
		`{"name":` + strings.Repeat("[", 10000) + `}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		var v any
		switch kind % 4 {
		case 0:
			v = new(spBody)
		case 1:
			v = new(accountBody)
		case 2:
			v = new(keyBody)
		case 3:
			v = new(clientBody)
		}
		if err := decode(postBody(body), v); err != nil {
			checkClientError(t, reflect.TypeOf(v).Elem().Name(), err)
		}
	})
}
