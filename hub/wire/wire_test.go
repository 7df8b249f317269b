package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The byte strings below are what presencehub sent before the wire format
// had a package of its own (commit 31addbe: hub/registration.go, hub/hub.go
// emit, api/stream.go); they pin the format so a change is a decision, not
// an accident.

var (
	full = Active{
		Name: "alice", Contact: "sip:alice@192.168.1.20:5060", ExpiryTime: 1764200000000, Protocol: "wss",
		Proxy: "sip:203.0.113.7:40123", Flags: Flags{App: true, User: true},
	}
	fullJSON    = `{"name":"alice","contact":"sip:alice@192.168.1.20:5060","expiryTime":1764200000000,"protocol":"wss","allow_direct_app_calling":1,"allow_direct_queue_calling":0,"allow_direct_user_calling":1,"registered_status":"active","proxy":"sip:203.0.113.7:40123"}`
	inactiveDav = `{"name":"dave","contact":null,"expiryTime":0,"protocol":null,"allow_direct_app_calling":0,"allow_direct_queue_calling":0,"allow_direct_user_calling":0,"registered_status":"inactive","proxy":null}`
)

func TestUserBytes(t *testing.T) {
	t0 := time.UnixMilli(1764199999000)
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"active with every field", AppendActive(nil, &full), fullJSON},
		{
			"active without contact, protocol, proxy gives nulls",
			AppendActive(nil, &Active{Name: "bob", ExpiryTime: 42}),
			`{"name":"bob","contact":null,"expiryTime":42,"protocol":null,"allow_direct_app_calling":0,"allow_direct_queue_calling":0,"allow_direct_user_calling":0,"registered_status":"active","proxy":null}`,
		},
		{
			"active with hostile strings",
			AppendActive(nil, &Active{Name: "a\"b\\c<&>\u2028\xff", Contact: "x\ny", Protocol: "udp", Proxy: "p\tq", Flags: Flags{Queue: true}}),
			`{"name":"a\"b\\c\u003c\u0026\u003e\u2028\ufffd","contact":"x\ny","expiryTime":0,"protocol":"udp","allow_direct_app_calling":0,"allow_direct_queue_calling":1,"allow_direct_user_calling":0,"registered_status":"active","proxy":"p\tq"}`,
		},
		{
			"inactive with client flags",
			AppendInactive(nil, "carol", Flags{App: true, Queue: true}),
			`{"name":"carol","contact":null,"expiryTime":0,"protocol":null,"allow_direct_app_calling":1,"allow_direct_queue_calling":1,"allow_direct_user_calling":0,"registered_status":"inactive","proxy":null}`,
		},
		{"inactive without flags", AppendInactive(nil, "dave", Flags{}), inactiveDav},
		{
			"stream user with event time",
			AppendStreamUser(nil, []byte(fullJSON), t0),
			fullJSON[:len(fullJSON)-1] + `,"event_time":1764199999000}`,
		},
		{
			"stream user, zero time is null",
			AppendStreamUser(nil, []byte(inactiveDav), time.Time{}),
			inactiveDav[:len(inactiveDav)-1] + `,"event_time":null}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got  %s\nwant %s", tc.got, tc.want)
			}
			if !json.Valid(tc.got) {
				t.Errorf("%s is not valid JSON", tc.got)
			}
		})
	}
}

func TestFrameBytes(t *testing.T) {
	users := [][]byte{[]byte(`{"name":"a"}`), []byte(`{"name":"b"}`)}
	snap := Snapshot{ID: "sub-1", AccountSID: "AC1", Epoch: "0a1b2c3d4e5f", Seq: 7}
	notResumed, resync := snap, snap
	notResumed.NotResumed = true
	resync.Resync, resync.Seq = true, 0
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			"change body",
			AppendChange(nil, 1, "registered", []byte(fullJSON), time.UnixMilli(1764199999000)),
			`"seq":1,"event":"registered","user":` + fullJSON[:len(fullJSON)-1] + `,"event_time":1764199999000}}`,
		},
		{
			"change body, largest seq",
			AppendChange(nil, 1<<64-1, "expired", []byte(inactiveDav), time.UnixMilli(1764199999001)),
			`"seq":18446744073709551615,"event":"expired","user":` + inactiveDav[:len(inactiveDav)-1] + `,"event_time":1764199999001}}`,
		},
		{"change prefix", AppendChangePrefix(nil, "sub-1", "AC1", false), `{"type":"change","id":"sub-1","account_sid":"AC1",`},
		{"change prefix, conflated", AppendChangePrefix(nil, "sub-1", "AC1", true), `{"type":"change","id":"sub-1","conflated":true,"account_sid":"AC1",`},
		{"change prefix, hostile id", AppendChangePrefix(nil, "i\"d<\u2028", "A&B", false), `{"type":"change","id":"i\"d\u003c\u2028","account_sid":"A\u0026B",`},
		{"change prefix, hostile id, conflated", AppendChangePrefix(nil, "i\"d<\u2028", "A&B", true), `{"type":"change","id":"i\"d\u003c\u2028","conflated":true,"account_sid":"A\u0026B",`},
		{"resumed", AppendResumed(nil, "sub-1", "AC1", "0a1b2c3d4e5f", 41), `{"type":"resumed","id":"sub-1","account_sid":"AC1","epoch":"0a1b2c3d4e5f","seq":41}`},
		{"snapshot", AppendSnapshot(nil, &snap, users), `{"type":"snapshot","id":"sub-1","account_sid":"AC1","epoch":"0a1b2c3d4e5f","seq":7,"users":[{"name":"a"},{"name":"b"}]}`},
		{"snapshot instead of a resume", AppendSnapshot(nil, &notResumed, users), `{"type":"snapshot","id":"sub-1","account_sid":"AC1","epoch":"0a1b2c3d4e5f","seq":7,"resumed":false,"users":[{"name":"a"},{"name":"b"}]}`},
		{"snapshot after falling behind, no users", AppendSnapshot(nil, &resync, nil), `{"type":"snapshot","id":"sub-1","account_sid":"AC1","epoch":"0a1b2c3d4e5f","seq":0,"resync":true,"users":[]}`},
		{"error without id", AppendError(nil, "", CodeBadRequest, "frame is not a valid message: not a JSON object"), `{"type":"error","id":"","code":"bad_request","msg":"frame is not a valid message: not a JSON object"}`},
		{"error with hostile strings", AppendError(nil, "x\b\f", CodeNotFound, `no <subscription> & "id"`), `{"type":"error","id":"x\b\f","code":"not_found","msg":"no \u003csubscription\u003e \u0026 \"id\""}`},
		// Before 31addbe's successor this frame lacked its closing brace.
		{"unsubscribed", AppendUnsubscribed(nil, "sub-1"), `{"type":"unsubscribed","id":"sub-1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got  %s\nwant %s", tc.got, tc.want)
			}
		})
	}
}

