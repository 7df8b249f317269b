package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/api/client"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// TestRESTFollowsRedis: records written as the SBC writes them show in every
// endpoint; un-register and lapse are reflected, the lapse within 1 s of its
// deadline although Redis (active expiry off) never reports it.
func TestRESTFollowsRedis(t *testing.T) {
	in := startInstance(t, storetest.WithArgs("--enable-debug-command", "local"))
	if err := in.rdb.Do(context.Background(), "DEBUG", "SET-ACTIVE-EXPIRE", "0").Err(); err != nil {
		t.Fatalf("disable Redis active expiry: %v", err)
	}
	sid, key := in.account("rest.example.com")
	base := "/v1/Accounts/" + sid + "/RegisteredSipUsers"

	in.register("alice", "rest.example.com", "wss", time.Hour)
	in.register("bob", "Rest.Example.com", "udp", time.Hour) // realm case does not matter
	in.register("mallory", "xrest.example.com", "udp", time.Hour)
	in.eventually("alice and bob listed", 2*time.Second, func() bool {
		var list []string
		in.call(key, "GET", base, nil, 200, &list)
		return reflect.DeepEqual(list, []string{"alice@rest.example.com", "bob@rest.example.com"})
	})

	var got []map[string]any
	body := in.call(key, "POST", base, []string{"alice", "nobody"}, 200, &got)
	if got[0]["registered_status"] != "active" || got[0]["protocol"] != "wss" || got[0]["proxy"] != "sip:203.0.113.9:40005" ||
		got[0]["allow_direct_app_calling"] != 1.0 || got[0]["allow_direct_queue_calling"] != 0.0 {
		t.Errorf("alice = %v, want active wss with the SBC's proxy and granted flags 1/0/1", got[0])
	}
	if got[1]["registered_status"] != "inactive" {
		t.Errorf("nobody = %v, want inactive", got[1])
	}
	if strings.Contains(string(body), "198.51.100.1") || strings.Contains(string(body), "hooks.example.com") {
		t.Errorf("answer leaks SBC address or hooks: %s", body)
	}

	in.unregister("bob", "Rest.Example.com")
	in.eventually("bob unregistered", 2*time.Second, func() bool {
		var one map[string]any
		in.call(key, "GET", base+"/bob", nil, 200, &one)
		return one["registered_status"] == "inactive"
	})

	exp := in.register("carol", "rest.example.com", "tcp", 2*time.Second)
	deadline := time.UnixMilli(exp)
	in.eventually("carol registered", 2*time.Second, func() bool {
		var one map[string]any
		in.call(key, "GET", base+"/carol", nil, 200, &one)
		return one["registered_status"] == "active"
	})
	in.eventually("carol lapsed within 1s of her deadline", time.Until(deadline)+time.Second, func() bool {
		var one map[string]any
		in.call(key, "GET", base+"/carol", nil, 200, &one)
		return one["registered_status"] == "inactive"
	})
	// A SIP client created through the API gives its flags to its user while
	// the user is not registered (the hub learns of it via LISTEN/NOTIFY).
	in.call(key, "POST", "/v1/Clients", map[string]any{"username": "Zed", "password": "pw",
		"allow_direct_app_calling": 0, "allow_direct_queue_calling": 1, "allow_direct_user_calling": 0}, 201, nil)
	in.eventually("client flags reach the hub", 3*time.Second, func() bool {
		var one map[string]any
		in.call(key, "GET", base+"/zed", nil, 200, &one)
		return one["registered_status"] == "inactive" && one["allow_direct_app_calling"] == 0.0 &&
			one["allow_direct_queue_calling"] == 1.0 && one["allow_direct_user_calling"] == 0.0
	})

	// Redis has not noticed the lapse: with active expiry off carol's key
	// still sits in memory (DBSIZE counts it without touching it), so the
	// hub's answer came from its own clock, not from Redis.
	// Keys: alice, mallory, carol and the active-user set.
	if n := in.rdb.DBSize(context.Background()).Val(); n != 4 {
		t.Errorf("redis holds %d keys, want 4 (alice, mallory, lapsed carol, active-user): the lapse was not the hub's own", n)
	}
}

