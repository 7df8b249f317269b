package hub

import (
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestSubscribeRacesUpdates subscribes many times while a stream of updates
// is applied. Every subscriber must see its snapshot followed by exactly the
// changes after it: seq +1 each, no gap, no duplicate, and applying them to the
// snapshot must give the final state.
func TestSubscribeRacesUpdates(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "race.example"
	h, sink := startHub(t, Options{Now: clk.Now, QueueLen: 1 << 20, History: 1 << 16})

	const users, updates = 20, 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range updates {
			u := "u" + strconv.Itoa(i%users)
			r := reg(u, realm, now)
			switch round := i / users; round % 4 {
			case 0: // registered
			case 1: // refreshed
				r.ExpiryTime += int64(round)
			case 2: // updated
				r.ExpiryTime += int64(round)
				r.Contact = "sip:" + u + "@203.0.113.1:" + strconv.Itoa(round)
			case 3:
				sink.Update(del(r.AOR()))
				continue
			}
			sink.Update(put(r))
			if i%7 == 0 {
				sink.Update(put(reg("other", "other.example", now))) // another realm's changes never show up
			}
		}
	}()

	watch := []string{"u1", "u3", "nobody", "u8"}
	type sub struct {
		s     *Subscription
		start Start
		watch bool
		since uint64
		base  map[string]string // state at since, for resumed subscriptions
	}
	var subs []sub
	var lastSnap Snapshot // of the latest whole-realm subscriber
loop:
	for len(subs) < 150 {
		select {
		case <-done:
			break loop
		default:
		}
		switch len(subs) % 3 {
		case 0:
			s, st := h.Subscribe(SubscribeRequest{Realm: realm})
			subs = append(subs, sub{s: s, start: st})
			lastSnap = st.Snapshot
		case 1:
			s, st := h.Subscribe(SubscribeRequest{Realm: "RACE.example", Users: watch})
			subs = append(subs, sub{s: s, start: st, watch: true})
		case 2:
			// Resume from where the last whole-realm subscriber started.
			since := lastSnap.Seq
			s, st := h.Subscribe(SubscribeRequest{Realm: realm, Since: &Position{Epoch: h.Epoch(), Seq: since}})
			subs = append(subs, sub{s: s, start: st, since: since, base: snapshotState(t, lastSnap)})
		}
		time.Sleep(100 * time.Microsecond)
	}
	<-done

	final := restState(t, h, realm)
	finalSeq := h.Stats(realm).Seq
	var midStream int
	for _, sb := range subs {
		if at := sb.start.Snapshot.Seq; !sb.start.Resumed && at > 0 && at < finalSeq {
			midStream++
		}
	}
	t.Logf("%d subscriptions, %d of them snapshotted mid-stream", len(subs), midStream)
	if midStream == 0 {
		t.Error("no subscription started while updates were flowing; the test raced nothing")
	}
	norm := map[*Change]string{} // changes are shared; decode each once
	applyCached := func(state map[string]string, c *Change) {
		if c.Event == EventUnregistered || c.Event == EventExpired {
			delete(state, c.User)
			return
		}
		if _, ok := norm[c]; !ok {
			m := map[string]string{}
			apply(t, m, c)
			norm[c] = m[c.User]
		}
		state[c.User] = norm[c]
	}
	for i, sb := range subs {
		items := drain(t, sb.s)
		sb.s.Close()
		var state map[string]string
		var seq uint64
		var changes []*Change
		switch {
		case sb.watch:
			if sb.start.Resumed {
				t.Fatalf("sub %d: watchlist without Since was resumed", i)
			}
			if len(sb.start.Snapshot.Users) != len(watch) {
				t.Fatalf("sub %d: watchlist snapshot has %d users, want %d", i, len(sb.start.Snapshot.Users), len(watch))
			}
			state = map[string]string{}
			for j, u := range sb.start.Snapshot.Users {
				m := decodeObject(t, u)
				if m["name"] != watch[j] {
					t.Fatalf("sub %d: watchlist snapshot[%d] is %v, want %s (request order)", i, j, m["name"], watch[j])
				}
				if m["registered_status"] == StatusActive {
					state[watch[j]] = normal(t, u)
				}
			}
			seq = sb.start.Snapshot.Seq
			for _, it := range items {
				if it.Change.Seq <= seq {
					t.Fatalf("sub %d: watchlist change seq %d after %d: duplicate or out of order", i, it.Change.Seq, seq)
				}
				if it.Change.User != "u1" && it.Change.User != "u3" && it.Change.User != "u8" {
					t.Fatalf("sub %d: watchlist got a change of %s", i, it.Change.User)
				}
				seq = it.Change.Seq
				applyCached(state, it.Change)
			}
			want := map[string]string{}
			for _, u := range watch {
				if v, ok := final[u]; ok {
					want[u] = v
				}
			}
			if !reflect.DeepEqual(state, want) {
				t.Errorf("sub %d (watchlist): snapshot + changes = %v\nwant %v", i, state, want)
			}
			continue
		case sb.base != nil:
			if !sb.start.Resumed {
				t.Fatalf("sub %d: Since %d is in the history, want Resumed", i, sb.since)
			}
			state, seq = sb.base, sb.since
			changes = append(changes, sb.start.Missed...)
		default:
			if sb.start.Resumed || sb.start.Snapshot.Epoch != h.Epoch() {
				t.Fatalf("sub %d: want a snapshot of this epoch, got %+v", i, sb.start)
			}
			state, seq = snapshotState(t, sb.start.Snapshot), sb.start.Snapshot.Seq
		}
		for _, it := range items {
			changes = append(changes, it.Change)
		}
		for _, c := range changes {
			if c.Seq != seq+1 {
				t.Fatalf("sub %d: change seq %d follows %d: want exactly +1 (no gap, no duplicate)", i, c.Seq, seq)
			}
			if c.Realm != realm {
				t.Fatalf("sub %d: change of realm %q", i, c.Realm)
			}
			seq = c.Seq
			applyCached(state, c)
		}
		if seq != finalSeq {
			t.Errorf("sub %d: ends at seq %d, want %d", i, seq, finalSeq)
		}
		if !reflect.DeepEqual(state, final) {
			t.Errorf("sub %d: snapshot + changes = %v\nwant the final state %v", i, state, final)
		}
	}
	if n := h.Metrics.Subscribers.Load(); n != 0 {
		t.Errorf("Metrics.Subscribers = %d after closing every subscription, want 0", n)
	}
}