// TestChangeFrameDecodes puts a change frame together the way the server
// does (prefix, then the hub's body) and reads it with the decode types.
func TestChangeFrameDecodes(t *testing.T) {
	for _, conflated := range []bool{false, true} {
		body := AppendChange(nil, 9, "updated", AppendActive(nil, &full), time.UnixMilli(5))
		frame := append(AppendChangePrefix(nil, "s", "AC1", conflated), body...)
		var f Frame
		if err := json.Unmarshal(frame, &f); err != nil {
			t.Fatalf("%s: %v", frame, err)
		}
		contact, proto, proxy, et := full.Contact, full.Protocol, full.Proxy, int64(5)
		want := Frame{
			Type: TypeChange, ID: "s", AccountSID: "AC1", Seq: 9, Event: "updated", Conflated: conflated,
			User: &User{
				Name: "alice", Contact: &contact, ExpiryTime: full.ExpiryTime, Protocol: &proto,
				AllowDirectAppCalling: 1, AllowDirectUserCalling: 1, RegisteredStatus: StatusActive,
				Proxy: &proxy, EventTime: &et,
			},
		}
		if !reflect.DeepEqual(f, want) {
			t.Errorf("conflated=%v: decoded %+v (user %+v)\nwant %+v (user %+v)", conflated, f, *f.User, want, *want.User)
		}
	}
}