// frames reads JSON frames from a raw websocket.
type frameReader struct {
	t *testing.T
	c *websocket.Conn
}

func dial(t *testing.T, url, key string) *frameReader {
	t.Helper()
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	c.SetReadLimit(16 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &frameReader{t, c}
}

func (f *frameReader) send(v any) {
	f.t.Helper()
	b, _ := json.Marshal(v)
	if err := f.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		f.t.Fatalf("write: %v", err)
	}
}

func (f *frameReader) next(timeout time.Duration) client.Frame {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, b, err := f.c.Read(ctx)
	if err != nil {
		f.t.Fatalf("no frame within %v: %v", timeout, err)
	}
	var fr client.Frame
	if err := json.Unmarshal(b, &fr); err != nil {
		f.t.Fatalf("frame %s: %v", b, err)
	}
	fr.Raw = b
	return fr
}

// expect reads the next frame and checks its type (and event for changes).
func (f *frameReader) expect(typ, event, user string, timeout time.Duration) client.Frame {
	f.t.Helper()
	fr := f.next(timeout)
	if fr.Type != typ || (event != "" && fr.Event != event) || (user != "" && (fr.User == nil || fr.User.Name != user)) {
		f.t.Fatalf("got frame %s, want %s %s %s", fr.Raw, typ, event, user)
	}
	return fr
}

// TestStreamEvents: snapshot, then registered / unregistered / expired as the
// SBC writes, each within 1 s (the lapse within 1 s of its deadline).
func TestStreamEvents(t *testing.T) {
	in := startInstance(t, storetest.WithArgs("--enable-debug-command", "local"))
	in.rdb.Do(context.Background(), "DEBUG", "SET-ACTIVE-EXPIRE", "0")
	sid, key := in.account("stream.example.com")
	in.register("alice", "stream.example.com", "udp", time.Hour)
	in.eventually("alice in the hub", 2*time.Second, func() bool {
		var l []string
		in.call(key, "GET", "/v1/Accounts/"+sid+"/RegisteredSipUsers", nil, 200, &l)
		return len(l) == 1
	})

	ws := dial(t, in.wsURL(), key)
	ws.send(map[string]any{"type": "subscribe", "id": "s1", "account_sid": sid})
	snap := ws.expect("snapshot", "", "", 2*time.Second)
	if len(snap.Users) != 1 || snap.Users[0].Name != "alice" || snap.Users[0].EventTime == nil || snap.Epoch == "" {
		t.Fatalf("snapshot %s: want alice with event_time and an epoch", snap.Raw)
	}
	in.register("bob", "stream.example.com", "wss", time.Hour)
	c1 := ws.expect("change", "registered", "bob", time.Second)
	if c1.Seq != snap.Seq+1 || c1.AccountSID != sid || c1.ID != "s1" {
		t.Errorf("change %s: want seq %d, account %s, id s1", c1.Raw, snap.Seq+1, sid)
	}
	in.register("bob", "stream.example.com", "wss", 2*time.Hour)
	ws.expect("change", "refreshed", "bob", time.Second)
	in.unregister("bob", "stream.example.com")
	ws.expect("change", "unregistered", "bob", time.Second)
	exp := in.register("carol", "stream.example.com", "tcp", 1*time.Second)
	ws.expect("change", "registered", "carol", time.Second)
	ex := ws.expect("change", "expired", "carol", time.Until(time.UnixMilli(exp))+time.Second)
	if late := time.Since(time.UnixMilli(exp)); late > time.Second {
		t.Errorf("expired arrived %v after the deadline, want within 1s", late)
	}
	if ex.User.RegisteredStatus != "inactive" || ex.User.Contact != nil {
		t.Errorf("expired user %s: want inactive with null contact", ex.Raw)
	}
}

