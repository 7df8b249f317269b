package hub

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// The bytes themselves are pinned in hub/wire; these tests check what the
// hub hands to the encoders and that a change is encoded once.

func TestUserEncodingFromRegistration(t *testing.T) {
	now := time.UnixMilli(1_900_000_000_000)
	r := reg("alice", "example.com", now)
	r.AllowDirectApp, r.AllowDirectQueue, r.AllowDirectUser = 1, 0, 1
	got := appendUser(nil, &r)
	want := wire.AppendActive(nil, &wire.Active{
		Name: "alice", Contact: r.Contact, ExpiryTime: r.ExpiryTime, Protocol: "udp", Proxy: r.Proxy,
		Flags: wire.Flags{App: true, User: true},
	})
	if !bytes.Equal(got, want) {
		t.Errorf("appendUser = %s\nwant       %s", got, want)
	}
	for _, secret := range []string{"sbc", "Sbc", "hook", "Hook", "10.0.0.1", "10.0.0.2", "hooks.example"} {
		if bytes.Contains(got, []byte(secret)) {
			t.Errorf("encoding %s leaks %q (SBC addresses and hooks must never be encoded)", got, secret)
		}
	}
}

// TestChangeEncodedOnce: every subscriber of a realm gets the same *Change,
// whose Body was encoded once by the owner, and that Body is the wire
// format's change body.
func TestChangeEncodedOnce(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	subs := make([]*Subscription, 3)
	for i := range subs {
		subs[i], _ = h.Subscribe(SubscribeRequest{Realm: "example.com"})
		defer subs[i].Close()
	}
	r := reg("alice", "example.com", clk.Now())
	sink.Update(put(r))
	var first *Change
	for i, s := range subs {
		items := drain(t, s)
		if len(items) != 1 {
			t.Fatalf("subscriber %d got %d changes, want 1", i, len(items))
		}
		c := items[0].Change
		if first == nil {
			first = c
			want := wire.AppendChange(nil, 1, EventRegistered, appendUser(nil, &r), clk.Now())
			if !bytes.Equal(c.Body, want) {
				t.Errorf("Body = %s\nwant   %s", c.Body, want)
			}
			continue
		}
		if c != first || &c.Body[0] != &first.Body[0] {
			t.Errorf("subscriber %d got a change of its own (%p, body %p), want the one encoding shared by all (%p, body %p)", i, c, &c.Body[0], first, &first.Body[0])
		}
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

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "abc": "abc", "ABC": "abc", "MiXeD.Example.COM": "mixed.example.com", "ÉX": "Éx",
	} {
		if got := Fold(in); got != want {
			t.Errorf("Fold(%q) = %q, want %q", in, got, want)
		}
	}
}
