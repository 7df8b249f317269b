package hub

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewDefaults(t *testing.T) {
	tests := []struct {
		in                Options
		history, queueLen int
	}{
		{Options{}, 1024, 256},
		{Options{History: 5, QueueLen: -1}, 100, 256}, // "min 100": a small History is raised to the minimum
		{Options{History: 100, QueueLen: 3}, 100, 3},
		{Options{History: 5000, QueueLen: 10}, 5000, 10},
	}
	for _, tc := range tests {
		h := New(tc.in)
		if h.opts.History != tc.history || h.opts.QueueLen != tc.queueLen {
			t.Errorf("New(%+v): History=%d QueueLen=%d, want %d %d", tc.in, h.opts.History, h.opts.QueueLen, tc.history, tc.queueLen)
		}
		if h.opts.Now == nil || h.opts.Logger == nil {
			t.Errorf("New(%+v) left Now or Logger nil", tc.in)
		}
	}
	if a, b := New(Options{}).Epoch(), New(Options{}).Epoch(); a == b || len(a) != 12 {
		t.Errorf("epochs %q and %q: want 12 hex digits, different per hub", a, b)
	}
}

func TestEvents(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	const realm = "example.com"
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
	defer s.Close()

	base := reg("alice", realm, clk.Now())
	with := func(f func(r *Registration)) Registration {
		r := base
		f(&r)
		return r
	}
	bob := reg("bob", realm, clk.Now())
	carol := reg("carol", realm, clk.Now())
	// The steps are built before any runs; the clock moves 2h in one of them.
	later := clk.Now().Add(2 * time.Hour)

	steps := []struct {
		name    string
		before  func()
		updates []Update
		want    []string
	}{
		{"new binding", nil, []Update{put(base)}, []string{"registered alice"}},
		{"identical re-read (expire notification after SETEX)", nil, []Update{put(base)}, nil},
		{"identical re-read, deadline measured a little later", nil,
			[]Update{put(with(func(r *Registration) { r.Deadline = r.Deadline.Add(800 * time.Millisecond) }))}, nil},
		{"only SBC address and hooks differ", nil,
			[]Update{put(with(func(r *Registration) { r.SBCAddress, r.CallHook = "10.9.9.9", "https://other" }))}, nil},
		{"new expiry time", nil,
			[]Update{put(with(func(r *Registration) { r.ExpiryTime += 60_000 }))}, []string{"refreshed alice"}},
		{"contact changes", nil,
			[]Update{put(with(func(r *Registration) { r.ExpiryTime += 60_000; r.Contact = "sip:alice@203.0.113.1" }))}, []string{"updated alice"}},
		{"protocol changes", nil,
			[]Update{put(with(func(r *Registration) { r.ExpiryTime += 60_000; r.Contact = "sip:alice@203.0.113.1"; r.Protocol = "tls" }))}, []string{"updated alice"}},
		{"proxy changes", nil,
			[]Update{put(with(func(r *Registration) {
				r.ExpiryTime += 60_000
				r.Contact, r.Protocol, r.Proxy = "sip:alice@203.0.113.1", "tls", ""
			}))}, []string{"updated alice"}},
		{"app flag changes", nil,
			[]Update{put(with(func(r *Registration) {
				r.ExpiryTime += 60_000
				r.Contact, r.Protocol, r.Proxy = "sip:alice@203.0.113.1", "tls", ""
				r.AllowDirectApp = 1
			}))}, []string{"updated alice"}},
		{"queue flag changes", nil,
			[]Update{put(with(func(r *Registration) {
				r.ExpiryTime += 60_000
				r.Contact, r.Protocol, r.Proxy = "sip:alice@203.0.113.1", "tls", ""
				r.AllowDirectApp, r.AllowDirectQueue = 1, 1
			}))}, []string{"updated alice"}},
		{"user flag changes, new expiry too: updated wins", nil,
			[]Update{put(with(func(r *Registration) {
				r.ExpiryTime += 120_000
				r.Contact, r.Protocol, r.Proxy = "sip:alice@203.0.113.1", "tls", ""
				r.AllowDirectApp, r.AllowDirectQueue, r.AllowDirectUser = 1, 1, 1
			}))}, []string{"updated alice"}},
		{"key gone before the deadline", nil, []Update{del("alice@example.com")}, []string{"unregistered alice"}},
		{"key gone again", nil, []Update{del("alice@example.com")}, nil},
		{"malformed AOR is ignored", nil, []Update{del("alice"), del("@example.com"), del("alice@")}, nil},
		{"several updates in one call keep their order", nil,
			[]Update{put(bob), put(carol), del(bob.AOR())}, []string{"registered bob", "registered carol", "unregistered bob"}},
		{"key gone after the deadline passed (Redis reports first)",
			func() { clk.Add(2 * time.Hour) }, // the real timer is an hour away: only the Update sees it
			[]Update{del("carol@EXAMPLE.com")}, []string{"expired carol"}},
		{"registration whose deadline already passed is absent", nil,
			[]Update{put(reg("dave", realm, later.Add(-2*time.Hour)))}, nil},
		{"a lapsed re-read of a registered user expires it", nil,
			[]Update{put(reg("erin", realm, later)), put(reg("erin", realm, later.Add(-2*time.Hour)))},
			[]string{"registered erin", "expired erin"}},
	}
	var total int
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		before := h.Metrics.Changes.Load()
		sink.Update(st.updates...)
		got := events(drain(t, s))
		if len(got) == 0 {
			got = nil
		}
		if !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s: events %q, want %q", st.name, got, st.want)
		}
		if d := h.Metrics.Changes.Load() - before; d != uint64(len(st.want)) {
			t.Errorf("%s: Metrics.Changes moved by %d, want %d", st.name, d, len(st.want))
		}
		total += len(st.want)
	}
	if st := h.Stats(realm); st.Seq != uint64(total) || st.Online != 0 {
		t.Errorf("Stats: Seq=%d Online=%d, want Seq=%d (one per change) and nobody online", st.Seq, st.Online, total)
	}
	if got := string(h.Get(realm, "dave")); !bytes.Contains([]byte(got), []byte(`"registered_status":"inactive"`)) {
		t.Errorf("Get(dave) = %s, want inactive: a lapsed registration is absent", got)
	}
	if n := h.Metrics.Expirations.Load(); n != 2 {
		t.Errorf("Metrics.Expirations = %d, want 2 (carol, erin)", n)
	}
}