// TestStreamResume: missed changes exactly once after a reconnect with since;
// a snapshot marked resumed:false for an unknown epoch.
func TestStreamResume(t *testing.T) {
	in := startInstance(t)
	sid, key := in.account("resume.example.com")
	ws := dial(t, in.wsURL(), key)
	ws.send(map[string]any{"type": "subscribe", "id": "r", "account_sid": sid})
	snap := ws.expect("snapshot", "", "", 2*time.Second)
	in.register("a", "resume.example.com", "udp", time.Hour)
	last := ws.expect("change", "registered", "a", time.Second)
	ws.c.Close(websocket.StatusNormalClosure, "")

	in.register("b", "resume.example.com", "udp", time.Hour)
	in.register("c", "resume.example.com", "udp", time.Hour)
	in.unregister("a", "resume.example.com")
	in.eventually("changes applied", 2*time.Second, func() bool {
		var l []string
		in.call(key, "GET", "/v1/Accounts/"+sid+"/RegisteredSipUsers", nil, 200, &l)
		return reflect.DeepEqual(l, []string{"b@resume.example.com", "c@resume.example.com"})
	})

	ws2 := dial(t, in.wsURL(), key)
	ws2.send(map[string]any{"type": "subscribe", "id": "r", "account_sid": sid, "since": map[string]any{"epoch": snap.Epoch, "seq": last.Seq}})
	res := ws2.expect("resumed", "", "", 2*time.Second)
	if res.Seq != last.Seq {
		t.Errorf("resumed at seq %d, want %d", res.Seq, last.Seq)
	}
	var got []string
	for i := 0; i < 3; i++ {
		c := ws2.expect("change", "", "", time.Second)
		if c.Seq != last.Seq+uint64(i)+1 {
			t.Fatalf("missed change %d has seq %d, want %d", i, c.Seq, last.Seq+uint64(i)+1)
		}
		got = append(got, c.Event+" "+c.User.Name)
	}
	if want := []string{"registered b", "registered c", "unregistered a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("missed changes %q, want %q", got, want)
	}
	in.register("d", "resume.example.com", "udp", time.Hour)
	if c := ws2.expect("change", "registered", "d", time.Second); c.Seq != last.Seq+4 {
		t.Errorf("live change after resume has seq %d, want %d (no duplicates, no gap)", c.Seq, last.Seq+4)
	}

	ws2.send(map[string]any{"type": "subscribe", "id": "old", "account_sid": sid, "since": map[string]any{"epoch": "not-this-hub", "seq": 1}})
	s := ws2.expect("snapshot", "", "", 2*time.Second)
	if s.Resumed == nil || *s.Resumed || len(s.Users) != 3 {
		t.Errorf("subscribe with an old epoch: %s, want a snapshot of b, c, d with resumed:false", s.Raw)
	}
}

