package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// testReplica is one replica in this process: a public hub following the
// log, and a sequencer competing for the lease with a Redis source.
type testReplica struct {
	c      *store.Cluster
	h      *hub.Hub
	cancel context.CancelFunc
	done   chan struct{}
}

func startTestReplica(t *testing.T, url string) *testReplica {
	t.Helper()
	c, err := store.OpenCluster(store.ClusterOptions{Redis: store.RedisOptions{URL: url}, LeaseTTL: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src, err := store.NewRedisSource(store.RedisOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &testReplica{c: c, h: hub.New(hub.Options{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		hubDone := make(chan struct{})
		go func() { defer close(hubDone); _ = r.h.Run(ctx, nil) }()
		followDone := make(chan struct{})
		go func() { defer close(followDone); _ = c.Follow(ctx, r.h) }()
		_ = c.Sequence(ctx, src, hub.Options{})
		<-followDone
		<-hubDone
		src.Close()
		c.Close()
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *testReplica) stop() {
	r.cancel()
	<-r.done
}

// users is the hub's realm as user -> contact.
func (r *testReplica) users(t *testing.T, realm string) map[string]string {
	var all []struct{ Name, Contact string }
	if err := json.Unmarshal(r.h.AppendAll(nil, realm), &all); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(all))
	for _, u := range all {
		out[u.Name] = u.Contact
	}
	return out
}

func redisContacts(t *testing.T, rdb *redis.Client, realm string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	keys, err := rdb.Keys(context.Background(), "user:*@"+realm).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var v struct{ Contact string }
		if err := json.Unmarshal([]byte(rdb.Get(context.Background(), k).Val()), &v); err != nil {
			t.Fatal(err)
		}
		out[k[len("user:"):len(k)-len("@"+realm)]] = v.Contact
	}
	return out
}

// TestClusterReplicas: two replicas in one process follow one log; whichever
// sequences, both end with Redis's state and the same seq, and when the
// sequencer stops the other takes over and appends only the differences.
func TestClusterReplicas(t *testing.T) {
	ctx := context.Background()
	srv := storetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	const realm = "rep.example"
	register := func(i int, tag string) {
		rec := store.SBCRecord{Contact: fmt.Sprintf("sip:u%d@10.0.0.1:%s", i, tag), Protocol: "udp", Proxy: "sip:203.0.113.9:5060"}
		if _, err := store.RegisterAsSBC(ctx, rdb, fmt.Sprintf("u%d", i), realm, rec, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		register(i, "a")
	}
	a, b := startTestReplica(t, srv.URL), startTestReplica(t, srv.URL)
	agree := func(what string) {
		t.Helper()
		waitFor(t, 60*time.Second, what, func() bool {
			want := redisContacts(t, rdb, realm)
			return reflect.DeepEqual(a.users(t, realm), want) && reflect.DeepEqual(b.users(t, realm), want) &&
				a.h.Stats(realm).Seq == b.h.Stats(realm).Seq
		}, func() string {
			return fmt.Sprintf("a: %d users seq %d, b: %d users seq %d", len(a.users(t, realm)), a.h.Stats(realm).Seq, len(b.users(t, realm)), b.h.Stats(realm).Seq)
		})
	}
	agree("both replicas to hold Redis's 20 registrations")
	if a.h.Epoch() != b.h.Epoch() {
		t.Fatalf("epochs differ: %q and %q", a.h.Epoch(), b.h.Epoch())
	}
	for i := range 10 {
		register(i, "b")
	}
	store.UnregisterAsSBC(ctx, rdb, "u19", realm)
	agree("both replicas to follow 10 updates and an unregister")
	seq := a.h.Stats(realm).Seq
	if seq != 31 {
		t.Errorf("seq after 20 registered, 10 updated, 1 unregistered = %d, want 31", seq)
	}

	holder, other := a, b
	if b.c.Metrics.Holder.Load() {
		holder, other = b, a
	}
	holder.stop()
	register(5, "c")
	waitFor(t, 30*time.Second, "the other replica to take the lease", func() bool { return other.c.Metrics.Holder.Load() }, func() string { return "no holder" })
	waitFor(t, 30*time.Second, "the new sequencer to append u5's update", func() bool {
		return reflect.DeepEqual(other.users(t, realm), redisContacts(t, rdb, realm))
	}, func() string { return fmt.Sprintf("seq %d", other.h.Stats(realm).Seq) })
	// Only the difference was appended: one change after the takeover.
	if got := other.h.Stats(realm).Seq; got != seq+1 {
		t.Errorf("seq after the takeover = %d, want %d (only u5's update appended)", got, seq+1)
	}
	recent := other.h.Recent(realm, 1)
	if len(recent) != 1 || recent[0].User != "u5" || recent[0].Event != hub.EventUpdated {
		t.Errorf("last change after the takeover = %+v, want u5 updated", recent)
	}
	names := make([]string, 0)
	for n := range other.users(t, realm) {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) != 19 {
		t.Errorf("users after the takeover: %v, want 19", names)
	}
}