// TestDerivedExpiryTime covers registrations without an SBC expiryTime: it
// comes from the deadline, and re-reads that only re-measure the TTL are not
// refreshes.
func TestDerivedExpiryTime(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
	defer s.Close()
	r := reg("alice", realm, clk.Now())
	r.ExpiryTime = 0
	first := r.Deadline
	steps := []struct {
		name     string
		deadline time.Time
		want     []string
		expiry   int64
	}{
		{"new", first, []string{"registered alice"}, first.UnixMilli()},
		{"re-read, TTL measured 900ms later", first.Add(900 * time.Millisecond), nil, first.UnixMilli()},
		{"re-read, TTL measured 900ms earlier", first.Add(-900 * time.Millisecond), nil, first.UnixMilli()},
		{"new REGISTER a minute later", first.Add(time.Minute), []string{"refreshed alice"}, first.Add(time.Minute).UnixMilli()},
	}
	for _, st := range steps {
		r.Deadline = st.deadline
		sink.Update(put(r))
		got := events(drain(t, s))
		if len(got) == 0 {
			got = nil
		}
		if !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s: events %q, want %q", st.name, got, st.want)
		}
		if e := decodeObject(t, h.Get(realm, "alice"))["expiryTime"]; e != float64(st.expiry) {
			t.Errorf("%s: expiryTime %v, want %d", st.name, e, st.expiry)
		}
	}
}

// TestHiddenFieldsKept checks that a re-read that only changes fields the hub
// never encodes (SBC addresses, hooks) still replaces the stored record.
func TestHiddenFieldsKept(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	r := reg("alice", "example.com", clk.Now())
	sink.Update(put(r))
	r.SBCAddress, r.CallHook = "10.9.9.9", "https://new-hook"
	sink.Update(put(r))
	var got Registration
	h.do(func() {
		rs := h.realm("example.com", false)
		rs.mu.RLock()
		got = rs.users["alice"].reg
		rs.mu.RUnlock()
	})
	if got.SBCAddress != "10.9.9.9" || got.CallHook != "https://new-hook" {
		t.Errorf("stored SBCAddress/CallHook = %q/%q, want the re-read's 10.9.9.9/https://new-hook", got.SBCAddress, got.CallHook)
	}
}