// TestStreamAuthorization: cross-tenant subscribes are refused with an error
// frame, bad frames get error frames, and the connection stays up.
func TestStreamAuthorization(t *testing.T) {
	in := startInstance(t)
	sidA, keyA := in.account("a.example.com")
	sidB, _ := in.account("b.example.com")

	ws := dial(t, in.wsURL(), keyA)
	for _, tt := range []struct {
		frame any
		code  string
	}{
		{map[string]any{"type": "subscribe", "id": "x", "account_sid": sidB}, "forbidden"},
		{map[string]any{"type": "subscribe", "id": "x", "account_sid": "not-a-sid"}, "bad_request"},
		{map[string]any{"type": "subscribe", "id": "x", "account_sid": "00000000-0000-4000-8000-000000000000"}, "not_found"},
		{map[string]any{"type": "subscribe", "account_sid": sidA}, "bad_request"},
		{map[string]any{"type": "dance", "id": "x"}, "bad_request"},
		{map[string]any{"type": "unsubscribe", "id": "never"}, "not_found"},
		{"just a string", "bad_request"},
		{map[string]any{"type": "subscribe", "id": "x", "account_sid": sidA, "users": "alice"}, "bad_request"},
	} {
		ws.send(tt.frame)
		fr := ws.expect("error", "", "", 2*time.Second)
		if fr.Code != tt.code {
			t.Errorf("frame %v: error code %q (%s), want %q", tt.frame, fr.Code, fr.Msg, tt.code)
		}
	}
	ws.send(map[string]any{"type": "subscribe", "id": "ok", "account_sid": sidA})
	ws.expect("snapshot", "", "", 2*time.Second)

	for _, tt := range []struct {
		name, key, query string
		want             int
	}{
		{"no credentials", "", "", 401},
		{"bad key", "ph_nope", "", 401},
		{"key in the URL", "", "?access_token=" + keyA, 400},
		{"unknown ticket", "", "?ticket=nope", 401},
	} {
		req, _ := http.NewRequest("GET", in.url+"/v1/stream"+tt.query, nil)
		if tt.key != "" {
			req.Header.Set("Authorization", "Bearer "+tt.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: upgrade answered %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}

	// A ticket works once.
	var tk struct{ Ticket string }
	in.call(keyA, "POST", "/v1/StreamTickets", nil, 201, &tk)
	ws2 := dial(t, in.wsURL()+"?ticket="+tk.Ticket, "")
	ws2.send(map[string]any{"type": "subscribe", "id": "t", "account_sid": sidA})
	ws2.expect("snapshot", "", "", 2*time.Second)
	resp, err := http.Get(in.url + "/v1/stream?ticket=" + tk.Ticket)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("reused ticket answered %d, want 401", resp.StatusCode)
		}
	}
}

