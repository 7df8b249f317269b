package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// timedSink is a fakeSink that notes when each update arrived.
type timedSink struct {
	*fakeSink
	mu      sync.Mutex
	times   []time.Time
	resyncs []time.Time
}

func (s *timedSink) Resync(regs []hub.Registration) {
	s.mu.Lock()
	s.resyncs = append(s.resyncs, time.Now())
	s.mu.Unlock()
	s.fakeSink.Resync(regs)
}

func (s *timedSink) Update(updates ...hub.Update) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	s.fakeSink.Update(updates...)
}

// TestRedisSentinelFailover: a master, a replica (without keyspace
// notifications configured, as after a real promotion) and three
// Sentinels on loopback; registrations change at 500/s while SENTINEL
// FAILOVER promotes the replica. The watcher must follow the new master
// (configuring its notifications as at start) and end with exactly the new
// master's content, every change after the failover included. The test
// logs the failover gap as the watcher saw it: the longest pause between
// two updates around the failover.
func TestRedisSentinelFailover(t *testing.T) {
	ctx := context.Background()
	set := storetest.StartSentinelSet(t)
	master, replica, sentinels := set.Master, set.Replica, set.Sentinels

	src, err := store.NewRedisSource(store.RedisOptions{
		URL: "redis://unused/0", Sentinels: sentinels, SentinelMaster: storetest.SentinelMaster,
		ConfigureNotifications: true, ReconcileEvery: -1, Logger: slog.New(&logRecorder{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &timedSink{fakeSink: newFakeSink()}
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- src.Watch(wctx, sink) }()
	defer func() {
		stopWatch()
		if err := <-watchDone; err != nil {
			t.Errorf("Watch returned %v", err)
		}
		src.Close()
	}()
	waitFor(t, 10*time.Second, "first resync", func() bool { return sink.resyncCount() >= 1 }, func() string { return "" })

	// The writer: what an SBC does, through a Sentinel-aware client, at
	// 500 changes a second over 200 users, retrying a write that fails
	// while the master changes.
	wc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: storetest.SentinelMaster, SentinelAddrs: sentinels})
	defer wc.Close()
	stopWriting := make(chan struct{})
	writerDone := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWriting:
				writerDone <- n
				return
			case <-tick.C:
			}
			user := fmt.Sprintf("u%03d", n%200)
			rec := store.SBCRecord{Contact: fmt.Sprintf("sip:%s@10.0.0.1:%d", user, n), Protocol: "udp", Proxy: "sip:1.2.3.4:5060"}
			for {
				c, cancel := context.WithTimeout(ctx, time.Second)
				_, err := store.RegisterAsSBC(c, wc, user, "failover.example.com", rec, time.Hour)
				cancel()
				if err == nil {
					break
				}
				select {
				case <-stopWriting:
					writerDone <- n
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			n++
		}
	}()

	time.Sleep(time.Second)
	before := master.Addr
	failoverAt := set.Failover(t)
	time.Sleep(2 * time.Second) // changes after the failover
	close(stopWriting)
	writes := <-writerDone

	// The new master's content, read directly.
	nm := replica.Client(t)
	want := map[string]string{}
	keys, err := nm.Keys(ctx, "user:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, err := nm.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		want[k[len("user:"):]] = v
	}
	if len(want) != 200 {
		t.Fatalf("new master holds %d users, want 200", len(want))
	}
	waitFor(t, 20*time.Second, "the watcher's state equal to the new master's", func() bool {
		if len(sink.aors()) != len(want) {
			return false
		}
		for aor, raw := range want {
			r, ok := sink.get(aor)
			if !ok || !containsContact(raw, r.Contact) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("watcher has %d users; new master %d", len(sink.aors()), len(want)) })
	if cfg, _ := nm.ConfigGet(ctx, "notify-keyspace-events").Result(); cfg["notify-keyspace-events"] == "" {
		t.Errorf("the new master's notify-keyspace-events were not configured")
	}

	// What the watcher saw: the last update from the old master, the
	// resync on the new one, and the first update after it.
	sink.mu.Lock()
	var lastBefore, resyncAt, firstAfter time.Time
	for _, at := range sink.resyncs {
		if at.After(failoverAt) {
			resyncAt = at
			break
		}
	}
	for _, at := range sink.times {
		if resyncAt.IsZero() || at.Before(resyncAt) {
			lastBefore = at
		} else if firstAfter.IsZero() {
			firstAfter = at
		}
	}
	sink.mu.Unlock()
	if resyncAt.IsZero() || firstAfter.IsZero() {
		t.Fatalf("no resync or no update after the failover (resync %v, first update after %v)", resyncAt, firstAfter)
	}
	elapsed := time.Since(failoverAt) + time.Second
	t.Logf("failover %s -> %s: %d writes (%.0f/s); SENTINEL FAILOVER at 0; last update from the old master at %v; "+
		"resync on the new master at %v; first update after it at %v; failover time (last change before -> first change after) %v",
		before, replica.Addr, writes, float64(writes)/elapsed.Seconds(),
		lastBefore.Sub(failoverAt).Round(time.Millisecond), resyncAt.Sub(failoverAt).Round(time.Millisecond),
		firstAfter.Sub(failoverAt).Round(time.Millisecond), firstAfter.Sub(lastBefore).Round(time.Millisecond))
}

func containsContact(raw, contact string) bool {
	return contact != "" && len(raw) > 0 && (stringContains(raw, `"`+contact+`"`))
}

func stringContains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestRedisSentinelFailoverWithoutNotifications: the promoted replica lacks
// notify-keyspace-events and presencehub may not configure it. The watcher
// follows the failover, finds the setting missing exactly as at start, says
// so in Health (not ready) and in the log with the command that fixes it,
// and keeps retrying; once the operator runs that command it subscribes,
// resyncs, and its state equals the new master's, changes made while it
// was not ready included.
func TestRedisSentinelFailoverWithoutNotifications(t *testing.T) {
	ctx := context.Background()
	set := storetest.StartSentinelSet(t)
	logs := &logRecorder{}
	src, err := store.NewRedisSource(store.RedisOptions{
		URL: set.Master.URL, Sentinels: set.Sentinels, SentinelMaster: storetest.SentinelMaster,
		ReconcileEvery: -1, Logger: slog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- src.Watch(wctx, sink) }()
	defer func() {
		stopWatch()
		<-watchDone
		src.Close()
	}()
	waitFor(t, 10*time.Second, "first resync", func() bool { return sink.resyncCount() >= 1 }, func() string { return "" })

	set.Failover(t)
	waitFor(t, 20*time.Second, "not ready: notifications off on the new master", func() bool {
		return src.Health().Problem == "redis keyspace notifications are off"
	}, func() string { return fmt.Sprintf("%+v", src.Health()) })
	if fix := logs.errorsContaining("CONFIG SET notify-keyspace-events"); fix == 0 {
		t.Errorf("no error log names the command that fixes it")
	}

	// Changes while not ready, then the fix.
	nm := set.Replica.Client(t)
	for i := range 20 {
		rec := store.SBCRecord{Contact: fmt.Sprintf("sip:n%02d@10.0.0.2:5060", i), Protocol: "udp"}
		if _, err := store.RegisterAsSBC(ctx, nm, fmt.Sprintf("n%02d", i), "fix.example.com", rec, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := nm.ConfigSet(ctx, "notify-keyspace-events", storetest.RedisNotifyFlags).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "ready again with the new master's state", func() bool {
		return src.Health().Connected && len(sink.aors()) == 20
	}, func() string { return fmt.Sprintf("%+v, %d users", src.Health(), len(sink.aors())) })
	rec := store.SBCRecord{Contact: "sip:late@10.0.0.2:5060", Protocol: "udp"}
	if _, err := store.RegisterAsSBC(ctx, nm, "late", "fix.example.com", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a change after the fix", func() bool {
		_, ok := sink.get("late@fix.example.com")
		return ok
	}, func() string { return fmt.Sprint(sink.aors()) })
}
