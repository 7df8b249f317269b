package hub

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

// tapLog collects what a hub's Tap sees, as the changes a log would carry.
type tapLog struct {
	mu      sync.Mutex
	applied []Applied
	bodies  []string
}

func (l *tapLog) tap(c *Change, st *State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := Applied{Realm: c.Realm, Seq: c.Seq, Event: c.Event, User: c.User, Time: c.Time}
	if st != nil {
		cp := *st
		a.State = &cp
	}
	l.applied = append(l.applied, a)
	l.bodies = append(l.bodies, string(c.Body))
}

func (l *tapLog) take() ([]Applied, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, b := l.applied, l.bodies
	l.applied, l.bodies = nil, nil
	return a, b
}

// TestApplyReplicatesTappedChanges: a replica applying what a hub's Tap saw
// emits byte-identical changes and ends with the same state, for every event
// kind, including the expiry clock's.
func TestApplyReplicatesTappedChanges(t *testing.T) {
	clk := newClock()
	var log tapLog
	h, sink := startHub(t, Options{Now: clk.Now, Tap: log.tap})
	replica := newHub(Options{Epoch: "cluster-epoch", Now: clk.Now})
	run(t, replica, nil)
	replica.Rebuild("cluster-epoch", nil, nil)
	sub, start := replica.Subscribe(SubscribeRequest{Realm: "r.example"})
	defer sub.Close()
	if start.Snapshot.Epoch != "cluster-epoch" || start.Snapshot.Seq != 0 {
		t.Fatalf("replica snapshot = %q/%d, want cluster-epoch/0", start.Snapshot.Epoch, start.Snapshot.Seq)
	}

	now := clk.Now()
	alice, bob := reg("alice", "R.example", now), reg("bob", "r.example", now)
	sink.Update(put(alice), put(bob))
	alice.ExpiryTime += 1000
	alice.Deadline = alice.Deadline.Add(time.Second)
	sink.Update(put(alice)) // refreshed
	bob.Protocol = "wss"
	sink.Update(put(bob)) // updated
	noExpiry := reg("carol", "r.example", now)
	noExpiry.ExpiryTime = 0
	noExpiry.Deadline = now.Add(2 * time.Second)
	sink.Update(put(noExpiry), del(bob.AOR()))
	clk.Add(3 * time.Second)
	settle(h) // carol expired by the clock

	applied, bodies := log.take()
	wantEvents := []string{"registered alice", "registered bob", "refreshed alice", "updated bob", "registered carol", "unregistered bob", "expired carol"}
	var got []string
	for _, a := range applied {
		got = append(got, a.Event+" "+a.User)
	}
	if !reflect.DeepEqual(got, wantEvents) {
		t.Fatalf("tapped %v, want %v", got, wantEvents)
	}
	if err := replica.Apply(applied...); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	items := drain(t, sub)
	if len(items) != len(bodies) {
		t.Fatalf("replica queued %d changes, want %d", len(items), len(bodies))
	}
	for i, it := range items {
		if string(it.Change.Body) != bodies[i] || it.Change.Seq != applied[i].Seq {
			t.Errorf("change %d: got seq %d %s, want seq %d %s", i, it.Change.Seq, it.Change.Body, applied[i].Seq, bodies[i])
		}
	}
	if got, want := restState(t, replica, "r.example"), restState(t, h, "r.example"); !reflect.DeepEqual(got, want) {
		t.Errorf("replica state %v, want %v", got, want)
	}
	if got, want := replica.Stats("r.example").Online, h.Stats("r.example").Online; got != want {
		t.Errorf("replica online = %d, want %d", got, want)
	}
	// Applying again skips what is applied; the replica's clock expires nothing.
	if err := replica.Apply(applied...); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	clk.Add(2 * time.Hour)
	settle(replica)
	if items := drain(t, sub); len(items) != 0 {
		t.Errorf("replica queued %v after re-apply and 2h, want nothing", events(items))
	}
}