// TestExpiryRealClock is the product requirement: a registration is expired by
// the hub's own clock within 1s of its deadline, with no word from the source.
func TestExpiryRealClock(t *testing.T) {
	t.Parallel()
	h, sink := startHub(t, Options{})
	const realm = "example.com"
	wake := make(chan struct{}, 1)
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm, Wake: wake})
	defer s.Close()

	stay := reg("stay", realm, time.Now())
	r := reg("alice", realm, time.Now())
	deadline := time.Now().Add(200 * time.Millisecond)
	r.Deadline = deadline
	sink.Update(put(r), put(stay))

	var got []string
	timeout := time.After(time.Until(deadline) + 2*time.Second)
wait:
	for {
		select {
		case <-wake:
			for _, it := range drain(t, s) {
				got = append(got, it.Change.Event+" "+it.Change.User)
				if it.Change.Event == EventExpired {
					if late := it.Change.Time.Sub(deadline); late < 0 || late > time.Second {
						t.Errorf("expired %v after the deadline, want within [0, 1s]", late)
					}
					break wait
				}
			}
		case <-timeout:
			t.Fatalf("no expired event within 2s of the deadline; events so far %q", got)
		}
	}
	if want := []string{"registered alice", "registered stay", "expired alice"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if b := string(h.Get(realm, "alice")); !bytes.Contains([]byte(b), []byte(`"inactive"`)) {
		t.Errorf("Get after expiry = %s, want inactive", b)
	}
	if b := string(h.ListJSON(realm)); b != `["stay@example.com"]` {
		t.Errorf("ListJSON after expiry = %s, want only stay", b)
	}
	if b := string(h.AppendAll(nil, realm)); bytes.Contains([]byte(b), []byte("alice")) {
		t.Errorf("AppendAll after expiry still has alice: %s", b)
	}
	if u := h.Users(realm); len(u) != 1 || u[0].Name != "stay" {
		t.Errorf("Users after expiry = %+v, want only stay", u)
	}
	if n := h.Metrics.Expirations.Load(); n != 1 {
		t.Errorf("Metrics.Expirations = %d, want 1", n)
	}
}

func TestExpiryPushedBack(t *testing.T) {
	const realm = "example.com"
	tests := []struct {
		name    string
		refresh func(r *Registration, now time.Time)
		event   string
	}{
		{"refresh with new expiry", func(r *Registration, now time.Time) {
			r.ExpiryTime = now.Add(10 * time.Second).UnixMilli()
			r.Deadline = now.Add(10 * time.Second)
		}, "refreshed alice"},
		{"same record, later deadline", func(r *Registration, now time.Time) {
			r.Deadline = now.Add(10 * time.Second)
		}, ""},
		{"update with new contact", func(r *Registration, now time.Time) {
			r.Contact = "sip:alice@203.0.113.9"
			r.Deadline = now.Add(10 * time.Second)
		}, "updated alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			h, sink := startHub(t, Options{Now: clk.Now})
			s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
			defer s.Close()
			r := reg("alice", realm, clk.Now())
			r.Deadline = clk.Now().Add(10 * time.Second)
			sink.Update(put(r))

			clk.Add(5 * time.Second)
			tc.refresh(&r, clk.Now()) // deadline now at +15s
			sink.Update(put(r))

			clk.Add(6 * time.Second) // +11s: past the first deadline only
			settle(h)
			if h.Stats(realm).Online != 1 {
				t.Fatalf("alice expired at the stale deadline; a refresh must push it back")
			}
			clk.Add(5 * time.Second) // +16s
			settle(h)
			want := []string{"registered alice"}
			if tc.event != "" {
				want = append(want, tc.event)
			}
			want = append(want, "expired alice")
			if got := events(drain(t, s)); !reflect.DeepEqual(got, want) {
				t.Errorf("events %q, want %q", got, want)
			}
			if h.Stats(realm).Online != 0 {
				t.Errorf("alice still online after the refreshed deadline passed")
			}
		})
	}
}