func TestWatchlist(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now}, reg("alice", realm, now), reg("bob", realm, now))
	h.SetClients(realm, map[string]Flags{"carol": {App: true, User: true}})

	s, st := h.Subscribe(SubscribeRequest{Realm: realm, Users: []string{"alice", "carol", "nobody", "alice"}})
	defer s.Close()
	if st.Resumed {
		t.Fatal("Resumed without Since")
	}
	type row struct {
		name, status string
		app          any
		eventTime    any
	}
	want := []row{
		{"alice", StatusActive, float64(0), float64(now.UnixMilli())},
		{"carol", StatusInactive, float64(1), nil}, // a known client, not registered: its flags, no event time
		{"nobody", StatusInactive, float64(0), nil},
	}
	if len(st.Snapshot.Users) != len(want) {
		t.Fatalf("watchlist snapshot has %d users, want %d (each watched name once, in order)", len(st.Snapshot.Users), len(want))
	}
	for i, w := range want {
		m := decodeObject(t, st.Snapshot.Users[i])
		if m["name"] != w.name || m["registered_status"] != w.status || m["allow_direct_app_calling"] != w.app || m["event_time"] != w.eventTime {
			t.Errorf("snapshot[%d] = %v, want %+v", i, m, w)
		}
		if len(m) != 10 {
			t.Errorf("snapshot[%d] has %d fields, want 10", i, len(m))
		}
	}
	// The first load is not a change (see TestFirstLoadIsQuiet): seq 0.
	if st.Snapshot.Seq != 0 || st.Snapshot.Epoch != h.Epoch() {
		t.Errorf("snapshot at %s/%d, want %s/0", st.Snapshot.Epoch, st.Snapshot.Seq, h.Epoch())
	}

	sink.Update(put(reg("bob", realm, now.Add(time.Minute))))     // not watched
	sink.Update(put(reg("carol", realm, now)))                    // watched, registers
	sink.Update(put(reg("dave", realm, now)))                     // not watched
	sink.Update(del("alice@example.com"), del("bob@example.com")) // only alice
	items := drain(t, s)
	if got, want := events(items), []string{"registered carol", "unregistered alice"}; !reflect.DeepEqual(got, want) {
		t.Errorf("watchlist events %q, want %q", got, want)
	}
	if len(items) == 2 && (items[0].Change.Seq != 2 || items[1].Change.Seq != 4) {
		t.Errorf("watchlist seqs %d, %d, want 2, 4 (the realm's numbers, with gaps for unwatched users)", items[0].Change.Seq, items[1].Change.Seq)
	}
}

