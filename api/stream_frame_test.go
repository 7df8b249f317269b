package api

import (
	"encoding/json"
	"fmt"
	"slices"
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
		f, _, ferr := parseWholeFrame([]byte(tt.in))
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

// parseWholeFrame is what the stream does with a frame it acts on: parse
// it, then decode its watchlist.
func parseWholeFrame(data []byte) (clientFrame, []string, *frameError) {
	f, ferr := parseClientFrame(data)
	if ferr != nil || f.Type != "subscribe" {
		return f, nil, ferr
	}
	users, ferr := f.users()
	if ferr != nil {
		return clientFrame{}, nil, ferr
	}
	return f, users, nil
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
		fr, users, ferr := parseWholeFrame(data)
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
			if fr.ID == "" || !store.ValidSID(fr.AccountSID) || len(users) > maxNames || fr.Users.n > maxNames {
				t.Fatalf("accepted subscribe %+v", fr)
			}
			if fr.Users.n != len(users) {
				t.Fatalf("counted %d names, decoded %d", fr.Users.n, len(users))
			}
			if fr.Since != nil && len(fr.Since.Epoch) > maxFrameEpoch {
				t.Fatalf("accepted an epoch of %d bytes", len(fr.Since.Epoch))
			}
			for _, n := range users {
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

// TestParseClientFrameAllocs: parsing a subscribe frame costs a bounded
// number of allocations whatever the size of its watchlist, which is only
// counted; the names are decoded later, by users(), for a subscribe that
// passed the connection's caps and limits.
func TestParseClientFrameAllocs(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"type":"subscribe","id":"h1","account_sid":"` + sidA + `","users":[`)
	for i := range 8000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"x%04d"`, i)
	}
	b.WriteString(`]}`)
	frame := []byte(b.String())
	var f clientFrame
	parse := testing.AllocsPerRun(20, func() {
		var ferr *frameError
		if f, ferr = parseClientFrame(frame); ferr != nil {
			t.Fatal(ferr)
		}
	})
	if f.Users.n != 8000 {
		t.Fatalf("counted %d names, want 8000", f.Users.n)
	}
	if parse > 10 {
		t.Errorf("parseClientFrame of 8,000 names: got %.0f allocations, want at most 10", parse)
	}
	users, ferr := f.users()
	if ferr != nil || len(users) != 8000 || users[7999] != "x7999" {
		t.Fatalf("users() = %d names, %v; want 8,000 ending x7999", len(users), ferr)
	}
}

func TestCountElements(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`[]`, 0},
		{`[ ]`, 0},
		{"[\n]", 0},
		{`["a"]`, 1},
		{`[ "a" , "b" ]`, 2},
		{`["a,b","c"]`, 2},
		{`["a\",","b"]`, 2},
		{`["a\\","b"]`, 2},
		{`[[1,2],{"a":1,"b":2},3]`, 3},
		{`[1,2,3]`, 3},
	}
	for _, tt := range tests {
		if got := countElements([]byte(tt.in)); got != tt.want {
			t.Errorf("countElements(%s) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// FuzzDecodeFrame: the fast path of decodeFrame (the watchlist cut out
// before encoding/json sees the frame) agrees with encoding/json on the
// whole frame: a frame that encoding/json accepts, watchlist included,
// gives the same fields and names; one it refuses is refused too (by
// decodeFrame, or by users() for a watchlist that is not an array of
// strings).
func FuzzDecodeFrame(f *testing.F) {
	big := string(hostileTestFrame())
	f.Add([]byte(big))
	f.Add([]byte(strings.Replace(big, `"users"`, `"Users"`, 1)))
	f.Add([]byte(strings.Replace(big, `"x0001"`, `"x\"01"`, 1)))
	f.Add([]byte(strings.Replace(big, `"x0001"`, `1`, 1)))
	f.Add([]byte(strings.Replace(big, `"x0001",`, `"x0001",,`, 1)))
	f.Add([]byte(big + "x"))
	f.Add([]byte(strings.Replace(big, `"type":"subscribe"`, `"users":null,"type":"subscribe"`, 1)))
	f.Add([]byte(strings.Replace(big, `]}`, `],"since":{"epoch":"e","seq":1}}`, 1)))
	f.Add([]byte(`{"type":"subscribe","id":"s","account_sid":"` + sidA + `","users":["` + strings.Repeat("a", 300) + `"]}`))
	f.Add([]byte(`{"users":"` + strings.Repeat("a", 300) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var slow clientFrame
		slowErr := json.Unmarshal(data, &slow)
		var slowUsers []string
		var slowUErr *frameError
		if slowErr == nil {
			slowUsers, slowUErr = slow.users()
		}
		fast, fastErr := decodeFrame(data)
		var fastUsers []string
		var fastUErr *frameError
		if fastErr == nil {
			fastUsers, fastUErr = fast.users()
		}
		slowOK, fastOK := slowErr == nil && slowUErr == nil, fastErr == nil && fastUErr == nil
		if slowOK != fastOK {
			t.Fatalf("encoding/json: %v %v; decodeFrame: %v %v", slowErr, slowUErr, fastErr, fastUErr)
		}
		if !slowOK {
			return
		}
		if slow.Type != fast.Type || slow.ID != fast.ID || slow.AccountSID != fast.AccountSID ||
			(slow.Since == nil) != (fast.Since == nil) || (slow.Since != nil && *slow.Since != *fast.Since) ||
			slow.Users.n != fast.Users.n || !slices.Equal(slowUsers, fastUsers) {
			t.Fatalf("encoding/json gave %+v %d names, decodeFrame %+v %d names", slow, len(slowUsers), fast, len(fastUsers))
		}
	})
}