// TestReRegisterKeepsOwnDeadline: after an un-REGISTER, a new binding of the
// same user must not expire at the old binding's deadline.
func TestReRegisterKeepsOwnDeadline(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	r := reg("alice", realm, clk.Now())
	r.Deadline = clk.Now().Add(10 * time.Second)
	sink.Update(put(r))
	sink.Update(del(r.AOR()))
	clk.Add(5 * time.Second)
	r.Deadline = clk.Now().Add(60 * time.Second)
	sink.Update(put(r))
	clk.Add(10 * time.Second) // past the first binding's deadline
	settle(h)
	if h.Stats(realm).Online != 1 {
		t.Errorf("the re-registered alice expired at her previous binding's deadline")
	}
}

// TestDeadlineHeapBounded checks that re-reads with jittering deadlines (every
// notification and every reconcile) do not grow the expiry heap without bound.
func TestDeadlineHeapBounded(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	r := reg("alice", "example.com", clk.Now())
	for i := range 20_000 {
		r.Deadline = clk.Now().Add(time.Hour + time.Duration(i)*time.Millisecond)
		sink.Update(put(r))
	}
	for i := range 5000 { // and users that come and go
		u := reg("u"+strconv.Itoa(i), "example.com", clk.Now())
		sink.Update(put(u), del(u.AOR()))
	}
	var n int
	h.do(func() { n = h.deadlines.Len() })
	if n > 4096 {
		t.Errorf("deadline heap holds %d entries for 1 live registration, want it compacted (<= 4096)", n)
	}
	clk.Add(3 * time.Hour)
	settle(h)
	if h.Stats("example.com").Online != 0 {
		t.Errorf("alice survived compaction of the heap but not its deadline")
	}
}

func TestResync(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	a, b, c, d := reg("a", realm, now), reg("b", realm, now), reg("c", realm, now), reg("d", realm, now)
	other := reg("x", "other.com", now)

	h := newHub(Options{Now: clk.Now})
	if h.Ready() {
		t.Fatal("Ready before the first resync")
	}
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm})
	defer s.Close()
	src := newFakeSource(a, b, c, other)
	run(t, h, src)
	sink := src.sink(t)
	if !h.Ready() {
		t.Fatal("not Ready after the first resync")
	}
	if got, want := events(drain(t, s)), []string{"registered a", "registered b", "registered c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("first resync: events %q, want %q", got, want)
	}

	b2 := b
	b2.ExpiryTime += 1000
	steps := []struct {
		name string
		regs []Registration
		want []string
	}{
		{"differences only", []Registration{a, b2, d, other}, []string{"refreshed b", "registered d", "unregistered c"}},
		{"identical resync", []Registration{a, b2, d, other}, nil},
		{"identical but realm spelled in capitals", []Registration{upperRealm(a), upperRealm(b2), upperRealm(d), other}, nil},
		{"empty resync removes everything", nil, []string{"unregistered a", "unregistered b", "unregistered d"}},
	}
	for _, st := range steps {
		sink.Resync(st.regs)
		got := events(drain(t, s))
		if len(got) == 0 {
			got = nil
		}
		// Removals are emitted in map order; compare them as a set.
		if !sameEvents(got, st.want) {
			t.Errorf("%s: events %q, want %q", st.name, got, st.want)
		}
	}
	if n := h.Metrics.Resyncs.Load(); n != 5 {
		t.Errorf("Metrics.Resyncs = %d, want 5", n)
	}
	if at := h.Metrics.SyncedAtUnix.Load(); at != now.UnixMilli() {
		t.Errorf("Metrics.SyncedAtUnix = %d, want %d", at, now.UnixMilli())
	}
	if got := string(h.ListJSON("other.com")); got != "[]" {
		t.Errorf("other.com after an empty resync: %s, want []", got)
	}
}

func upperRealm(r Registration) Registration {
	r.Realm = "EXAMPLE.Com"
	return r
}

// sameEvents compares event lists from a resync: upserts come first, in the
// order given; removals follow in map order, so they are compared as a set.
func sameEvents(got, want []string) bool {
	split := func(ev []string) (ups []string, removals map[string]int) {
		removals = map[string]int{}
		for i, e := range ev {
			if strings.HasPrefix(e, EventUnregistered+" ") || strings.HasPrefix(e, EventExpired+" ") {
				for _, r := range ev[i:] {
					removals[r]++
				}
				return ups, removals
			}
			ups = append(ups, e)
		}
		return ups, removals
	}
	gu, gr := split(got)
	wu, wr := split(want)
	return reflect.DeepEqual(gu, wu) && reflect.DeepEqual(gr, wr)
}