// TestApplyGap: a change that does not follow the realm's seq is refused.
func TestApplyGap(t *testing.T) {
	h := newHub(Options{})
	run(t, h, nil)
	now := time.Now()
	st := &State{Reg: reg("a", "g.example", now), Since: now, EventTime: now, Event: EventRegistered}
	tests := []struct {
		name    string
		seq     uint64
		wantErr error
		wantSeq uint64
	}{
		{"first", 1, nil, 1},
		{"duplicate", 1, nil, 1},
		{"gap", 3, ErrGap, 1},
		{"next", 2, nil, 2},
	}
	for _, tc := range tests {
		err := h.Apply(Applied{Realm: "g.example", Seq: tc.seq, Event: EventRegistered, User: "a", Time: now, State: st})
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: Apply seq %d = %v, want %v", tc.name, tc.seq, err, tc.wantErr)
		}
		if got := h.Stats("g.example").Seq; got != tc.wantSeq {
			t.Errorf("%s: seq = %d, want %d", tc.name, got, tc.wantSeq)
		}
	}
}

// TestRebuild: realms whose seq moved get the new state and their
// subscribers a resync; resuming from before the rebuild is refused; realms
// already at their seq are left alone.
func TestRebuild(t *testing.T) {
	h := newHub(Options{Epoch: "e1"})
	run(t, h, nil)
	now := time.Now()
	state := func(user, realm string) State {
		return State{Reg: reg(user, realm, now), Since: now, EventTime: now, Event: EventRegistered}
	}
	h.Rebuild("e1", map[string]uint64{"a.example": 5, "b.example": 7},
		[]State{state("x", "a.example"), state("y", "b.example")})
	subA, _ := h.Subscribe(SubscribeRequest{Realm: "a.example"})
	subB, _ := h.Subscribe(SubscribeRequest{Realm: "b.example"})

	h.Rebuild("e1", map[string]uint64{"a.example": 9, "b.example": 7},
		[]State{state("z", "a.example"), state("y", "b.example")})
	if _, resync, _ := subA.Next(nil); !resync {
		t.Errorf("a.example subscriber: resync false after its realm moved 5 -> 9, want true")
	}
	if snap := subA.Resnapshot(); snap.Seq != 9 || len(snap.Users) != 1 || decodeObject(t, snap.Users[0])["name"] != "z" {
		t.Errorf("a.example resnapshot = seq %d %d users, want seq 9 with z", snap.Seq, len(snap.Users))
	}
	if _, resync, _ := subB.Next(nil); resync {
		t.Errorf("b.example subscriber: resync true although its realm stayed at 7")
	}
	if _, st := h.Subscribe(SubscribeRequest{Realm: "a.example", Since: &Position{Epoch: "e1", Seq: 5}}); st.Resumed {
		t.Errorf("resume from seq 5 after a rebuild to 9: resumed, want a snapshot")
	}

	h.Rebuild("e2", map[string]uint64{"b.example": 7}, []State{state("y", "b.example")})
	if _, resync, _ := subB.Next(nil); !resync {
		t.Errorf("b.example subscriber: resync false after a new epoch, want true")
	}
	if got := h.Epoch(); got != "e2" {
		t.Errorf("epoch = %q, want e2", got)
	}
	if n := h.Stats("a.example").Online; n != 0 {
		t.Errorf("a.example online = %d after a rebuild without it, want 0", n)
	}
}

