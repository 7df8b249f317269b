package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// TestRedisLoadDeadlines writes keys whose index score (the SBC's
// expiryTime) and TTL tell different stories, and checks that every
// registration's Deadline is its key's TTL on this machine's clock.
func TestRedisLoadDeadlines(t *testing.T) {
	t.Parallel()
	type key struct {
		user    string
		ttl     time.Duration // the key's own TTL
		score   time.Duration // index score and value expiryTime, from now (the SBC's clock)
		indexed bool          // ZADD active-user
		noExp   bool          // the value carries no expiryTime
	}
	many := func(prefix string, n int, ttl, score time.Duration) []key {
		var ks []key
		for i := range n {
			ks = append(ks, key{user: fmt.Sprintf("%s%03d", prefix, i), ttl: ttl, score: score, indexed: true})
		}
		return ks
	}
	tests := []struct {
		name string
		keys []key
	}{
		{"clocks agree", many("a", 1200, time.Hour, time.Hour)},
		{"one SBC an hour ahead of us", many("b", 1200, time.Minute, time.Hour)},
		{"two SBCs whose clocks differ", append(many("c", 600, time.Hour, time.Hour), many("d", 600, 10*time.Minute, 2*time.Hour)...)},
		{"keys the index does not know, or knows with another expiry", []key{
			{user: "plain", ttl: time.Minute, score: time.Hour},                              // SETEX only
			{user: "legacy", ttl: time.Minute, noExp: true, indexed: true, score: time.Hour}, // no expiryTime in the value
			{user: "rewritten", ttl: 2 * time.Minute, score: time.Hour, indexed: true},       // see below: score differs
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := storetest.StartRedis(t)
			rdb := srv.Client(t)
			ctx := context.Background()
			now := time.Now()
			p := rdb.Pipeline()
			for _, k := range tc.keys {
				exp := now.Add(k.score).UnixMilli()
				val := store.SBCValue(store.SBCRecord{Contact: "sip:" + k.user}, exp)
				if k.noExp {
					val = []byte(`{"contact":"sip:` + k.user + `"}`)
				}
				name := store.RedisUserPrefix + k.user + "@Example.com"
				p.Set(ctx, name, val, k.ttl)
				if k.indexed {
					score := exp
					if k.user == "rewritten" {
						score = exp - 1000 // the index lags the value
					}
					p.ZAdd(ctx, store.RedisActiveUserSet, redis.Z{Score: float64(score), Member: name})
				}
			}
			if _, err := p.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			w := watch(t, srv, store.RedisOptions{})
			w.waitResyncs(t, 1)
			after := time.Now()
			regs := w.sink.lastResync()
			if len(regs) != len(tc.keys) {
				t.Fatalf("resync has %d registrations, want %d", len(regs), len(tc.keys))
			}
			ttl := make(map[string]time.Duration)
			for _, k := range tc.keys {
				ttl[k.user] = k.ttl
			}
			for _, r := range regs {
				want, ok := ttl[r.User]
				if !ok {
					t.Errorf("unexpected registration %s", r.AOR())
					continue
				}
				// The deadline errs early by at most the test's own duration.
				if r.Deadline.Before(now.Add(want-5*time.Second)) || r.Deadline.After(after.Add(want)) {
					t.Errorf("%s: Deadline = now%+v, want now+%v (the key's TTL)", r.AOR(), r.Deadline.Sub(now).Round(time.Second), want)
				}
				if r.Realm != "example.com" {
					t.Errorf("%s: realm %q, want example.com", r.AOR(), r.Realm)
				}
			}
		})
	}
}

// TestRedisLoadStaleIndex checks that index members whose key is gone, is
// not a string, or lapsed by the index's own score are neither loaded nor
// needed: the key itself decides.
func TestRedisLoadStaleIndex(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	future := float64(time.Now().Add(time.Hour).UnixMilli())
	past := float64(time.Now().Add(-time.Hour).UnixMilli())
	if _, err := store.RegisterAsSBC(ctx, rdb, "live", "example.com", store.SBCRecord{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A key the index calls lapsed but that a later SETEX (without ZADD)
	// keeps alive.
	if err := rdb.Set(ctx, "user:revived@example.com", store.SBCValue(store.SBCRecord{}, int64(future)), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "user:hash@example.com", "contact", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, store.RedisActiveUserSet,
		redis.Z{Score: future, Member: "user:gone@example.com"},
		redis.Z{Score: future, Member: "user:hash@example.com"},
		redis.Z{Score: past, Member: "user:revived@example.com"},
		redis.Z{Score: future, Member: "not-a-user-key"},
	).Err(); err != nil {
		t.Fatal(err)
	}
	w := watch(t, srv, store.RedisOptions{})
	w.waitResyncs(t, 1)
	w.waitState(t, "first load", "live@example.com", "revived@example.com")
	if w.logs.warnings("user:hash@example.com") != 1 {
		t.Errorf("the hash under user:hash@example.com was not reported as malformed once; %s", w.describe())
	}
}
