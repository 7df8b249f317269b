package hub

import (
	"testing"
)

// TestClaimEndsThePreviousOwnersPresence is the hub's half of issue #9
// finding 3: a realm's presence belongs to the account that holds it. When
// another account takes the realm, the first one's subscriptions end (as
// revoked), its history and activity are gone and the epoch is new, so a
// resume from the old position gets a snapshot of the present only.
func TestClaimEndsThePreviousOwnersPresence(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	h.Claim(realm, "acct-1")
	first, st := h.Subscribe(SubscribeRequest{Realm: realm, Owner: "acct-1"})
	oldEpoch := st.Snapshot.Epoch
	sink.Update(put(reg("alice", realm, now)))
	if got := len(drain(t, first)); got != 1 {
		t.Fatalf("first owner queued %d changes, want 1", got)
	}

	h.Claim(realm, "acct-2") // account 1 deleted, account 2 created the realm
	items, _, closed := first.Next(nil)
	if !closed || !first.Revoked() || len(items) != 0 {
		t.Fatalf("after the claim the first subscription: closed=%v revoked=%v items=%d, want closed, revoked, none", closed, first.Revoked(), len(items))
	}
	sink.Update(put(reg("bob", realm, now)))
	if items, _, _ := first.Next(nil); len(items) != 0 {
		t.Errorf("the first owner's ended subscription got %v", events(items))
	}
	if got := h.Recent(realm, 10); len(got) != 1 || got[0].User != "bob" {
		t.Errorf("history after the claim: %d changes, want only bob's", len(got))
	}
	st2 := h.Stats(realm)
	if st2.Epoch == oldEpoch || st2.Epoch == "" {
		t.Errorf("epoch after the claim %q, want a new one (was %q)", st2.Epoch, oldEpoch)
	}
	second, start := h.Subscribe(SubscribeRequest{Realm: realm, Owner: "acct-2", Since: &Position{Epoch: oldEpoch, Seq: 0}})
	defer second.Close()
	if start.Resumed || len(start.Missed) != 0 {
		t.Fatalf("resume from the old epoch: resumed=%v with %d missed, want a snapshot", start.Resumed, len(start.Missed))
	}
	if start.Snapshot.Epoch != st2.Epoch || len(start.Snapshot.Users) != 2 {
		t.Errorf("snapshot epoch %q with %d users, want %q with alice and bob (the realm's registrations now)", start.Snapshot.Epoch, len(start.Snapshot.Users), st2.Epoch)
	}
	if got := h.Metrics.Subscribers.Load(); got != 1 {
		t.Errorf("subscribers gauge %d, want 1", got)
	}
}

func TestClaim(t *testing.T) {
	const realm = "example.com"
	tests := []struct {
		name      string
		setup     func(h *Hub, sink Sink)
		claims    []string // owners claimed in turn after setup
		newEpoch  bool
		wantOwner string
	}{
		{"first claim", func(h *Hub, sink Sink) {}, []string{"a"}, true, "a"},
		{"same owner again", func(h *Hub, sink Sink) { h.Claim(realm, "a"); sink.Update(put(reg("x", realm, newClock().Now()))) }, []string{"a"}, false, "a"},
		{"unowned realm with history", func(h *Hub, sink Sink) { sink.Update(put(reg("x", realm, newClock().Now()))) }, []string{"a"}, true, "a"},
		{"released", func(h *Hub, sink Sink) { h.Claim(realm, "a") }, []string{""}, true, ""},
		{"taken over", func(h *Hub, sink Sink) { h.Claim(realm, "a") }, []string{"b"}, true, "b"},
		{"taken over and back: history gone all the same", func(h *Hub, sink Sink) {
			h.Claim(realm, "a")
			sink.Update(put(reg("x", realm, newClock().Now())))
		}, []string{"b", "a"}, false, "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, sink := startHub(t, Options{Now: newClock().Now})
			tc.setup(h, sink)
			before := h.Stats(realm).Epoch
			for _, o := range tc.claims {
				h.Claim(realm, o)
			}
			if got := h.Stats(realm).Epoch != before; got != tc.newEpoch {
				t.Errorf("new epoch = %v, want %v", got, tc.newEpoch)
			}
			if r := h.realm(realm, false); r != nil && r.owner != tc.wantOwner {
				t.Errorf("owner %q, want %q", r.owner, tc.wantOwner)
			}
			if len(tc.claims) > 1 && len(h.Recent(realm, 10)) != 0 {
				t.Errorf("history kept across a change of holder")
			}
		})
	}
	// Releasing a realm the hub never saw creates nothing.
	h, _ := startHub(t, Options{})
	h.Claim("nowhere.example", "")
	if got := h.Realms(); len(got) != 0 {
		t.Errorf("realms after releasing an unknown one: %v, want none", got)
	}
}

func TestSubscribeWithOwnerClaims(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	a, _ := h.Subscribe(SubscribeRequest{Realm: realm, Owner: "acct-1"})
	sink.Update(put(reg("alice", realm, clk.Now())))
	b, st := h.Subscribe(SubscribeRequest{Realm: realm, Owner: "acct-2"})
	defer b.Close()
	if _, _, closed := a.Next(nil); !closed || !a.Revoked() {
		t.Errorf("acct-1's subscription after acct-2 subscribed: closed=%v revoked=%v, want both", closed, a.Revoked())
	}
	if len(h.Recent(realm, 10)) != 0 {
		t.Errorf("acct-2 subscribed with acct-1's history still there")
	}
	if len(st.Snapshot.Users) != 1 {
		t.Errorf("acct-2's snapshot has %d users, want alice", len(st.Snapshot.Users))
	}
	// A plain Close is not a revocation.
	b.Close()
	if b.Revoked() {
		t.Errorf("Close marked the subscription revoked")
	}
}

// TestDeferredSnapshot: a Deferred subscription holds no snapshot until
// Resnapshot, which is taken together with clearing the queue, so nothing
// falls between the snapshot and the changes after it.
func TestDeferredSnapshot(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	sink.Update(put(reg("alice", realm, clk.Now())))
	s, st := h.Subscribe(SubscribeRequest{Realm: realm, Users: []string{"alice", "nobody"}, Deferred: true})
	defer s.Close()
	if st.Resumed || st.Snapshot.Users != nil || st.Size < 200 {
		t.Fatalf("deferred start: resumed=%v snapshot users=%d size=%d, want no snapshot and a size estimate", st.Resumed, len(st.Snapshot.Users), st.Size)
	}
	sink.Update(put(reg("nobody", realm, clk.Now())))
	items, resync, closed := s.Next(nil)
	if !resync || closed || len(items) != 0 {
		t.Fatalf("Next before the snapshot: resync=%v closed=%v items=%d, want resync only", resync, closed, len(items))
	}
	snap := s.Resnapshot()
	if len(snap.Users) != 2 || snap.Seq != 2 {
		t.Errorf("snapshot at seq %d with %d users, want seq 2 with both", snap.Seq, len(snap.Users))
	}
	if est, got := st.Size, len(snap.Users[0])+len(snap.Users[1]); est < got/2 || est > 2*got {
		t.Errorf("size estimate %d for a snapshot of %d bytes of users", est, got)
	}
	sink.Update(del("alice@" + realm))
	if got := events(drain(t, s)); len(got) != 1 {
		t.Errorf("after the snapshot: %v, want alice's removal", got)
	}
	if h.Metrics.SubResyncs.Load() != 0 {
		t.Errorf("a deferred first snapshot counted as a resync")
	}
}