func TestResume(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now, History: 100})
	for i := range 10 { // seq 1..10: alice, bob alternate
		u := []string{"alice", "bob"}[i%2]
		r := reg(u, realm, now)
		r.ExpiryTime += int64(i)
		sink.Update(put(r))
	}
	seqs := func(cs []*Change) []uint64 {
		var out []uint64
		for _, c := range cs {
			out = append(out, c.Seq)
		}
		return out
	}
	tests := []struct {
		name    string
		since   Position
		users   []string
		resumed bool
		missed  []uint64
	}{
		{"in history", Position{h.Epoch(), 5}, nil, true, []uint64{6, 7, 8, 9, 10}},
		{"in history, watchlist", Position{h.Epoch(), 5}, []string{"alice"}, true, []uint64{7, 9}},
		{"up to date", Position{h.Epoch(), 10}, nil, true, nil},
		{"from the start", Position{h.Epoch(), 0}, nil, true, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"wrong epoch", Position{"deadbeef0000", 5}, nil, false, nil},
		{"future seq", Position{h.Epoch(), 11}, nil, false, nil},
	}
	for _, tc := range tests {
		s, st := h.Subscribe(SubscribeRequest{Realm: realm, Users: tc.users, Since: &tc.since})
		if st.Resumed != tc.resumed || !reflect.DeepEqual(seqs(st.Missed), tc.missed) {
			t.Errorf("%s: Resumed=%v Missed=%v, want %v %v", tc.name, st.Resumed, seqs(st.Missed), tc.resumed, tc.missed)
		}
		if !tc.resumed && (st.Snapshot.Seq != 10 || len(st.Snapshot.Users) != 2) {
			t.Errorf("%s: snapshot at seq %d with %d users, want seq 10 with alice and bob", tc.name, st.Snapshot.Seq, len(st.Snapshot.Users))
		}
		s.Close()
	}

	// Push the history past its 100 entries: seq 1 is gone.
	for i := range 150 {
		r := reg("carol", realm, now)
		r.ExpiryTime += int64(i)
		sink.Update(put(r))
	}
	s, st := h.Subscribe(SubscribeRequest{Realm: realm, Since: &Position{h.Epoch(), 5}})
	defer s.Close()
	if st.Resumed || st.Snapshot.Seq != 160 {
		t.Errorf("too old: Resumed=%v snapshot seq %d, want a snapshot at 160", st.Resumed, st.Snapshot.Seq)
	}
	s2, st2 := h.Subscribe(SubscribeRequest{Realm: realm, Since: &Position{h.Epoch(), 60}})
	defer s2.Close()
	if !st2.Resumed || len(st2.Missed) != 100 || st2.Missed[0].Seq != 61 {
		t.Errorf("oldest kept: Resumed=%v with %d missed, want the last 100 changes (61..160)", st2.Resumed, len(st2.Missed))
	}
	sink.Update(del("carol@example.com"))
	if items := drain(t, s2); len(items) != 1 || items[0].Change.Seq != 161 {
		t.Errorf("after resuming, queued %v, want seq 161", events(items))
	}
}