// TestRealmCase checks that a mixed-case realm from the source, a lower-cased
// one from a notification's AOR and any spelling from a reader all meet.
func TestRealmCase(t *testing.T) {
	clk := newClock()
	h, sink := startHub(t, Options{Now: clk.Now})
	r := reg("alice", "Example.COM", clk.Now())
	sink.Resync([]Registration{r})
	if got := string(h.ListJSON("EXAMPLE.com")); got != `["alice@example.com"]` {
		t.Fatalf("after a resync with realm Example.COM, ListJSON = %s, want [\"alice@example.com\"]", got)
	}
	nonASCII := reg("bob", "ÉX.COM", clk.Now())
	sink.Update(put(nonASCII))
	sink.Update(del("bob@ÉX.COM"))
	if n := h.Stats("ÉX.COM").Online; n != 0 {
		t.Errorf("bob@ÉX.COM still online after its key was reported gone (realm lower-cased two different ways)")
	}
}

func TestReads(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now},
		reg("bob", realm, now), reg("alice", realm, now), reg("carol", "Example.com", now),
		reg("x", "myexample.com", now), reg("y", "sub.example.com", now), reg("z", "example.com.evil", now))
	h.SetClients("EXAMPLE.COM", map[string]Flags{"zed": {App: true, Queue: true}, "Mixed": {User: true}, "CAROL": {Queue: true}})

	t.Run("ListJSON", func(t *testing.T) {
		for _, name := range []string{realm, "EXAMPLE.COM"} {
			if got, want := string(h.ListJSON(name)), `["alice@example.com","bob@example.com","carol@example.com"]`; got != want {
				t.Errorf("ListJSON(%q) = %s, want %s (sorted, exact realm)", name, got, want)
			}
		}
		if got := string(h.ListJSON("nowhere.com")); got != "[]" {
			t.Errorf("ListJSON(unknown) = %s, want []", got)
		}
		l := h.ListJSON(realm)
		if cap(l) != len(l) {
			t.Errorf("ListJSON's cached slice has spare capacity (%d > %d): a caller's append would write into the cache", cap(l), len(l))
		}
	})

	t.Run("ListJSON cache", func(t *testing.T) {
		first := h.ListJSON(realm)
		if again := h.ListJSON(realm); &again[0] != &first[0] {
			t.Error("ListJSON re-encoded without a change; want the cached encoding")
		}
		refreshed := reg("alice", realm, now)
		refreshed.ExpiryTime += 5000
		sink.Update(put(refreshed))
		if again := h.ListJSON(realm); &again[0] != &first[0] {
			t.Error("a refresh invalidated the ListJSON cache; only adds and removes should")
		}
		sink.Update(put(reg("dan", realm, now)))
		if got, want := string(h.ListJSON(realm)), `["alice@example.com","bob@example.com","carol@example.com","dan@example.com"]`; got != want {
			t.Errorf("after adding dan: ListJSON = %s, want %s", got, want)
		}
		sink.Update(del("dan@example.com"))
		if got, want := string(h.ListJSON(realm)), `["alice@example.com","bob@example.com","carol@example.com"]`; got != want {
			t.Errorf("after removing dan: ListJSON = %s, want %s", got, want)
		}
	})

	t.Run("AppendUsers", func(t *testing.T) {
		names := []string{"carol", "zed", "alice", "carol", "nobody", "Zed", "mixed", "gone", "x"}
		b := h.AppendUsers([]byte("keep"), realm, names)
		if string(b[:4]) != "keep" {
			t.Fatalf("AppendUsers did not append: %q", b)
		}
		got := decodeArray(t, b[4:])
		type row struct {
			name, status  string
			app, queue, u float64
		}
		want := []row{
			{"carol", "active", 0, 0, 0},
			{"zed", "inactive", 1, 1, 0},
			{"alice", "active", 0, 0, 0},
			{"carol", "active", 0, 0, 0},
			{"nobody", "inactive", 0, 0, 0},
			{"Zed", "inactive", 1, 1, 0},   // client usernames match case-insensitively
			{"mixed", "inactive", 0, 0, 1}, // SetClients keys are lower-cased too
			{"gone", "inactive", 0, 0, 0},  // never a client
			{"x", "inactive", 0, 0, 0},     // x is registered in myexample.com only
		}
		if len(got) != len(want) {
			t.Fatalf("AppendUsers gave %d objects for %d names: %s", len(got), len(names), b[4:])
		}
		for i, w := range want {
			g := got[i]
			if g["name"] != w.name || g["registered_status"] != w.status || g["allow_direct_app_calling"] != w.app ||
				g["allow_direct_queue_calling"] != w.queue || g["allow_direct_user_calling"] != w.u {
				t.Errorf("AppendUsers[%d] = %v, want %+v", i, g, w)
			}
			if len(g) != 9 {
				t.Errorf("AppendUsers[%d] has %d fields, want 9", i, len(g))
			}
		}
		if got := string(h.AppendUsers(nil, realm, nil)); got != "[]" {
			t.Errorf("AppendUsers(no names) = %s, want []", got)
		}
		unknown := decodeArray(t, h.AppendUsers(nil, "nowhere.com", []string{"alice"}))
		if len(unknown) != 1 || unknown[0]["registered_status"] != "inactive" || unknown[0]["name"] != "alice" {
			t.Errorf("AppendUsers(unknown realm) = %v, want alice inactive", unknown)
		}
	})

	t.Run("Get", func(t *testing.T) {
		tests := []struct {
			realm, user, status string
		}{
			{realm, "alice", "active"},
			{"EXAMPLE.COM", "bob", "active"},
			{realm, "Alice", "inactive"}, // registrations are keyed by the exact user
			{realm, "x", "inactive"},
			{"myexample.com", "x", "active"},
			{"nowhere.com", "alice", "inactive"},
		}
		for _, tc := range tests {
			got := decodeObject(t, h.Get(tc.realm, tc.user))
			if got["name"] != tc.user || got["registered_status"] != tc.status || len(got) != 9 {
				t.Errorf("Get(%q, %q) = %v, want %s with 9 fields", tc.realm, tc.user, got, tc.status)
			}
		}
	})

	t.Run("AppendAll", func(t *testing.T) {
		got := decodeArray(t, h.AppendAll(nil, realm))
		var names []string
		for _, u := range got {
			names = append(names, u["name"].(string))
		}
		if want := []string{"alice", "bob", "carol"}; !reflect.DeepEqual(names, want) {
			t.Errorf("AppendAll names %v, want %v (sorted, exact realm)", names, want)
		}
		if got := string(h.AppendAll(nil, "nowhere.com")); got != "[]" {
			t.Errorf("AppendAll(unknown) = %s, want []", got)
		}
	})

	t.Run("Users", func(t *testing.T) {
		u := h.Users("Example.Com")
		if len(u) != 3 || u[0].Name != "alice" || u[1].Name != "bob" || u[2].Name != "carol" {
			t.Fatalf("Users = %+v, want alice, bob, carol", u)
		}
		if u[1].Protocol != "udp" || u[1].LastEvent != EventRegistered || !u[1].Since.Equal(now) {
			t.Errorf("Users[bob] = %+v, want udp, registered, since %v", u[1], now)
		}
		if u[0].LastEvent != EventRefreshed {
			t.Errorf("Users[alice].LastEvent = %q, want refreshed", u[0].LastEvent)
		}
		if h.Users("nowhere.com") != nil {
			t.Error("Users(unknown) not nil")
		}
	})

	t.Run("Realms", func(t *testing.T) {
		got := h.Realms()
		want := []string{"example.com", "example.com.evil", "myexample.com", "sub.example.com"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Realms = %v, want %v", got, want)
		}
	})

	t.Run("Recent", func(t *testing.T) {
		rec := h.Recent(realm, 2)
		if len(rec) != 2 || rec[0].User != "dan" || rec[0].Event != EventUnregistered || rec[1].User != "dan" {
			t.Errorf("Recent(2) = %v, want dan's unregistered then registered (newest first)", rec)
		}
		if h.Recent("nowhere.com", 5) != nil {
			t.Error("Recent(unknown) not nil")
		}
	})
}

