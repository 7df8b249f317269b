package api

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/presencehub/presencehub/store"
)

const sidA = "aa000000-0000-4000-8000-0000000000a1"

func TestParseClientFrame(t *testing.T) {
	long := strings.Repeat("x", 129)
	tests := []struct {
		name, in  string
		wantType  string // "" when refused
		wantCode  string
		wantID    string
		wantInMsg string
	}{
		{"subscribe", `{"type":"subscribe","id":"s","account_sid":"` + sidA + `"}`, "subscribe", "", "", ""},
		{"watchlist and since", `{"type":"subscribe","id":"s","account_sid":"` + sidA + `","users":["a","b"],"since":{"epoch":"e","seq":3}}`, "subscribe", "", "", ""},
		{"unsubscribe", `{"type":"unsubscribe","id":"s"}`, "unsubscribe", "", "", ""},
		{"not JSON", `{`, "", "bad_request", "", "not a JSON object"},
		{"wrong field type", `{"type":"subscribe","id":5}`, "", "bad_request", "", `field "id"`},
		{"unknown type", `{"type":"publish","id":"p"}`, "", "bad_request", "p", "type must be"},
		{"long id", `{"type":"subscribe","id":"` + long + `"}`, "", "bad_request", "", "longer than 128"},
		{"subscribe without id", `{"type":"subscribe","account_sid":"` + sidA + `"}`, "", "bad_request", "", "needs an id"},
		{"malformed sid", `{"type":"subscribe","id":"s","account_sid":"nope"}`, "", "bad_request", "s", "malformed account sid"},
		{"long epoch", `{"type":"subscribe","id":"s","account_sid":"` + sidA + `","since":{"epoch":"` + strings.Repeat("e", 65) + `"}}`, "", "bad_request", "s", "since.epoch"},
		{"long name", `{"type":"subscribe","id":"s","account_sid":"` + sidA + `","users":["` + strings.Repeat("n", maxNameLen+1) + `"]}`, "", "bad_request", "s", "at most"},
		{"negative seq", `{"type":"subscribe","id":"s","account_sid":"` + sidA + `","since":{"epoch":"e","seq":-1}}`, "", "bad_request", "", "wrong type"},
	}
	for _, tt := range tests {
		f, ferr := parseClientFrame([]byte(tt.in))
		switch {
		case tt.wantType != "" && (ferr != nil || f.Type != tt.wantType):
			t.Errorf("%s: got %+v, %+v; want type %s", tt.name, f, ferr, tt.wantType)
		case tt.wantType == "" && ferr == nil:
			t.Errorf("%s: accepted %+v, want %s", tt.name, f, tt.wantCode)
		case tt.wantType == "" && (ferr.code != tt.wantCode || ferr.id != tt.wantID || !strings.Contains(ferr.msg, tt.wantInMsg)):
			t.Errorf("%s: got error %+v, want code %s id %q msg containing %q", tt.name, ferr, tt.wantCode, tt.wantID, tt.wantInMsg)
		}
	}
}

// FuzzParseClientFrame: whatever a client sends, the parser neither panics
// nor accepts what the handlers must not act on, and its error frames stay
// small and valid UTF-8 strings for the JSON encoder.
func FuzzParseClientFrame(f *testing.F) {
	f.Add([]byte(`{"type":"subscribe","id":"s","account_sid":"` + sidA + `","users":["alice"],"since":{"epoch":"abc","seq":1}}`))
	f.Add([]byte(`{"type":"unsubscribe","id":"s"}`))
	f.Add([]byte(`{"type":"subscribe","id":"\u0000\ud800","account_sid":null,"users":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, ferr := parseClientFrame(data)
		if ferr != nil {
			if ferr.code == "" || len(ferr.msg) > 512 || len(ferr.id) > maxFrameID {
				t.Fatalf("error frame %+v: want a code, a message under 512 bytes and a bounded id", ferr)
			}
			return
		}
		if len(fr.ID) > maxFrameID {
			t.Fatalf("accepted an id of %d bytes", len(fr.ID))
		}
		switch fr.Type {
		case "unsubscribe":
		case "subscribe":
			if fr.ID == "" || !store.ValidSID(fr.AccountSID) || len(fr.Users) > maxNames {
				t.Fatalf("accepted subscribe %+v", fr)
			}
			if fr.Since != nil && len(fr.Since.Epoch) > maxFrameEpoch {
				t.Fatalf("accepted an epoch of %d bytes", len(fr.Since.Epoch))
			}
			for _, n := range fr.Users {
				if len(n) > maxNameLen {
					t.Fatalf("accepted a name of %d bytes", len(n))
				}
			}
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		if !utf8.ValidString(fr.ID) {
			t.Fatalf("id %q is not valid UTF-8 (encoding/json replaces invalid bytes)", fr.ID)
		}
	})
}
