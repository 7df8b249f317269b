package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
)

type historyAnswer struct {
	Sessions []struct {
		Name      string  `json:"name"`
		Contact   *string `json:"contact"`
		Protocol  *string `json:"protocol"`
		Proxy     *string `json:"proxy"`
		StartedAt int64   `json:"started_at"`
		EndedAt   *int64  `json:"ended_at"`
		EndReason *string `json:"end_reason"`
		Refreshes int     `json:"refreshes"`
	} `json:"sessions"`
	NextCursor *string `json:"next_cursor"`
}

type presenceAnswer struct {
	Name             string `json:"name"`
	RegisteredStatus string `json:"registered_status"`
	LastSeen         *int64 `json:"last_seen"`
	Sessions24h      int    `json:"sessions_24h"`
	Sessions1h       int    `json:"sessions_1h"`
	NATChanges1h     int    `json:"nat_changes_1h"`
	Flapping         bool   `json:"flapping"`
}

// waitWritten waits until the history writer has written n changes in all.
func (f *fixture) waitWritten(n uint64) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.hist.Metrics.Changes.Load() < n {
		if time.Now().After(deadline) {
			f.t.Fatalf("history writer: %d changes written after 10s, want %d", f.hist.Metrics.Changes.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

func TestRegistrationHistory(t *testing.T) {
	f := newFixture(t)
	realm := f.a1.SIPRealm
	f.register("alice", realm, "udp", hub.Flags{})
	f.hub.Update(hub.Update{AOR: "alice@" + realm})
	f.register("bob", realm, "wss", hub.Flags{})
	f.register("zed", f.b1.SIPRealm, "udp", hub.Flags{}) // another tenant's
	f.waitWritten(4)

	base := "/v1/Accounts/" + f.a1.SID + "/RegistrationHistory"
	var got historyAnswer
	r := f.do(asOwn, "GET", base, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", base, r.status, r.body)
	}
	r.json(t, &got)
	if len(got.Sessions) != 2 || got.NextCursor != nil {
		t.Fatalf("got %s, want 2 sessions and no next_cursor", r.body)
	}
	bob, alice := got.Sessions[0], got.Sessions[1]
	if bob.Name != "bob" || bob.EndedAt != nil || bob.EndReason != nil || str(bob.Protocol) != "wss" || str(bob.Proxy) != "sip:203.0.113.7:40123" {
		t.Errorf("newest session: got %+v, want bob's open wss session", bob)
	}
	if alice.Name != "alice" || alice.EndedAt == nil || str(alice.EndReason) != "unregistered" || *alice.EndedAt < alice.StartedAt ||
		str(alice.Contact) != "sip:alice@192.168.1.20:5060" {
		t.Errorf("older session: got %+v, want alice's, ended unregistered", alice)
	}
	if !strings.Contains(string(r.body), `"ended_at":null`) || !strings.Contains(string(r.body), `"end_reason":null`) {
		t.Errorf("an open session must have ended_at and end_reason null: %s", r.body)
	}

	// A page of one, then the next by cursor, then the user filter.
	r = f.do(asOwn, "GET", base+"?limit=1", nil)
	got = historyAnswer{}
	r.json(t, &got)
	if len(got.Sessions) != 1 || got.Sessions[0].Name != "bob" || got.NextCursor == nil {
		t.Fatalf("limit=1: got %s, want bob and a next_cursor", r.body)
	}
	r = f.do(asOwn, "GET", base+"?limit=1&cursor="+url.QueryEscape(*got.NextCursor), nil)
	got = historyAnswer{}
	r.json(t, &got)
	if len(got.Sessions) != 1 || got.Sessions[0].Name != "alice" || got.NextCursor != nil {
		t.Fatalf("second page: got %s, want alice and no next_cursor", r.body)
	}
	r = f.do(asOwn, "GET", base+"?user=alice", nil)
	got = historyAnswer{}
	r.json(t, &got)
	if len(got.Sessions) != 1 || got.Sessions[0].Name != "alice" {
		t.Fatalf("user=alice: got %s", r.body)
	}
	// A window after alice's session ended holds only bob's.
	r = f.do(asOwn, "GET", fmt.Sprintf("%s?since=%d", base, *alice.EndedAt+1), nil)
	got = historyAnswer{}
	r.json(t, &got)
	if len(got.Sessions) != 1 || got.Sessions[0].Name != "bob" {
		t.Fatalf("since after alice's end: got %s, want bob's only", r.body)
	}

	bad := []struct{ name, query string }{
		{"limit 0", "limit=0"},
		{"limit over the bound", "limit=1001"},
		{"limit not a number", "limit=ten"},
		{"negative since", "since=-1"},
		{"since not a number", "since=yesterday"},
		{"until past year 9999", "until=999999999999999999"},
		{"until before since", "since=2000&until=1000"},
		{"garbage cursor", "cursor=%21%21%21"},
		{"well-formed base64, not a cursor", "cursor=aGVsbG8"},
		{"unknown parameter", "users=alice"},
		{"user too long", "user=" + strings.Repeat("x", 257)},
	}
	for _, tc := range bad {
		r := f.do(asOwn, "GET", base+"?"+tc.query, nil)
		if r.status != 400 || !strings.Contains(string(r.body), `"msg"`) {
			t.Errorf("%s: got %d %s, want 400 with a msg", tc.name, r.status, r.body)
		}
	}
	if r := f.do(asOwn, "GET", "/v1/Accounts/not-a-sid/RegistrationHistory", nil); r.status != 400 {
		t.Errorf("malformed account sid: got %d, want 400", r.status)
	}
}

func TestPresence(t *testing.T) {
	f := newFixture(t)
	realm := f.a1.SIPRealm
	// carol comes and goes 4 times: more than FlapSessions (3) in an hour.
	for range 4 {
		f.register("carol", realm, "udp", hub.Flags{})
		f.hub.Update(hub.Update{AOR: "carol@" + realm})
	}
	f.register("bob", realm, "udp", hub.Flags{})
	f.waitWritten(9)

	tests := []struct {
		user         string
		status       string
		lastSeen     bool
		sessions24h  int
		wantFlapping bool
	}{
		{"carol", "inactive", true, 4, true},
		{"bob", "active", true, 1, false},
		{"nobody", "inactive", false, 0, false},
	}
	for _, tc := range tests {
		r := f.do(asSP, "GET", "/v1/Accounts/"+f.a1.SID+"/Presence/"+tc.user, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", tc.user, r.status, r.body)
		}
		var got presenceAnswer
		r.json(t, &got)
		if got.Name != tc.user || got.RegisteredStatus != tc.status || (got.LastSeen != nil) != tc.lastSeen ||
			got.Sessions24h != tc.sessions24h || got.Flapping != tc.wantFlapping {
			t.Errorf("%s: got %s, want status %s, last_seen set %v, %d sessions in 24h, flapping %v",
				tc.user, r.body, tc.status, tc.lastSeen, tc.sessions24h, tc.wantFlapping)
		}
	}
	if r := f.do(asSP, "GET", "/v1/Accounts/"+f.a1.SID+"/Presence/"+strings.Repeat("x", 257), nil); r.status != 400 {
		t.Errorf("too long a name: got %d, want 400", r.status)
	}
}
