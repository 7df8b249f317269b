package api_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/presencehub/presencehub/api"
)

// TestStreamSubscribeLeavesReaderStackSmall: an idle connection's reader
// goroutine, parked in a read for the connection's life, keeps the stack it
// had before its first subscribe. The subscribe's work (parse, checks, hub
// subscription) needs more stack than a parked read; done on the reader, it
// doubled the stack every idle connection keeps (4 -> 8 KiB), which the
// runtime does not shrink back. Not parallel: it reads the process's stack
// memory before and after subscribing the connections. Skipped under the
// race detector, whose larger frames give a parked reader a stack big
// enough for a subscribe too (measured under -race: +163 B per connection
// with the subscribe handled on the reader, +327 B off it). Without -race
// it fails with the subscribe handled on the reader (+4,423 B per
// connection; 0 B off it).
func TestStreamSubscribeLeavesReaderStackSmall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's frames hide the difference; run without -race")
	}
	f := newFixtureWith(t, api.StreamOptions{PingInterval: time.Hour})
	const n = 200
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = f.dialStream(t, bearerHeader(f.keys[asAdmin]))
	}
	stack := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	before := stack()
	for _, c := range clients {
		if m := c.subscribe("s", f.a1.SID, ""); m["type"] == "error" {
			t.Fatalf("subscribe: got %v, want its snapshot", m)
		}
	}
	after := stack()
	grown := (int64(after) - int64(before)) / n
	t.Logf("stack memory %d -> %d bytes for %d connections: %d per connection", before, after, n, grown)
	if grown >= 2048 {
		t.Errorf("stack memory grew by %d bytes per connection after one subscribe each (%d -> %d for %d connections), want < 2048", grown, before, after, n)
	}
}
