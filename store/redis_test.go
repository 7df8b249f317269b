package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestRedisResyncParsesWhatSBCsWrite(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	exp, err := store.RegisterAsSBC(ctx, rdb, "alice", "Example.COM", store.SBCRecord{
		Contact: "sip:alice@10.0.0.5:5060;transport=ws", SBCAddress: "203.0.113.1:5060",
		PrivateSBCAddress: "10.0.0.1:5060", Protocol: "wss", Proxy: "sip:198.51.100.7:34567",
		CallHook: "https://hooks.example.com/call", CallStatusHook: "https://hooks.example.com/status",
		AllowDirectApp: true, AllowDirectUser: true,
	}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Values as other SBC versions and webhooks leave them.
	raw := map[string]string{
		// flags as booleans (registration webhook), protocol missing
		"user:bob@example.com": `{"contact":"sip:bob@10.0.0.6","sbcAddress":"203.0.113.1:5060","proxy":"sip:198.51.100.8:5060",` +
			`"allow_direct_app_calling":true,"allow_direct_queue_calling":false,"allow_direct_user_calling":true,"expiryTime":1700000000000}`,
		// flags as 0/1 from the clients table
		"user:carol@example.com": `{"contact":"sip:carol@10.0.0.7","protocol":"tcp","allow_direct_app_calling":0,` +
			`"allow_direct_queue_calling":1,"allow_direct_user_calling":0,"expiryTime":1700000000001}`,
		// the legacy sbc-registrar: no flags, no private address, no expiryTime
		"user:dave@example.com": `{"contact":"sip:dave@10.0.0.8","sbcAddress":"203.0.113.2:5060","protocol":"udp",` +
			`"proxy":"sip:198.51.100.9:5060","callHook":"https://h/c","callStatusHook":"https://h/s"}`,
		// hooks as objects, nulls, flags as strings, user part with '@' and capitals
		"user:Erin@home@example.com": `{"contact":"sip:e@h","protocol":null,"callHook":{"url":"https://h/c","method":"POST"},` +
			`"allow_direct_app_calling":"1","allow_direct_queue_calling":"","allow_direct_user_calling":null,"expiryTime":1.7e12}`,
		// the smallest record that still is one
		"user:frank@example.com": `{}`,
	}
	for k, v := range raw {
		if err := rdb.Set(ctx, k, v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}

	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	got := make(map[string]hub.Registration)
	for _, r := range w.sink.lastResync() {
		if _, dup := got[r.AOR()]; dup {
			t.Errorf("resync holds %s twice", r.AOR())
		}
		got[r.AOR()] = r
	}
	want := map[string]hub.Registration{
		"alice@example.com": {User: "alice", Realm: "example.com", Contact: "sip:alice@10.0.0.5:5060;transport=ws",
			Protocol: "wss", Proxy: "sip:198.51.100.7:34567", SBCAddress: "203.0.113.1:5060", PrivateSBCAddress: "10.0.0.1:5060",
			CallHook: "https://hooks.example.com/call", CallStatusHook: "https://hooks.example.com/status",
			AllowDirectApp: 1, AllowDirectQueue: 0, AllowDirectUser: 1, ExpiryTime: exp},
		"bob@example.com": {User: "bob", Realm: "example.com", Contact: "sip:bob@10.0.0.6", Proxy: "sip:198.51.100.8:5060",
			SBCAddress: "203.0.113.1:5060", AllowDirectApp: 1, AllowDirectUser: 1, ExpiryTime: 1700000000000},
		"carol@example.com": {User: "carol", Realm: "example.com", Contact: "sip:carol@10.0.0.7", Protocol: "tcp",
			AllowDirectQueue: 1, ExpiryTime: 1700000000001},
		"dave@example.com": {User: "dave", Realm: "example.com", Contact: "sip:dave@10.0.0.8", Protocol: "udp",
			Proxy: "sip:198.51.100.9:5060", SBCAddress: "203.0.113.2:5060", CallHook: "https://h/c", CallStatusHook: "https://h/s"},
		"Erin@home@example.com": {User: "Erin@home", Realm: "example.com", Contact: "sip:e@h",
			CallHook: `{"url":"https://h/c","method":"POST"}`, AllowDirectApp: 1, ExpiryTime: 1700000000000},
		"frank@example.com": {User: "frank", Realm: "example.com"},
	}
	for aor, w := range want {
		g, ok := got[aor]
		if !ok {
			t.Errorf("resync lacks %s", aor)
			continue
		}
		if g.Deadline.IsZero() {
			t.Errorf("%s: Deadline is zero, want now + the key's PTTL", aor)
		}
		g.Deadline = time.Time{}
		if g != w {
			t.Errorf("%s parsed as\n %+v\nwant\n %+v", aor, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("resync has %d registrations, want %d: %v", len(got), len(want), w.sink.aors())
	}
	if m := w.src.Metrics(); m.Malformed != 0 || m.Resyncs < 1 || m.Reads < uint64(len(want)) {
		t.Errorf("metrics %+v: want no malformed, at least one resync and %d reads", m, len(want))
	}
}

func TestRedisDeadlineComesFromPTTL(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	// The SBC's clock says an hour; the key lapses in a minute. The key wins:
	// Redis drops it then, whatever the writer's clock said.
	remote := time.Now().Add(time.Hour).UnixMilli()
	val := store.SBCValue(store.SBCRecord{Contact: "sip:a@b"}, remote)
	if err := rdb.Set(ctx, "user:skew@example.com", val, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	after := time.Now()
	reg, ok := w.sink.get("skew@example.com")
	if !ok {
		t.Fatalf("resync lacks skew@example.com; %s", w.describe())
	}
	if reg.Deadline.Before(before.Add(55*time.Second)) || reg.Deadline.After(after.Add(time.Minute)) {
		t.Errorf("Deadline = now%+v, want about now+1m (the key's PTTL), not the record's expiryTime (now+1h)", reg.Deadline.Sub(after).Round(time.Second))
	}
	if reg.ExpiryTime != remote {
		t.Errorf("ExpiryTime = %d, want the record's %d kept as is", reg.ExpiryTime, remote)
	}
}

func TestRedisNotificationsBecomeUpdates(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	if n := len(w.sink.lastResync()); n != 0 {
		t.Fatalf("first resync of an empty Redis has %d registrations", n)
	}

	rec := store.SBCRecord{Contact: "sip:alice@10.0.0.5", Protocol: "udp", Proxy: "sip:1.2.3.4:5060"}
	if _, err := store.RegisterAsSBC(ctx, rdb, "alice", "Example.com", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "after SETEX", "alice@example.com")
	reg, _ := w.sink.get("alice@example.com")
	if reg.Contact != rec.Contact || reg.Protocol != "udp" || reg.Realm != "example.com" || reg.Deadline.Before(time.Now().Add(59*time.Minute)) {
		t.Errorf("update after SETEX carried %+v, want alice's record with a deadline an hour away", reg)
	}

	rec.Contact = "sip:alice@10.0.0.99"
	if _, err := store.RegisterAsSBC(ctx, rdb, "alice", "example.com", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new contact", func() bool {
		r, _ := w.sink.get("alice@example.com")
		return r.Contact == rec.Contact
	}, w.describe)

	if err := store.UnregisterAsSBC(ctx, rdb, "alice", "example.com"); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "after DEL")
	ups := w.sink.updatesFor("alice@example.com")
	if len(ups) < 3 || ups[0].Reg == nil || ups[len(ups)-1].Reg != nil {
		t.Errorf("updates of alice: %d, first with a registration %v, last nil %v; want registration … then nil",
			len(ups), len(ups) > 0 && ups[0].Reg != nil, len(ups) > 0 && ups[len(ups)-1].Reg == nil)
	}
	if m := w.src.Metrics(); m.Notifications < 3 {
		t.Errorf("Notifications = %d, want at least set, expire and del", m.Notifications)
	}
}

// While the sink applies one batch of notified keys, the next is read from
// Redis, and the updates still reach the sink in the order of the writes.
func TestRedisReadsNextBatchWhileSinkApplies(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	sink := newFakeSink()
	sink.gate = make(chan struct{})
	w := watchInto(t, srv, store.RedisOptions{}, sink)
	t.Cleanup(func() { close(sink.gate) }) // before watch's cleanup stops Watch
	w.waitResyncs(t, 1)

	register := func(user, contact string) {
		t.Helper()
		if _, err := store.RegisterAsSBC(ctx, rdb, user, "example.com", store.SBCRecord{Contact: contact}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	register("first", "sip:first@v1")
	waitFor(t, 10*time.Second, "the first update to reach the sink and wait there", func() bool {
		return sink.waiting.Load() == 1
	}, w.describe)
	before := w.src.Metrics().Reads

	const more = 50
	for i := range more {
		register(fmt.Sprintf("u%02d", i), "sip:v1")
	}
	register("first", "sip:first@v2")
	waitFor(t, 10*time.Second, fmt.Sprintf("%d keys read while the sink still applies the first batch", more+1), func() bool {
		return w.src.Metrics().Reads >= before+more+1
	}, func() string {
		return fmt.Sprintf("keys read since the sink blocked: %d; updates waiting in the sink: %d", w.src.Metrics().Reads-before, sink.waiting.Load())
	})
	if n := sink.waiting.Load(); n != 1 {
		t.Fatalf("%d updates wait in the sink, want 1 (the first batch's; the second must wait for it)", n)
	}

	sink.gate <- struct{}{} // the first batch
	sink.gate <- struct{}{} // the second, read meanwhile
	go func() {             // anything after (a late notification)
		for range sink.gate {
		}
	}()
	w.waitState(t, "every key", append([]string{"first@example.com"}, func() []string {
		var out []string
		for i := range more {
			out = append(out, fmt.Sprintf("u%02d@example.com", i))
		}
		return out
	}()...)...)
	ups := sink.updatesFor("first@example.com")
	if got := ups[len(ups)-1].Reg; got == nil || got.Contact != "sip:first@v2" {
		t.Errorf("last update of first@example.com is %+v, want the second write (contact sip:first@v2)", got)
	}
}

func TestRedisLapsedKeyBecomesNilUpdate(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	if _, err := store.RegisterAsSBC(context.Background(), rdb, "brief", "example.com", store.SBCRecord{Contact: "sip:x"}, time.Second); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "after SETEX 1", "brief@example.com")
	// Redis publishes "expired" when it gets round to it: within 10 s here.
	w.waitState(t, "the lapse (expired event)")
	ups := w.sink.updatesFor("brief@example.com")
	if last := ups[len(ups)-1]; last.Reg != nil {
		t.Errorf("last update of brief@example.com is %+v, want nil", last.Reg)
	}
	if rdb.Exists(context.Background(), "user:brief@example.com").Val() != 0 {
		t.Errorf("the key still exists")
	}
}

func TestRedisMalformedValuesAreSkipped(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	type kind int
	const (
		str kind = iota
		hash
		list
		noTTL
	)
	cases := []struct {
		name  string
		key   string
		kind  kind
		value string
	}{
		{"bad JSON", "user:badjson@example.com", str, `{"contact":`},
		{"JSON string", "user:jsonstring@example.com", str, `"sip:a@b"`},
		{"JSON array", "user:jsonarray@example.com", str, `[1,2]`},
		{"JSON null", "user:jsonnull@example.com", str, `null`},
		{"empty value", "user:empty@example.com", str, ``},
		{"contact as number", "user:numcontact@example.com", str, `{"contact":42}`},
		{"protocol as object", "user:objproto@example.com", str, `{"contact":"sip:a","protocol":{"x":1}}`},
		{"expiryTime as text", "user:textexpiry@example.com", str, `{"contact":"sip:a","expiryTime":"soon"}`},
		{"hash", "user:hash@example.com", hash, ""},
		{"list", "user:list@example.com", list, ""},
		{"no TTL", "user:nottl@example.com", noTTL, `{"contact":"sip:a"}`},
		{"key without @", "user:nobody", str, `{"contact":"sip:a"}`},
		{"key without user", "user:@example.com", str, `{"contact":"sip:a"}`},
		{"key without realm", "user:x@", str, `{"contact":"sip:a"}`},
		{"value above 64 KiB", "user:huge@example.com", str, `{"contact":"sip:` + strings.Repeat("a", 8<<20) + `"}`},
	}
	write := func(key string, k kind, value string) {
		t.Helper()
		var err error
		switch k {
		case str:
			err = rdb.Set(ctx, key, value, time.Hour).Err()
		case noTTL:
			err = rdb.Set(ctx, key, value, 0).Err()
		case hash:
			if err = rdb.HSet(ctx, key, "contact", "sip:a").Err(); err == nil {
				err = rdb.Expire(ctx, key, time.Hour).Err()
			}
		case list:
			if err = rdb.RPush(ctx, key, "sip:a").Err(); err == nil {
				err = rdb.Expire(ctx, key, time.Hour).Err()
			}
		}
		if err != nil {
			t.Fatalf("write %s: %v", key, err)
		}
	}
	for _, c := range cases {
		write(c.key, c.kind, c.value)
	}
	if _, err := store.RegisterAsSBC(ctx, rdb, "good", "example.com", store.SBCRecord{Contact: "sip:good"}, time.Hour); err != nil {
		t.Fatal(err)
	}

	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	if got := w.sink.aors(); len(got) != 1 || got[0] != "good@example.com" {
		t.Errorf("resync holds %v, want only good@example.com (malformed keys skipped)", got)
	}
	m := w.src.Metrics()
	if m.Malformed != uint64(len(cases)) || m.MalformedKeys != len(cases) {
		t.Errorf("Malformed = %d, MalformedKeys = %d, want %d of each", m.Malformed, m.MalformedKeys, len(cases))
	}
	for _, c := range cases {
		if n := w.logs.warnings(c.key); n != 1 {
			t.Errorf("%s: %d warnings for %s, want 1", c.name, n, c.key)
		}
	}

	// Through notifications: write every malformed value again (twice), then
	// a good key. Updates are applied in order, so once the good key is in,
	// the malformed writes have been read.
	for range 2 {
		for _, c := range cases {
			if err := rdb.Del(ctx, c.key).Err(); err != nil {
				t.Fatal(err)
			}
			write(c.key, c.kind, c.value)
		}
	}
	if _, err := store.RegisterAsSBC(ctx, rdb, "marker", "example.com", store.SBCRecord{Contact: "sip:m"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "the marker after the malformed writes", "good@example.com", "marker@example.com")
	for _, c := range cases {
		for _, u := range w.sink.updatesFor(strings.TrimPrefix(c.key, "user:")) {
			if u.Reg != nil {
				t.Errorf("%s: got an update with a registration %+v, want none (malformed counts as absent)", c.name, *u.Reg)
			}
		}
		// Each rewrite is DEL (the key is absent: the warning is forgotten)
		// then a malformed write: one more warning per round at most, and
		// never one per notification.
		if n := w.logs.warnings(c.key); n > 3 {
			t.Errorf("%s: %d warnings for %s after 2 rewrites, want at most 3", c.name, n, c.key)
		}
	}
	if got := w.src.Metrics().Malformed; got <= m.Malformed {
		t.Errorf("Malformed stayed at %d after malformed writes were notified", got)
	}
}

func TestRedisMalformedWarnsOncePerKeyUntilValid(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	const key = "user:flip@example.com"
	set := func(v string) {
		t.Helper()
		if err := rdb.Set(ctx, key, v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	marker := 0
	sync := func() { // wait until everything written so far was read
		t.Helper()
		marker++
		user := "marker" + string(rune('a'+marker))
		if _, err := store.RegisterAsSBC(ctx, rdb, user, "example.com", store.SBCRecord{}, time.Hour); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, user, func() bool { _, ok := w.sink.get(user + "@example.com"); return ok }, w.describe)
	}

	set(`{"contact":"sip:ok"}`)
	sync()
	if _, ok := w.sink.get("flip@example.com"); !ok {
		t.Fatalf("valid value not applied; %s", w.describe())
	}
	for range 3 {
		set(`{"contact":`)
		sync()
	}
	if _, ok := w.sink.get("flip@example.com"); ok {
		t.Errorf("a registration that became malformed is still in the sink, want it removed (nil update)")
	}
	if n := w.logs.warnings(key); n != 1 {
		t.Errorf("%d warnings after 3 malformed writes, want 1", n)
	}
	if m := w.src.Metrics(); m.Malformed < 3 || m.MalformedKeys != 1 {
		t.Errorf("Malformed = %d, MalformedKeys = %d; want ≥ 3 reads counted and 1 key", m.Malformed, m.MalformedKeys)
	}
	set(`{"contact":"sip:ok again"}`)
	sync()
	if r, _ := w.sink.get("flip@example.com"); r.Contact != "sip:ok again" {
		t.Errorf("valid again, but the sink has %+v", r)
	}
	if m := w.src.Metrics(); m.MalformedKeys != 0 {
		t.Errorf("MalformedKeys = %d once the key is valid, want 0", m.MalformedKeys)
	}
	set(`{"contact":1}`)
	sync()
	if n := w.logs.warnings(key); n != 2 {
		t.Errorf("%d warnings after valid → malformed again, want 2 (a new warning once it was valid)", n)
	}
}

func TestRedisCheckNotificationConfig(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t, storetest.WithoutNotifications())
	rdb := srv.Client(t)
	ctx := context.Background()
	tests := []struct {
		current   string
		configure bool
		wantErr   string // "" for none; else a part of the error
		wantFlags string // letters CONFIG GET must show afterwards
	}{
		{current: "", wantErr: `redis-cli CONFIG SET notify-keyspace-events 'Kg$x'`},
		{current: "Ex", wantErr: `redis-cli CONFIG SET notify-keyspace-events 'KEg$x'`},
		{current: "Kg$", wantErr: `redis-cli CONFIG SET notify-keyspace-events 'Kg$x'`},
		{current: "KA", wantFlags: "KA"},
		{current: "Kg$x", wantFlags: "Kg$x"},
		{current: "KEA", wantFlags: "KEA"},
		{current: "", configure: true, wantFlags: "Kg$x"},
		{current: "Ex", configure: true, wantFlags: "KEg$x"},
		{current: "Kl", configure: true, wantFlags: "Klg$x"},
	}
	for _, tc := range tests {
		if err := rdb.ConfigSet(ctx, "notify-keyspace-events", tc.current).Err(); err != nil {
			t.Fatal(err)
		}
		src, err := store.NewRedisSource(store.RedisOptions{URL: srv.URL, ConfigureNotifications: tc.configure})
		if err != nil {
			t.Fatal(err)
		}
		err = src.Check(ctx)
		_ = src.Close()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("flags %q, configure %v: Check = %v, want nil", tc.current, tc.configure, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, store.ErrNotifications)):
			t.Errorf("flags %q, configure %v: Check = %v\nwant an error wrapping ErrNotifications that contains %s", tc.current, tc.configure, err, tc.wantErr)
		}
		if tc.wantErr != "" {
			continue
		}
		got := rdb.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
		if !sameLetters(got, tc.wantFlags) {
			t.Errorf("flags %q, configure %v: afterwards notify-keyspace-events is %q, want the letters of %q", tc.current, tc.configure, got, tc.wantFlags)
		}
	}
}

func sameLetters(a, b string) bool {
	has := func(s string, c rune) bool { return strings.ContainsRune(s, c) }
	for _, c := range a + b {
		if has(a, c) != has(b, c) {
			return false
		}
	}
	return true
}

// TestRedisWatchWaitsForNotifications: Redis without keyspace notifications
// does not end the watch (it used to return, and serve exited): Health says
// what is wrong, and once someone turns them on the watch syncs.
func TestRedisWatchWaitsForNotifications(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t, storetest.WithoutNotifications())
	src, err := store.NewRedisSource(store.RedisOptions{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink := newFakeSink()
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, sink) }()
	deadline := time.Now().Add(15 * time.Second)
	for src.Health().Problem != "redis keyspace notifications are off" {
		select {
		case err := <-done:
			t.Fatalf("Watch returned %v; want it to keep retrying", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health = %+v, want the notifications problem", src.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := src.Health(); h.Connected || !h.LastSync.IsZero() || strings.Contains(h.Problem, "127.0.0.1") {
		t.Errorf("Health = %+v: want not connected, never synced, no address in the problem", h)
	}
	if n := sink.resyncCount(); n != 0 {
		t.Errorf("sink got %d resyncs from a Redis that publishes no notifications, want 0", n)
	}
	if err := srv.Client(t).ConfigSet(ctx, "notify-keyspace-events", "Kg$x").Err(); err != nil {
		t.Fatal(err)
	}
	for !src.Health().Connected {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("not connected after the notifications were turned on: %+v", src.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := src.Health(); h.LastSync.IsZero() || h.Problem != "" || sink.resyncCount() == 0 {
		t.Errorf("after the fix: Health = %+v, %d resyncs", h, sink.resyncCount())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch = %v after cancel, want nil", err)
	}
}

func TestRedisCheckWithoutCONFIGCommand(t *testing.T) {
	t.Parallel()
	managed := storetest.WithArgs("--rename-command", "CONFIG", "")
	t.Run("notifications set in the server config", func(t *testing.T) {
		t.Parallel()
		srv := storetest.StartRedis(t, managed)
		src, err := store.NewRedisSource(store.RedisOptions{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if err := src.Check(context.Background()); err != nil {
			t.Errorf("Check = %v, want nil: the probe key's events show notifications work", err)
		}
		if keys := srv.Client(t).Keys(context.Background(), "*").Val(); len(keys) != 0 {
			t.Errorf("the probe left keys behind: %v", keys)
		}
	})
	t.Run("notifications missing", func(t *testing.T) {
		t.Parallel()
		srv := storetest.StartRedis(t, managed, storetest.WithoutNotifications())
		src, err := store.NewRedisSource(store.RedisOptions{URL: srv.URL, ConfigureNotifications: true})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		err = src.Check(context.Background())
		if !errors.Is(err, store.ErrNotifications) || !strings.Contains(err.Error(), "server configuration") {
			t.Errorf("Check = %v, want an ErrNotifications error saying to set it in the server configuration", err)
		}
	})
}

func TestRedisRestartResyncs(t *testing.T) {
	t.Parallel()
	// A stock Redis (no notifications) that presencehub configures: after a
	// restart the setting is gone and must be made again.
	srv := storetest.StartRedis(t, storetest.WithoutNotifications())
	rdb := srv.Client(t)
	ctx := context.Background()
	for _, u := range []string{"old1", "old2"} {
		if _, err := store.RegisterAsSBC(ctx, rdb, u, "example.com", store.SBCRecord{Contact: "sip:" + u}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, srv, store.RedisOptions{ConfigureNotifications: true})
	w.waitResyncs(t, 1)
	w.waitState(t, "first load", "old1@example.com", "old2@example.com")

	srv.Stop()
	srv.Start() // empty: --save ""
	for _, u := range []string{"new1", "new2"} {
		if _, err := store.RegisterAsSBC(ctx, rdb, u, "example.com", store.SBCRecord{Contact: "sip:" + u}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	w.waitResyncs(t, 2)
	// Lost keys publish nothing: only the resync can remove old1 and old2.
	w.waitState(t, "after the restart", "new1@example.com", "new2@example.com")
	if m := w.src.Metrics(); m.Reconnects < 1 {
		t.Errorf("Reconnects = %d after a restart, want ≥ 1", m.Reconnects)
	}
	// Notifications work again (re-configured after the restart).
	if _, err := store.RegisterAsSBC(ctx, rdb, "new3", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "a registration after the restart", "new1@example.com", "new2@example.com", "new3@example.com")
}

func TestRedisKilledPubSubResubscribesAndResyncs(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)

	n, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 connection killed", n, err)
	}
	// Written while the source may be unsubscribed: only the resync sees it.
	if _, err := store.RegisterAsSBC(ctx, rdb, "meanwhile", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitResyncs(t, 2)
	w.waitState(t, "after the resubscription", "meanwhile@example.com")
	if _, err := store.RegisterAsSBC(ctx, rdb, "after", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "a notification on the new subscription", "after@example.com", "meanwhile@example.com")
	if m := w.src.Metrics(); m.Reconnects < 1 {
		t.Errorf("Reconnects = %d, want ≥ 1", m.Reconnects)
	}
}

func TestRedisReconcileRepairsWhatNoNotificationTells(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	if _, err := store.RegisterAsSBC(ctx, rdb, "a", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w := watch(t, srv, store.RedisOptions{ReconcileEvery: 200 * time.Millisecond})
	w.waitState(t, "first load", "a@example.com")
	// FLUSHDB publishes no keyspace event per key.
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "a reconcile after FLUSHDB")
	if m := w.src.Metrics(); m.Resyncs < 2 || m.LastResyncDuration <= 0 {
		t.Errorf("metrics %+v: want ≥ 2 resyncs with a duration", m)
	}
}

func TestRedisWatchesOnlyItsDatabase(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	ctx := context.Background()
	db0 := srv.Client(t)
	db3 := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 3})
	t.Cleanup(func() { _ = db3.Close() })
	for _, c := range []struct {
		rdb  *redis.Client
		user string
	}{{db0, "zero-before"}, {db3, "three-before"}} {
		if _, err := store.RegisterAsSBC(ctx, c.rdb, c.user, "example.com", store.SBCRecord{}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	w := watch(t, srv, store.RedisOptions{URL: "redis://" + srv.Addr + "/3"})
	w.waitResyncs(t, 1)
	if got := w.sink.aors(); len(got) != 1 || got[0] != "three-before@example.com" {
		t.Errorf("resync of DB 3 holds %v, want only three-before@example.com", got)
	}
	if _, err := store.RegisterAsSBC(ctx, db0, "zero-after", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RegisterAsSBC(ctx, db3, "three-after", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, "DB 3's registrations only", "three-before@example.com", "three-after@example.com")
	if ups := w.sink.updatesFor("zero-after@example.com"); len(ups) != 0 {
		t.Errorf("got %d updates for a key of DB 0", len(ups))
	}
}

func TestRedisNewSourceRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "http://localhost:6379", "redis://localhost:6379/notadb", "redis://:s3cret@[::1"} {
		_, err := store.NewRedisSource(store.RedisOptions{URL: u})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("NewRedisSource(%q) = %v, want an error wrapping ErrInvalid", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("NewRedisSource(%q) error %q shows the password", u, err)
		}
	}
}