func TestSnapshotFrameDecodes(t *testing.T) {
	users := [][]byte{
		AppendStreamUser(nil, AppendActive(nil, &full), time.UnixMilli(7)),
		AppendStreamUser(nil, AppendInactive(nil, "dave", Flags{Queue: true}), time.Time{}),
	}
	frame := AppendSnapshot(nil, &Snapshot{ID: "s", AccountSID: "AC1", Epoch: "e", Seq: 3, NotResumed: true}, users)
	var f Frame
	if err := json.Unmarshal(frame, &f); err != nil {
		t.Fatalf("%s: %v", frame, err)
	}
	if f.Type != TypeSnapshot || f.Epoch != "e" || f.Seq != 3 || f.Resumed == nil || *f.Resumed || len(f.Users) != 2 {
		t.Fatalf("decoded %+v, want a snapshot at e/3 with resumed false and 2 users", f)
	}
	if u := f.Users[1]; u.Name != "dave" || u.RegisteredStatus != StatusInactive || u.Contact != nil || u.EventTime != nil || u.AllowDirectQueueCalling != 1 {
		t.Errorf("inactive user decoded as %+v", u)
	}
	if u := f.Users[0]; u.EventTime == nil || *u.EventTime != 7 || u.RegisteredStatus != StatusActive {
		t.Errorf("active user decoded as %+v", u)
	}
}

func TestRequestEncoding(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"unsubscribe", Request{Type: TypeUnsubscribe, ID: "s1"}, `{"type":"unsubscribe","id":"s1"}`},
		{"subscribe", Request{Type: TypeSubscribe, ID: "s1", AccountSID: "AC1"}, `{"type":"subscribe","id":"s1","account_sid":"AC1"}`},
		{
			"resume a watchlist",
			Request{Type: TypeSubscribe, ID: "s1", AccountSID: "AC1", Users: []string{"a", "b"}, Since: &Position{Epoch: "e", Seq: 4}},
			`{"type":"subscribe","id":"s1","account_sid":"AC1","users":["a","b"],"since":{"epoch":"e","seq":4}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
			var back Request
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tc.req) {
				t.Errorf("round trip gave %+v, %v; want %+v", back, err, tc.req)
			}
		})
	}
}

var hostile = []struct {
	name, s string
}{
	{"empty", ""},
	{"space", " "},
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

// TestAppendStringIsEncodingJSON: one string encoder for every frame, byte
// for byte what encoding/json writes (the stream's frame fields were
// json.Marshal'ed before they moved here).
func TestAppendStringIsEncodingJSON(t *testing.T) {
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendString([]byte("prefix"), tc.s)
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("AppendString clobbered the buffer it appends to: %q", got)
			}
			want, err := json.Marshal(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[len("prefix"):]) != string(want) {
				t.Errorf("AppendString(%q) = %s, want %s (encoding/json)", tc.s, got[len("prefix"):], want)
			}
		})
	}
}

// TestAppendStringEveryByte: every byte value, alone and between plain
// text, is written as encoding/json writes it.
func TestAppendStringEveryByte(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "ab" + string([]byte{byte(c)}) + "cd"} {
			want, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := AppendString(nil, s); string(got) != string(want) {
				t.Errorf("AppendString(%q) = %s, want %s (encoding/json)", s, got, want)
			}
		}
	}
}

func TestUserHostileStrings(t *testing.T) {
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			a := Active{Name: tc.s, Contact: tc.s, Protocol: tc.s, Proxy: tc.s}
			for name, b := range map[string][]byte{
				"AppendActive":     AppendActive(nil, &a),
				"AppendInactive":   AppendInactive(nil, tc.s, Flags{}),
				"AppendStreamUser": AppendStreamUser(nil, AppendActive(nil, &a), time.UnixMilli(5)),
			} {
				var fields map[string]any
				if err := json.Unmarshal(b, &fields); err != nil {
					t.Fatalf("%s with %q = %s: %v", name, tc.s, b, err)
				}
				if n := len(fields); n != 9 && n != 10 {
					t.Errorf("%s: %d fields (a hostile string must not inject fields): %s", name, n, b)
				}
				var want string
				j, _ := json.Marshal(tc.s)
				_ = json.Unmarshal(j, &want)
				if fields["name"] != want {
					t.Errorf("%s: name decodes to %q, want %q", name, fields["name"], want)
				}
				if name == "AppendActive" && (tc.s != "" && (fields["contact"] != want || fields["protocol"] != want || fields["proxy"] != want)) {
					t.Errorf("%s: contact/protocol/proxy = %q/%q/%q, want %q", name, fields["contact"], fields["protocol"], fields["proxy"], want)
				}
			}
		})
	}
}

func TestChangeSizeIsABound(t *testing.T) {
	user := AppendActive(nil, &full)
	if n := len(AppendChange(nil, 1<<64-1, "unregistered", user, time.UnixMilli(1<<62))); n > ChangeSize(len(user)) {
		t.Errorf("AppendChange wrote %d bytes, ChangeSize promised at most %d", n, ChangeSize(len(user)))
	}
}
