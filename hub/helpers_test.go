package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeSource is the Source the tests drive: Watch resyncs with initial, hands
// the sink to the test and then runs until ctx is done (or returns err at once).
type fakeSource struct {
	initial []Registration
	err     error // returned right after the first resync when set
	retNil  bool  // return nil right after the first resync

	sinks  chan Sink
	exited chan struct{}
}

func newFakeSource(initial ...Registration) *fakeSource {
	return &fakeSource{initial: initial, sinks: make(chan Sink, 1), exited: make(chan struct{})}
}

func (f *fakeSource) Watch(ctx context.Context, sink Sink) error {
	defer close(f.exited)
	sink.Resync(f.initial)
	f.sinks <- sink
	switch {
	case f.err != nil:
		return f.err
	case f.retNil:
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// sink waits for Watch to have run its first resync and returns the sink.
func (f *fakeSource) sink(t *testing.T) Sink {
	t.Helper()
	select {
	case s := <-f.sinks:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("fake source: Watch did not resync within 5s")
		return nil
	}
}

// clock is a controllable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newHub returns a hub that logs nothing.
func newHub(opts Options) *Hub {
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	return New(opts)
}

// run starts h.Run(src) and stops it when the test ends, failing the test if
// Run does not return promptly. stop ends it earlier and returns Run's error.
func run(t *testing.T, h *Hub, src Source) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, src) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of its context being cancelled")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// startHub is newHub + run with a fake source; it returns once the source's
// first resync is applied.
func startHub(t *testing.T, opts Options, initial ...Registration) (*Hub, Sink) {
	t.Helper()
	h := newHub(opts)
	src := newFakeSource(initial...)
	run(t, h, src)
	return h, src.sink(t)
}

// settle runs the owner's expiry check against Options.Now and returns once
// it is done. (The Run loop also expires after every op, but only after do
// has already returned to its caller.)
func settle(h *Hub) { h.do(h.expire) }

// reg returns an active registration of user@realm with all optional fields
// set; the deadline is an hour after now.
func reg(user, realm string, now time.Time) Registration {
	return Registration{
		User: user, Realm: realm,
		Contact:    "sip:" + user + "@192.0.2.10:5060;transport=udp",
		Protocol:   "udp",
		Proxy:      "sip:198.51.100.7:5060",
		SBCAddress: "10.0.0.1", PrivateSBCAddress: "10.0.0.2",
		CallHook: "https://hooks.example/call", CallStatusHook: "https://hooks.example/status",
		ExpiryTime: now.Add(time.Hour).UnixMilli(),
		Deadline:   now.Add(time.Hour),
	}
}

// put is an Update that stores r.
func put(r Registration) Update { return Update{AOR: r.AOR(), Reg: &r} }

// del is an Update that says aor is gone.
func del(aor string) Update { return Update{AOR: aor} }

// drain returns what s has queued, failing on resync or closed.
func drain(t *testing.T, s *Subscription) []Item {
	t.Helper()
	items, resync, closed := s.Next(nil)
	if resync || closed {
		t.Fatalf("Next: resync=%v closed=%v, want both false", resync, closed)
	}
	return items
}

func events(items []Item) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Change.Event+" "+it.Change.User)
	}
	return out
}

// decodeObject decodes one JSON object, failing the test when it is not one.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON object %q: %v", b, err)
	}
	return m
}

func decodeArray(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var a []map[string]any
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("invalid JSON array %q: %v", b, err)
	}
	return a
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// normal is a user object re-encoded without event_time, for comparing the
// stream's 10-field shape with the REST 9-field one.
func normal(t *testing.T, b []byte) string {
	t.Helper()
	m := decodeObject(t, b)
	delete(m, "event_time")
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// restState is AppendAll of realm as name -> normalized object.
func restState(t *testing.T, h *Hub, realm string) map[string]string {
	t.Helper()
	var raw []json.RawMessage
	if err := json.Unmarshal(h.AppendAll(nil, realm), &raw); err != nil {
		t.Fatalf("AppendAll: %v", err)
	}
	out := make(map[string]string, len(raw))
	for _, u := range raw {
		out[decodeObject(t, u)["name"].(string)] = normal(t, u)
	}
	return out
}

// snapshotState is a whole-realm snapshot as name -> normalized object.
func snapshotState(t *testing.T, snap Snapshot) map[string]string {
	t.Helper()
	out := make(map[string]string, len(snap.Users))
	for _, u := range snap.Users {
		out[decodeObject(t, u)["name"].(string)] = normal(t, u)
	}
	return out
}

// apply applies one change to a name -> normalized-object state.
func apply(t *testing.T, state map[string]string, c *Change) {
	t.Helper()
	frame := decodeObject(t, append([]byte(`{"type":"change",`), c.Body...))
	user, err := json.Marshal(frame["user"])
	if err != nil {
		t.Fatal(err)
	}
	switch c.Event {
	case EventRegistered, EventRefreshed, EventUpdated:
		state[c.User] = normal(t, user)
	case EventUnregistered, EventExpired:
		delete(state, c.User)
	default:
		t.Fatalf("unknown event %q", c.Event)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
