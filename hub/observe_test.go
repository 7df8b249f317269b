package hub

import (
	"sync"
	"testing"
	"time"
)

// TestObserve checks that the Observe hook sees every change, in order, with
// the realm's seq, the hub's epoch and the registration (the ended one for
// removals).
func TestObserve(t *testing.T) {
	clk := newClock()
	var mu sync.Mutex
	var got []Observed
	h, sink := startHub(t, Options{Now: clk.Now, Observe: func(o Observed) {
		mu.Lock()
		got = append(got, o)
		mu.Unlock()
	}})
	const realm = "example.com"
	alice := reg("alice", realm, clk.Now())
	refreshed := alice
	refreshed.ExpiryTime += 60_000
	moved := refreshed
	moved.Proxy = "sip:198.51.100.99:4000"

	sink.Update(put(alice))
	sink.Update(put(alice)) // identical: no change, nothing observed
	sink.Update(put(refreshed))
	sink.Update(put(moved))
	sink.Update(del(alice.AOR()))
	bob := reg("bob", realm, clk.Now())
	bob.Deadline = clk.Now().Add(time.Minute)
	sink.Update(put(bob))
	clk.Add(2 * time.Minute)
	settle(h)

	want := []struct {
		seq   uint64
		event string
		user  string
		proxy string
	}{
		{1, EventRegistered, "alice", alice.Proxy},
		{2, EventRefreshed, "alice", alice.Proxy},
		{3, EventUpdated, "alice", moved.Proxy},
		{4, EventUnregistered, "alice", moved.Proxy},
		{5, EventRegistered, "bob", bob.Proxy},
		{6, EventExpired, "bob", bob.Proxy},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("observed %d changes, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Seq != w.seq || g.Event != w.event || g.Reg.User != w.user || g.Reg.Proxy != w.proxy || g.Epoch != h.Epoch() || g.Reg.Realm != realm {
			t.Errorf("change %d: got seq %d %s %s proxy %q epoch %q realm %q, want seq %d %s %s proxy %q epoch %q",
				i, g.Seq, g.Event, g.Reg.User, g.Reg.Proxy, g.Epoch, g.Reg.Realm, w.seq, w.event, w.user, w.proxy, h.Epoch())
		}
	}
}

// TestObserveApplied: a replica's hook sees the changes it applies, with
// their own seq and time.
func TestObserveApplied(t *testing.T) {
	var mu sync.Mutex
	var got []Observed
	h := newHub(Options{Epoch: "shared", Observe: func(o Observed) {
		mu.Lock()
		got = append(got, o)
		mu.Unlock()
	}})
	run(t, h, nil)
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	alice := reg("alice", "example.com", at)
	if err := h.Apply(
		Applied{Realm: "example.com", Seq: 1, Event: EventRegistered, User: "alice", Time: at, State: &State{Reg: alice, Since: at, EventTime: at, Event: EventRegistered}},
		Applied{Realm: "example.com", Seq: 2, Event: EventUnregistered, User: "alice", Time: at.Add(time.Second)},
	); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Seq != 1 || got[0].Event != EventRegistered || got[1].Seq != 2 || got[1].Event != EventUnregistered ||
		got[1].Reg.Proxy != alice.Proxy || !got[1].Time.Equal(at.Add(time.Second)) || got[0].Epoch != "shared" {
		t.Errorf("observed %+v; want registered seq 1 and unregistered seq 2 (with the ended registration) in epoch shared", got)
	}
}