// TestStreamSurvivesRedisRestart: Redis dies and comes back empty, then
// registrations change; afterwards the client's map equals Redis.
func TestStreamSurvivesRedisRestart(t *testing.T) {
	in := startInstance(t)
	sid, key := in.account("restart.example.com")
	for _, u := range []string{"a", "b", "c"} {
		in.register(u, "restart.example.com", "udp", time.Hour)
	}
	c := client.New(client.Options{URL: in.wsURL(), Token: key})
	sub := c.Subscribe("s", sid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	<-sub.Synced()
	converged := func() bool {
		got := map[string]bool{}
		for u := range sub.State() {
			got[u] = true
		}
		return reflect.DeepEqual(got, in.redisUsers("restart.example.com"))
	}
	in.eventually("client has a, b, c", 3*time.Second, converged)

	in.redis.Stop()
	time.Sleep(300 * time.Millisecond)
	in.redis.Start() // empty: --save ""
	in.register("d", "restart.example.com", "tcp", time.Hour)
	in.register("e", "restart.example.com", "tcp", time.Hour)
	in.eventually("client equals Redis (d, e) after the restart", 15*time.Second, converged)
	if s := sub.State(); len(s) != 2 {
		t.Errorf("client state after restart %v, want d and e", s)
	}
	// The pub/sub connection killed alone: same outcome.
	in.rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub")
	in.register("f", "restart.example.com", "tcp", time.Hour)
	in.eventually("client equals Redis after the pub/sub connection was killed", 15*time.Second, converged)
}

// TestSlowSubscriber: a subscriber that stops reading does not delay another;
// the server keeps its queue bounded, and when it reads again it converges.
func TestSlowSubscriber(t *testing.T) {
	// A small queue and large records, so that the slow subscriber's socket
	// buffers fill and its queue overflows within a few thousand changes.
	// The slow subscriber reads nothing, not even a pong, for as long as the
	// fast one takes to converge: on a loaded machine that can pass the
	// default ping interval and write timeout, which would close it as dead.
	// Dead-peer detection is not what this test is about.
	in := startInstanceEnv(t, map[string]string{
		"PRESENCEHUB_QUEUE_LEN":            "64",
		"PRESENCEHUB_STREAM_PING_INTERVAL": "10m",
		"PRESENCEHUB_STREAM_WRITE_TIMEOUT": "10m",
	})
	sid, key := in.account("slow.example.com")
	const users, rounds = 300, 20

	var (
		mu       sync.Mutex
		received int
	)
	fast := client.New(client.Options{URL: in.wsURL(), Token: key, OnFrame: func(f *client.Frame, _ time.Time) {
		if f.Type == "change" {
			mu.Lock()
			received++
			mu.Unlock()
		}
	}})
	fastSub := fast.Subscribe("fast", sid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fast.Run(ctx)
	<-fastSub.Synced()

	slow := dial(t, in.wsURL(), key)
	slow.send(map[string]any{"type": "subscribe", "id": "slow", "account_sid": sid})
	slow.expect("snapshot", "", "", 2*time.Second)
	// slow stops reading now.

	pipe := in.rdb.Pipeline()
	for r := 0; r < rounds; r++ {
		for u := 0; u < users; u++ {
			in.registerWith(pipe, u, time.Duration(r+1)*time.Hour)
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	truth := in.redisExpiries("slow.example.com")
	if len(truth) != users {
		t.Fatalf("redis holds %d users, want %d", len(truth), users)
	}
	matches := func(state map[string]int64) bool {
		if len(state) != len(truth) {
			return false
		}
		for name, exp := range truth {
			if state[name] != exp {
				return false
			}
		}
		return true
	}
	in.eventually("the fast subscriber converged while the slow one was not reading", 20*time.Second, func() bool {
		st := map[string]int64{}
		for n, u := range fastSub.State() {
			st[n] = u.ExpiryTime
		}
		return matches(st)
	})
	if gaps, _, _ := fastSub.Stats(); gaps != 0 {
		t.Errorf("fast subscriber saw %d gaps, want 0", gaps)
	}
	mu.Lock()
	t.Logf("fast subscriber received %d change frames for %d changes", received, users*rounds)
	mu.Unlock()
	var metrics string
	in.eventually("server conflated or resynced the slow subscriber", 5*time.Second, func() bool {
		resp, err := http.Get(in.url + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		metrics = b.String()
		return !strings.Contains(metrics, "presencehub_conflations_total 0\n") || !strings.Contains(metrics, "presencehub_subscriber_resyncs_total 0\n")
	})

	// The slow one reads again and converges to the truth.
	state := map[string]int64{}
	var lastSeq uint64
	in.eventually("slow subscriber converges", 20*time.Second, func() bool {
		fr := slow.next(10 * time.Second)
		switch fr.Type {
		case "snapshot":
			state = map[string]int64{}
			for _, u := range fr.Users {
				state[u.Name] = u.ExpiryTime
			}
			lastSeq = fr.Seq
		case "change":
			if fr.Seq <= lastSeq || (fr.Seq != lastSeq+1 && !fr.Conflated) {
				t.Fatalf("slow subscriber: seq %d after %d without conflated mark: %s", fr.Seq, lastSeq, fr.Raw)
			}
			lastSeq = fr.Seq
			state[fr.User.Name] = fr.User.ExpiryTime
		}
		return matches(state)
	})
}

func (in *instance) registerWith(pipe redis.Cmdable, u int, expires time.Duration) {
	in.t.Helper()
	_, err := store.RegisterAsSBC(context.Background(), pipe, fmt.Sprintf("u%03d", u), "slow.example.com", store.SBCRecord{
		Contact: fmt.Sprintf("sip:u%03d@10.1.0.1:5060;pad=%s", u, strings.Repeat("x", 2000)), SBCAddress: "198.51.100.1:5060", Protocol: "udp", Proxy: "sip:203.0.113.1:5060",
	}, expires)
	if err != nil {
		in.t.Fatal(err)
	}
}

// redisExpiries returns user -> expiryTime of the records of realm in Redis.
func (in *instance) redisExpiries(realm string) map[string]int64 {
	in.t.Helper()
	out := map[string]int64{}
	for u := range in.redisUsers(realm) {
		var rec struct{ ExpiryTime int64 }
		b, err := in.rdb.Get(context.Background(), "user:"+u+"@"+realm).Bytes()
		if err != nil || json.Unmarshal(b, &rec) != nil {
			in.t.Fatalf("read %s: %v", u, err)
		}
		out[u] = rec.ExpiryTime
	}
	return out
}