// TestSetClientsCopies checks that the hub does not keep the caller's map.
func TestSetClientsCopies(t *testing.T) {
	h := newHub(Options{})
	m := map[string]Flags{"alice": {App: true}}
	h.SetClients("example.com", m)
	m["alice"] = Flags{} // the caller reuses its map
	got := decodeObject(t, h.Get("example.com", "alice"))
	if got["allow_direct_app_calling"] != float64(1) {
		t.Errorf("changing the caller's map afterwards changed the hub's flags: %v", got)
	}
}

func TestStats(t *testing.T) {
	clk := newClock()
	clk.t = clk.t.Truncate(time.Minute).Add(10 * time.Second)
	h, sink := startHub(t, Options{Now: clk.Now})
	const realm = "example.com"

	empty := h.Stats("nowhere.com")
	if empty.Online != 0 || len(empty.Series) != 60 || empty.Protocols == nil {
		t.Errorf("Stats(unknown) = %+v, want zero with a 60-long series", empty)
	}

	tcp := func(u string) Registration {
		r := reg(u, realm, clk.Now())
		r.Protocol = "tcp"
		return r
	}
	noProto := reg("np", realm, clk.Now())
	noProto.Protocol = ""
	sink.Update(put(reg("a", realm, clk.Now())), put(tcp("b")), put(tcp("c")), put(noProto)) // 4 online
	clk.Add(time.Minute)
	sink.Update(del("c@example.com")) // 3 online
	moved := tcp("b")
	moved.Protocol = "wss"
	sink.Update(put(moved)) // b: tcp -> wss

	tests := []struct {
		name      string
		advance   time.Duration
		online    int
		protocols map[string]int
		changes   int
		series    func(s []int) bool
	}{
		{"now", 0, 3, map[string]int{"udp": 1, "wss": 1, "": 1}, 2, func(s []int) bool {
			return s[59] == 3 && s[58] == 4
		}},
		{"a minute later, nothing new", time.Minute, 3, map[string]int{"udp": 1, "wss": 1, "": 1}, 0, func(s []int) bool {
			return s[59] == 3 && s[58] == 3 && s[57] == 4
		}},
		{"two hours later", 2 * time.Hour, 3, map[string]int{"udp": 1, "wss": 1, "": 1}, 0, func(s []int) bool {
			for _, n := range s {
				if n != 3 {
					return false
				}
			}
			return true
		}},
	}
	for _, tc := range tests {
		clk.Add(tc.advance)
		st := h.Stats(realm)
		if st.Online != tc.online || !reflect.DeepEqual(st.Protocols, tc.protocols) || st.ChangesLastMinute != tc.changes {
			t.Errorf("%s: Online=%d Protocols=%v ChangesLastMinute=%d, want %d %v %d",
				tc.name, st.Online, st.Protocols, st.ChangesLastMinute, tc.online, tc.protocols, tc.changes)
		}
		if len(st.Series) != 60 || !tc.series(st.Series) {
			t.Errorf("%s: Series = %v (len %d), want 60 minutes ending with the current count", tc.name, st.Series, len(st.Series))
		}
		if st.Seq != 6 {
			t.Errorf("%s: Seq = %d, want 6", tc.name, st.Seq)
		}
	}
}

