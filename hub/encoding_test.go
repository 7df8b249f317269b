package hub

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

var restFields = []string{
	"allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling",
	"contact", "expiryTime", "name", "protocol", "proxy", "registered_status",
}

var hostile = []struct {
	name, s string
}{
	{"empty-ish", " "},
	{"quotes", `a"b"c`},
	{"backslashes", `C:\path\to\"x\\`},
	{"control chars", "a\x00b\x01c\x08d\x0ce\nf\rg\th\x1f\x7f"},
	{"invalid UTF-8", "bad\xff\xfe\xc3(end"},
	{"truncated rune", "x\xe2\x82"},
	{"line separators", "a\u2028b\u2029c"},
	{"html", `<script>alert("&")</script>`},
	{"non-ASCII", "Zoë ☎ 日本 😀"},
	{"json injection", `","registered_status":"inactive","x":"`},
}

// jsonDecoded is what encoding/json gives back for s after a round trip: s
// itself, except that invalid UTF-8 becomes U+FFFD.
func jsonDecoded(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAppendStringRoundTrips(t *testing.T) {
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			b := appendString([]byte("prefix"), tc.s)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("appendString clobbered the buffer it appends to: %q", b)
			}
			b = b[len("prefix"):]
			if !json.Valid(b) {
				t.Fatalf("appendString(%q) = %s, not valid JSON", tc.s, b)
			}
			var got string
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if want := jsonDecoded(t, tc.s); got != want {
				t.Errorf("appendString(%q) decodes to %q, want %q (what encoding/json gives)", tc.s, got, want)
			}
			// Raw U+2028/2029 break JavaScript string literals in older engines.
			if bytes.Contains(b, []byte("\u2028")) || bytes.Contains(b, []byte("\u2029")) {
				t.Errorf("appendString(%q) = %s left a raw U+2028/U+2029 in the output", tc.s, b)
			}
		})
	}
}

func TestAppendUserShape(t *testing.T) {
	now := time.UnixMilli(1_900_000_000_000)
	full := reg("alice", "example.com", now)
	full.AllowDirectApp, full.AllowDirectQueue, full.AllowDirectUser = 1, 0, 1
	bare := Registration{User: "bob", Realm: "example.com", ExpiryTime: 42}

	tests := []struct {
		name string
		json []byte
		want map[string]any
	}{
		{
			name: "active with every field",
			json: appendUser(nil, &full),
			want: map[string]any{
				"name": "alice", "contact": full.Contact, "expiryTime": float64(full.ExpiryTime),
				"protocol": "udp", "allow_direct_app_calling": float64(1), "allow_direct_queue_calling": float64(0),
				"allow_direct_user_calling": float64(1), "registered_status": "active", "proxy": full.Proxy,
			},
		},
		{
			name: "active without contact, protocol, proxy gives nulls",
			json: appendUser(nil, &bare),
			want: map[string]any{
				"name": "bob", "contact": nil, "expiryTime": float64(42), "protocol": nil,
				"allow_direct_app_calling": float64(0), "allow_direct_queue_calling": float64(0),
				"allow_direct_user_calling": float64(0), "registered_status": "active", "proxy": nil,
			},
		},
		{
			name: "inactive with client flags",
			json: appendInactive(nil, "carol", Flags{App: 1, Queue: 1, User: 0}),
			want: map[string]any{
				"name": "carol", "contact": nil, "expiryTime": float64(0), "protocol": nil,
				"allow_direct_app_calling": float64(1), "allow_direct_queue_calling": float64(1),
				"allow_direct_user_calling": float64(0), "registered_status": "inactive", "proxy": nil,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeObject(t, tc.json)
			if k := keys(got); !reflect.DeepEqual(k, restFields) {
				t.Errorf("fields = %v, want exactly the 9 jambonz fields %v", k, restFields)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decoded %s\n got %v\nwant %v", tc.json, got, tc.want)
			}
			for _, secret := range []string{"sbc", "Sbc", "hook", "Hook", "10.0.0.1", "10.0.0.2", "hooks.example"} {
				if bytes.Contains(tc.json, []byte(secret)) {
					t.Errorf("encoding %s leaks %q (SBC addresses and hooks must never be encoded)", tc.json, secret)
				}
			}
		})
	}
}

func TestAppendUserHostileStrings(t *testing.T) {
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			r := Registration{User: tc.s, Contact: tc.s, Protocol: tc.s, Proxy: tc.s}
			for name, b := range map[string][]byte{
				"appendUser":     appendUser(nil, &r),
				"appendInactive": appendInactive(nil, tc.s, Flags{}),
				"withEventTime":  withEventTime(nil, appendUser(nil, &r), time.UnixMilli(5)),
			} {
				if !json.Valid(b) {
					t.Fatalf("%s with %q = %s, not valid JSON", name, tc.s, b)
				}
				got := decodeObject(t, b)
				want := jsonDecoded(t, tc.s)
				if got["name"] != want {
					t.Errorf("%s: name decodes to %q, want %q", name, got["name"], want)
				}
				if name == "appendUser" && (got["contact"] != want || got["protocol"] != want || got["proxy"] != want) {
					t.Errorf("%s: contact/protocol/proxy = %q/%q/%q, want %q", name, got["contact"], got["protocol"], got["proxy"], want)
				}
				if n := len(got); n != 9 && n != 10 {
					t.Errorf("%s: %d fields (a hostile string must not inject fields): %s", name, n, b)
				}
			}
		})
	}
}