func TestSlowConsumerConflation(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	const queueLen = 8
	h, sink := startHub(t, Options{Now: clk.Now, QueueLen: queueLen})
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
	defer s.Close()

	latest := map[string]uint64{}
	for i := range 100 { // 3 users: conflation always frees room
		u := []string{"alice", "bob", "carol"}[i%3]
		r := reg(u, realm, now)
		r.ExpiryTime += int64(i)
		sink.Update(put(r))
		latest[u] = h.Stats(realm).Seq
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n > queueLen {
			t.Fatalf("after change %d the queue holds %d items, want at most QueueLen=%d", i, n, queueLen)
		}
	}
	items := drain(t, s)
	got := map[string]uint64{}
	var prev uint64
	for _, it := range items {
		if it.Change.Seq <= prev {
			t.Errorf("conflated queue out of order: %d after %d", it.Change.Seq, prev)
		}
		prev = it.Change.Seq
		got[it.Change.User] = it.Change.Seq
	}
	if !reflect.DeepEqual(got, latest) {
		t.Errorf("latest queued seq per user %v, want %v (conflation keeps the newest change of each user)", got, latest)
	}
	var conflated int
	for _, it := range items {
		if it.Conflated {
			conflated++
		}
	}
	if conflated == 0 {
		t.Errorf("no item flagged Conflated after 100 changes through a queue of %d: %+v", queueLen, items)
	}
	if len(items) >= 100 || h.Metrics.Conflations.Load() == 0 {
		t.Errorf("delivered %d of 100 changes, Metrics.Conflations=%d; want fewer delivered and conflations > 0", len(items), h.Metrics.Conflations.Load())
	}
	if h.Metrics.SubResyncs.Load() != 0 {
		t.Errorf("Metrics.SubResyncs = %d, want 0: three users always fit", h.Metrics.SubResyncs.Load())
	}
}

func TestSlowConsumerResnapshot(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now, QueueLen: 8})
	wake := make(chan struct{}, 1)
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm, Wake: wake})
	defer s.Close()
	for i := range 20 { // 20 distinct users: conflation cannot help
		sink.Update(put(reg("u"+strconv.Itoa(i), realm, now)))
	}
	items, resync, closed := s.Next(nil)
	if !resync || closed || len(items) != 0 {
		t.Fatalf("Next = %d items, resync=%v, closed=%v; want no items and resync", len(items), resync, closed)
	}
	if n := h.Metrics.SubResyncs.Load(); n != 1 {
		t.Errorf("Metrics.SubResyncs = %d, want 1", n)
	}
	snap := s.Resnapshot()
	if snap.Seq != h.Stats(realm).Seq || snap.Epoch != h.Epoch() {
		t.Errorf("Resnapshot at %s/%d, want %s/%d", snap.Epoch, snap.Seq, h.Epoch(), h.Stats(realm).Seq)
	}
	if got, want := snapshotState(t, snap), restState(t, h, realm); !reflect.DeepEqual(got, want) {
		t.Errorf("Resnapshot = %v\nwant the current state %v", got, want)
	}
	if items, resync, _ := s.Next(nil); resync || len(items) != 0 {
		t.Errorf("after Resnapshot: Next = %d items, resync=%v; want nothing pending", len(items), resync)
	}
	sink.Update(del("u3@example.com"))
	if items := drain(t, s); len(items) != 1 || items[0].Change.Seq != snap.Seq+1 {
		t.Errorf("after Resnapshot queued %q, want one change at seq %d", events(items), snap.Seq+1)
	}
	select {
	case <-wake:
	default:
		t.Error("Wake was not signalled")
	}
}

func TestCloseSubscription(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	h, sink := startHub(t, Options{Now: clk.Now})
	wake := make(chan struct{}, 1)
	s, _ := h.Subscribe(SubscribeRequest{Realm: "example.com", Wake: wake})
	other, _ := h.Subscribe(SubscribeRequest{Realm: "example.com", Wake: wake})
	defer other.Close()
	if n := h.Metrics.Subscribers.Load(); n != 2 {
		t.Errorf("Metrics.Subscribers = %d, want 2", n)
	}
	sink.Update(put(reg("alice", "example.com", now)))
	s.Close()
	s.Close()
	if n := h.Metrics.Subscribers.Load(); n != 1 {
		t.Errorf("Metrics.Subscribers = %d after closing one twice, want 1", n)
	}
	sink.Update(put(reg("bob", "example.com", now)))
	items, _, closed := s.Next(nil)
	if !closed || len(items) != 0 {
		t.Errorf("closed subscription: Next = %q, closed=%v; want nothing and closed", events(items), closed)
	}
	if got := events(drain(t, other)); len(got) != 2 {
		t.Errorf("the other subscription got %q, want both changes", got)
	}
}