func TestRunLifecycle(t *testing.T) {
	t.Run("source error ends Run and is returned", func(t *testing.T) {
		h := newHub(Options{})
		src := newFakeSource()
		src.err = errors.New("redis gone")
		ctxDone := make(chan error, 1)
		go func() { ctxDone <- h.Run(t.Context(), src) }()
		select {
		case err := <-ctxDone:
			if err == nil || err.Error() != "redis gone" {
				t.Errorf("Run = %v, want the source's error", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its source failed")
		}
	})

	t.Run("source returning nil early is an error", func(t *testing.T) {
		h := newHub(Options{})
		src := newFakeSource()
		src.retNil = true
		errc := make(chan error, 1)
		go func() { errc <- h.Run(t.Context(), src) }()
		select {
		case err := <-errc:
			if err == nil {
				t.Error("Run = nil after the source stopped on its own; want an error so the program does not run without data")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its source stopped")
		}
	})

	t.Run("Run waits for the source to stop", func(t *testing.T) {
		h := newHub(Options{})
		src := newFakeSource()
		stop := run(t, h, src)
		src.sink(t)
		if err := stop(); err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
		select {
		case <-src.exited:
		default:
			t.Error("Run returned while the source's Watch was still running")
		}
	})

	t.Run("Run twice", func(t *testing.T) {
		h := newHub(Options{})
		stop := run(t, h, nil)
		settle(h)
		if err := h.Run(t.Context(), nil); err == nil {
			t.Error("second concurrent Run = nil, want an error")
		}
		stop()
		if err := h.Run(t.Context(), nil); err == nil {
			t.Error("Run after the first ended = nil, want an error")
		}
	})

	t.Run("Sink calls after the end return", func(t *testing.T) {
		h := newHub(Options{})
		stop := run(t, h, nil)
		stop()
		done := make(chan struct{})
		go func() {
			h.Update(put(reg("a", "example.com", time.Now())))
			h.Resync(nil)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Update/Resync blocked on a hub that has stopped")
		}
	})
}

// TestFirstLoadIsQuiet checks that the first resync of an empty hub stores
// the registrations without a change each (a cold start is not 100,000
// registrations happening), while realms with subscribers still get theirs
// and later resyncs emit their differences.
func TestFirstLoadIsQuiet(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	h := newHub(Options{Now: clk.Now})
	watched, _ := h.Subscribe(SubscribeRequest{Realm: "watched.com"})
	defer watched.Close()
	src := newFakeSource(reg("a", "quiet.com", now), reg("b", "quiet.com", now), reg("w", "watched.com", now))
	run(t, h, src)
	sink := src.sink(t)

	tests := []struct {
		realm      string
		wantSeq    uint64
		wantRecent []string
	}{
		{"quiet.com", 0, nil},
		{"watched.com", 1, []string{"registered w"}},
	}
	for _, tc := range tests {
		if got := string(h.ListJSON(tc.realm)); got == "[]" {
			t.Errorf("%s: ListJSON = %s after the first load, want its users", tc.realm, got)
		}
		if st := h.Stats(tc.realm); st.Seq != tc.wantSeq || st.Online == 0 {
			t.Errorf("%s: seq %d, online %d; want seq %d and the users online", tc.realm, st.Seq, st.Online, tc.wantSeq)
		}
		var got []string
		for _, c := range h.Recent(tc.realm, 10) {
			got = append(got, c.Event+" "+c.User)
		}
		if !reflect.DeepEqual(got, tc.wantRecent) {
			t.Errorf("%s: recent changes %q, want %q", tc.realm, got, tc.wantRecent)
		}
	}
	// The deadline heap was built in bulk: the registrations still lapse.
	clk.Add(2 * time.Hour)
	settle(h)
	if got := string(h.ListJSON("quiet.com")); got != "[]" {
		t.Errorf("quiet.com after the deadlines: %s, want []", got)
	}
	// A later resync is news again.
	sink.Resync([]Registration{reg("c", "quiet.com", clk.Now())})
	if st := h.Stats("quiet.com"); st.Seq != 3 {
		t.Errorf("quiet.com seq %d after two expiries and a registration, want 3", st.Seq)
	}
}

// TestResyncKeepsArmedDeadline: a resync re-reads every registration and
// measures its deadline again; the same write (same expiryTime) measured a
// few hundred milliseconds apart must not re-arm every entry (a heap push
// per registration per resync), while a deadline that really moved (an
// EXPIRE on the key) is re-armed.
func TestResyncKeepsArmedDeadline(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	var regs []Registration
	for i := range 100 {
		regs = append(regs, reg("u"+strconv.Itoa(i), realm, clk.Now()))
	}
	sink.Resync(regs)
	heapLen := func() (n int) { h.do(func() { n = h.deadlines.Len() }); return n }
	armed := heapLen()
	remeasured := slices.Clone(regs)
	for i := range remeasured {
		remeasured[i].Deadline = remeasured[i].Deadline.Add(time.Duration(i%7-3) * 100 * time.Millisecond)
	}
	sink.Resync(remeasured)
	if got := heapLen(); got != armed {
		t.Errorf("a resync of the same writes, deadlines re-measured within ±300ms: heap %d entries, want still %d", got, armed)
	}
	moved := slices.Clone(regs)
	moved[0].Deadline = clk.Now().Add(10 * time.Second) // EXPIRE user:u0@… 10
	sink.Resync(moved)
	clk.Add(11 * time.Second)
	settle(h)
	if got := h.Stats(realm).Online; got != 99 {
		t.Errorf("after the moved deadline passed: %d online, want 99 (u0 expired at its new deadline)", got)
	}
}