func TestWithEventTime(t *testing.T) {
	r := reg("alice", "example.com", time.UnixMilli(1_900_000_000_000))
	user := appendUser(nil, &r)
	tests := []struct {
		name string
		at   time.Time
		want any
	}{
		{"set", time.UnixMilli(1_900_000_000_123), float64(1_900_000_000_123)},
		{"zero time is null", time.Time{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := withEventTime([]byte("xx"), user, tc.at)
			if string(b[:2]) != "xx" {
				t.Fatalf("withEventTime did not append to its buffer: %q", b)
			}
			got := decodeObject(t, b[2:])
			wantKeys := append(append([]string(nil), restFields...), "event_time")
			sort.Strings(wantKeys)
			if k := keys(got); !reflect.DeepEqual(k, wantKeys) {
				t.Errorf("fields = %v, want the 9 REST fields plus event_time %v", k, wantKeys)
			}
			if got["event_time"] != tc.want {
				t.Errorf("event_time = %v, want %v", got["event_time"], tc.want)
			}
			if got["name"] != "alice" || got["registered_status"] != "active" {
				t.Errorf("the 9 REST fields were not kept: %s", b[2:])
			}
		})
	}
}

func TestChangeBodyFrame(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	s, _ := h.Subscribe(SubscribeRequest{Realm: "example.com"})
	defer s.Close()
	r := reg(`al"i\ce`+"\u2028", "example.com", clk.Now())
	sink.Update(put(r))
	sink.Update(del(r.AOR()))
	items := drain(t, s)
	if len(items) != 2 {
		t.Fatalf("got %d changes, want 2 (registered, unregistered)", len(items))
	}
	for i, want := range []struct {
		event, status string
	}{{EventRegistered, StatusActive}, {EventUnregistered, StatusInactive}} {
		c := items[i].Change
		if !bytes.HasPrefix(c.Body, []byte(`"seq":`)) || !bytes.HasSuffix(c.Body, []byte("}}")) {
			t.Errorf("Body = %s, want `\"seq\":N,\"event\":…,\"user\":{…}}`", c.Body)
		}
		frame := decodeObject(t, append([]byte(`{"type":"change",`), c.Body...))
		if k := keys(frame); !reflect.DeepEqual(k, []string{"event", "seq", "type", "user"}) {
			t.Errorf("frame fields = %v, want [event seq type user]", k)
		}
		if frame["seq"] != float64(c.Seq) || frame["event"] != want.event {
			t.Errorf("frame seq/event = %v/%v, want %d/%s", frame["seq"], frame["event"], c.Seq, want.event)
		}
		user, _ := frame["user"].(map[string]any)
		if user["name"] != r.User || user["registered_status"] != want.status {
			t.Errorf("frame user = %v, want name %q status %s", user, r.User, want.status)
		}
		if user["event_time"] != float64(clk.Now().UnixMilli()) {
			t.Errorf("event_time = %v, want %d (the hub's clock when the change happened)", user["event_time"], clk.Now().UnixMilli())
		}
		if len(user) != 10 {
			t.Errorf("user has %d fields, want 10 (9 REST fields plus event_time): %v", len(user), keys(user))
		}
		if c.Realm != "example.com" || c.User != r.User || c.Event != want.event || !c.Time.Equal(clk.Now()) {
			t.Errorf("Change fields = %+v, want realm example.com, user %q, event %s", c, r.User, want.event)
		}
	}
}

func TestSplitAOR(t *testing.T) {
	tests := []struct {
		aor, user, realm string
		ok               bool
	}{
		{"alice@example.com", "alice", "example.com", true},
		{"Alice@Example.COM", "Alice", "example.com", true}, // the user keeps its case
		{"a@b@example.com", "a@b", "example.com", true},     // last '@', like jambonz
		{"@example.com", "", "", false},
		{"alice@", "", "", false},
		{"alice", "", "", false},
		{"", "", "", false},
		// Realms are lower-cased the same way everywhere in the hub (ASCII
		// only), so an AOR from a notification finds the entry a resync stored.
		{"u@ÉX.COM", "u", "Éx.com", true},
	}
	for _, tc := range tests {
		user, realm, ok := SplitAOR(tc.aor)
		if user != tc.user || realm != tc.realm || ok != tc.ok {
			t.Errorf("SplitAOR(%q) = %q, %q, %v; want %q, %q, %v", tc.aor, user, realm, ok, tc.user, tc.realm, tc.ok)
		}
	}
}

func TestLower(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "abc": "abc", "ABC": "abc", "MiXeD.Example.COM": "mixed.example.com", "ÉX": "Éx",
	} {
		if got := lower(in); got != want {
			t.Errorf("lower(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAppendUint(t *testing.T) {
	for _, n := range []uint64{0, 7, 10, 1234567890, 1<<64 - 1} {
		got := string(appendUint([]byte("x"), n))
		want := "x" + strings.TrimSpace(jsonNumber(n))
		if got != want {
			t.Errorf("appendUint(%d) = %q, want %q", n, got, want)
		}
	}
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