func TestRunEndClosesSubscriptions(t *testing.T) {
	h := newHub(Options{})
	stop := run(t, h, newFakeSource())
	wake := make(chan struct{}, 1)
	s, _ := h.Subscribe(SubscribeRequest{Realm: "example.com", Wake: wake})
	w, _ := h.Subscribe(SubscribeRequest{Realm: "other.com", Users: []string{"a"}})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	for name, sub := range map[string]*Subscription{"realm": s, "watchlist": w} {
		if _, _, closed := sub.Next(nil); !closed {
			t.Errorf("%s subscription: Next reports open after Run ended", name)
		}
	}
	select {
	case <-wake:
	default:
		t.Error("Wake not signalled when Run ended")
	}
	if n := h.Metrics.Subscribers.Load(); n != 0 {
		t.Errorf("Metrics.Subscribers = %d after Run ended, want 0", n)
	}
	late, _ := h.Subscribe(SubscribeRequest{Realm: "example.com"})
	if _, _, closed := late.Next(nil); !closed {
		t.Error("Subscribe after Run ended returned an open subscription that nothing will ever close")
	}
	late.Close()
	s.Close()
	if n := h.Metrics.Subscribers.Load(); n != 0 {
		t.Errorf("Metrics.Subscribers = %d, want 0", n)
	}
}

// TestConcurrentReaders runs every reader against a busy owner; it finds
// data races under -race and lock-order deadlocks (by timing out).
func TestConcurrentReaders(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now, QueueLen: 4})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			names := []string{"u1", "u2", "nobody"}
			var buf []Item
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h.ListJSON(realm)
				h.AppendUsers(nil, realm, names)
				h.AppendAll(nil, realm)
				h.Get(realm, "u1")
				h.Users(realm)
				h.Stats(realm)
				h.Recent(realm, 3)
				h.Realms()
				h.SetClients(realm, map[string]Flags{"u" + strconv.Itoa(i%5): {App: g%2 == 1}})
				s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
				buf, _, _ = s.Next(buf)
				s.Resnapshot()
				s.Close()
			}
		})
	}
	for i := range 2000 {
		u := reg("u"+strconv.Itoa(i%10), realm, now)
		u.ExpiryTime += int64(i)
		sink.Update(put(u))
		if i%3 == 0 {
			sink.Update(del(u.AOR()))
		}
		if i%500 == 0 {
			sink.Resync([]Registration{u})
		}
	}
	close(stop)
	wg.Wait()
}

// TestQueued counts what waits in every subscription's queue: each change
// once per subscription that wants it, nothing once taken.
func TestQueued(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	h, sink := startHub(t, Options{Now: clk.Now, QueueLen: 64})
	all, _ := h.Subscribe(SubscribeRequest{Realm: "a.example.com"})
	defer all.Close()
	bob, _ := h.Subscribe(SubscribeRequest{Realm: "a.example.com", Users: []string{"bob"}})
	defer bob.Close()
	other, _ := h.Subscribe(SubscribeRequest{Realm: "b.example.com"})
	defer other.Close()
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"nothing yet", func() {}, 0},
		{"alice: one subscription wants it", func() { sink.Update(put(reg("alice", "a.example.com", now))) }, 1},
		{"bob: two want it", func() { sink.Update(put(reg("bob", "a.example.com", now))) }, 3},
		{"carol in the other realm", func() { sink.Update(put(reg("carol", "b.example.com", now))) }, 4},
		{"the whole realm's queue taken", func() { all.Next(nil) }, 2},
		{"the rest taken", func() { bob.Next(nil); other.Next(nil) }, 0},
	}
	for _, st := range steps {
		st.do()
		if got := h.Queued(); got != st.want {
			t.Errorf("%s: Queued() = %d, want %d", st.name, got, st.want)
		}
	}
}