// TestSeed: seeded state emits nothing; the source's first resync then emits
// only the differences, and seeded entries it no longer has are removed.
func TestSeed(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	var log tapLog
	h := newHub(Options{Now: clk.Now, Tap: log.tap})
	same, changed, gone := reg("same", "s.example", now), reg("changed", "s.example", now), reg("gone", "s.example", now)
	err := h.Seed([]State{
		{Reg: same, Since: now, EventTime: now, Event: EventRegistered},
		{Reg: changed, Since: now, EventTime: now, Event: EventRegistered},
		{Reg: gone, Since: now, EventTime: now, Event: EventRegistered},
	})
	if err != nil {
		t.Fatal(err)
	}
	changed.Protocol = "tls"
	same.Deadline = same.Deadline.Add(time.Millisecond) // re-measured TTL
	src := newFakeSource(same, changed)
	run(t, h, src)
	src.sink(t)
	applied, _ := log.take()
	var got []string
	for _, a := range applied {
		got = append(got, a.Event+" "+a.User)
	}
	if want := []string{"updated changed", "unregistered gone"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after seed + resync tapped %v, want %v", got, want)
	}
	// The seeded entry's deadline was armed by the re-read.
	clk.Add(2 * time.Hour)
	settle(h)
	applied, _ = log.take()
	got = nil
	for _, a := range applied {
		got = append(got, a.Event+" "+a.User)
	}
	if want := []string{"expired changed", "expired same"}; !reflect.DeepEqual(sorted(got), want) {
		t.Errorf("after the deadlines tapped %v, want %v", got, want)
	}
	if err := h.Seed(nil); err == nil {
		t.Errorf("Seed after Run: nil error, want one")
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestRebuildWithHistory: a replica rebuilt from a snapshot plus the changes
// that led to it serves a resume from before the snapshot with the same
// bytes the sequencing hub emitted; a run of changes with a hole keeps only
// its tail.
func TestRebuildWithHistory(t *testing.T) {
	clk := newClock()
	var log tapLog
	_, sink := startHub(t, Options{Now: clk.Now, Tap: log.tap})
	now := clk.Now()
	alice, bob := reg("alice", "h.example", now), reg("bob", "h.example", now)
	sink.Update(put(alice), put(bob))
	alice.Protocol = "tls"
	sink.Update(put(alice), del(bob.AOR()))
	applied, bodies := log.take() // seqs 1..4
	if len(applied) != 4 {
		t.Fatalf("tapped %d changes, want 4", len(applied))
	}
	final := []State{*applied[2].State}

	replica := newHub(Options{Epoch: "e", Now: clk.Now})
	run(t, replica, nil)
	replica.RebuildWithHistory("e", map[string]uint64{"h.example": 4}, final, applied)
	_, st := replica.Subscribe(SubscribeRequest{Realm: "h.example", Since: &Position{Epoch: "e", Seq: 1}})
	if !st.Resumed || len(st.Missed) != 3 {
		t.Fatalf("resume from 1: resumed %v with %d changes, want resumed with 3", st.Resumed, len(st.Missed))
	}
	for i, c := range st.Missed {
		if string(c.Body) != bodies[i+1] {
			t.Errorf("missed change %d = %s, want %s", i, c.Body, bodies[i+1])
		}
	}

	// The history came from the log: this process's first claim of the
	// realm keeps it (the other replicas kept theirs); a change of holder
	// drops it.
	replica.Claim("h.example", "acct")
	if _, st := replica.Subscribe(SubscribeRequest{Realm: "h.example", Owner: "acct", Since: &Position{Epoch: "e" + ownerTag("acct"), Seq: 1}}); !st.Resumed || len(st.Missed) != 3 {
		t.Errorf("resume from 1 after the first claim: resumed %v with %d changes, want resumed with 3", st.Resumed, len(st.Missed))
	}
	replica.Claim("h.example", "other")
	if n := len(replica.Recent("h.example", 10)); n != 0 {
		t.Errorf("history after the realm changed holder: %d changes, want none", n)
	}

	holey := newHub(Options{Epoch: "e", Now: clk.Now})
	run(t, holey, nil)
	holey.RebuildWithHistory("e", map[string]uint64{"h.example": 4}, final, []Applied{applied[0], applied[2], applied[3]})
	if _, st := holey.Subscribe(SubscribeRequest{Realm: "h.example", Since: &Position{Epoch: "e", Seq: 1}}); st.Resumed {
		t.Errorf("resume from 1 across a hole at seq 2: resumed, want a snapshot")
	}
	if _, st := holey.Subscribe(SubscribeRequest{Realm: "h.example", Since: &Position{Epoch: "e", Seq: 2}}); !st.Resumed || len(st.Missed) != 2 {
		t.Errorf("resume from 2: resumed %v with %d changes, want resumed with 2", st.Resumed, len(st.Missed))
	}
}
