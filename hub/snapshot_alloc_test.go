package hub

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// TestWatchlistSnapshotAllocs: a watchlist's snapshot is encoded into one
// buffer, not one (or two) per watched name: issue #9's hostile key makes
// the server build the snapshot of 8,000 made-up names. Its users are the
// same bytes as each user encoded on its own, and each is capped, so an
// append to one cannot overwrite the next.
func TestWatchlistSnapshotAllocs(t *testing.T) {
	clk := newClock()
	const realm = "example.com"
	h, sink := startHub(t, Options{Now: clk.Now})
	sink.Update(put(reg("alice", realm, clk.Now())))
	sink.Update(put(reg("bob", realm, clk.Now())))
	names := []string{"alice"}
	for i := range 7998 {
		names = append(names, "x"+strconv.Itoa(i))
	}
	names = append(names, "bob")
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm, Users: names, Deferred: true})
	defer s.Close()
	allocs := testing.AllocsPerRun(5, func() { s.Resnapshot() })
	if allocs > 10 {
		t.Errorf("snapshot of %d watched names: got %.0f allocations, want at most 10", len(names), allocs)
	}
	snap := s.Resnapshot()
	if len(snap.Users) != len(names) {
		t.Fatalf("snapshot has %d users, want %d", len(snap.Users), len(names))
	}
	s.realm.mu.RLock()
	for i, n := range names {
		var want []byte
		if e := s.realm.users[n]; e != nil {
			want = wire.AppendStreamUser(nil, e.json, e.eventTime)
		} else {
			want = wire.AppendStreamUser(nil, wire.AppendInactive(nil, n, s.realm.clients[Fold(n)]), zeroTime)
		}
		if got := snap.Users[i]; !bytes.Equal(got, want) || cap(got) != len(got) {
			t.Fatalf("user %d: got %s (cap %d), want %s (capped)", i, got, cap(got), want)
		}
	}
	s.realm.mu.RUnlock()
}

// BenchmarkWatchlistSnapshot8000 builds the snapshot of a watchlist of
// 8,000 names, 2 of them registered (issue #9's hostile subscribe).
func BenchmarkWatchlistSnapshot8000(b *testing.B) {
	h := newHub(Options{})
	const realm = "bench.example"
	src := newFakeSource(reg("alice", realm, time.Now()), reg("bob", realm, time.Now()))
	stop := runBench(b, h, src)
	defer stop()
	<-src.sinks
	names := []string{"alice", "bob"}
	for i := range 7998 {
		names = append(names, "x"+strconv.Itoa(i))
	}
	s, _ := h.Subscribe(SubscribeRequest{Realm: realm, Users: names, Deferred: true})
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s.Resnapshot()
	}
}
