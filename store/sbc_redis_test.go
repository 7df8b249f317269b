package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestRedisRegisterAsSBCWritesWhatTheSBCWrites(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	tests := []struct {
		name  string
		user  string
		realm string
		rec   store.SBCRecord
		want  string // the value, with %d for expiryTime
	}{
		{
			name: "every field", user: "alice", realm: "Example.COM",
			rec: store.SBCRecord{
				Contact: "sip:alice@10.0.0.5:5060;transport=ws", SBCAddress: "203.0.113.1:5060",
				PrivateSBCAddress: "10.0.0.1:5060", Protocol: "wss", Proxy: "sip:198.51.100.7:34567",
				CallHook: "https://hooks.example.com/call?a=1&b=<2>", CallStatusHook: "https://hooks.example.com/status",
				AllowDirectApp: true, AllowDirectQueue: false, AllowDirectUser: true,
			},
			want: `{"contact":"sip:alice@10.0.0.5:5060;transport=ws","sbcAddress":"203.0.113.1:5060",` +
				`"privateSbcAddress":"10.0.0.1:5060","protocol":"wss","proxy":"sip:198.51.100.7:34567",` +
				`"callHook":"https://hooks.example.com/call?a=1&b=<2>","callStatusHook":"https://hooks.example.com/status",` +
				`"allow_direct_app_calling":1,"allow_direct_queue_calling":false,"allow_direct_user_calling":1,"expiryTime":%d}`,
		},
		{
			name: "undefined fields are left out, as JSON.stringify does", user: "bob", realm: "example.com",
			rec: store.SBCRecord{Contact: "sip:bob@10.0.0.6:5060", SBCAddress: "203.0.113.1:5060", Proxy: "sip:198.51.100.8:5060"},
			want: `{"contact":"sip:bob@10.0.0.6:5060","sbcAddress":"203.0.113.1:5060","proxy":"sip:198.51.100.8:5060",` +
				`"allow_direct_app_calling":false,"allow_direct_queue_calling":false,"allow_direct_user_calling":false,"expiryTime":%d}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().UnixMilli()
			exp, err := store.RegisterAsSBC(ctx, rdb, tc.user, tc.realm, tc.rec, 90*time.Second)
			if err != nil {
				t.Fatalf("RegisterAsSBC: %v", err)
			}
			if exp < before+90_000 || exp > time.Now().UnixMilli()+90_000 {
				t.Errorf("expiryTime = %d, want now+90000 ms (now was %d)", exp, before)
			}
			key := "user:" + tc.user + "@" + tc.realm // realm kept as the device sent it
			got, err := rdb.Get(ctx, key).Result()
			if err != nil {
				t.Fatalf("GET %s: %v", key, err)
			}
			if want := fmt.Sprintf(tc.want, exp); got != want {
				t.Errorf("value of %s\n got: %s\nwant: %s", key, got, want)
			}
			if ttl := rdb.TTL(ctx, key).Val(); ttl < 89*time.Second || ttl > 90*time.Second {
				t.Errorf("TTL of %s = %v, want 90s (SETEX with the granted expires)", key, ttl)
			}
			score, err := rdb.ZScore(ctx, "active-user", key).Result()
			if err != nil || int64(score) != exp {
				t.Errorf("ZSCORE active-user %s = %v, %v; want the expiryTime %d", key, score, err, exp)
			}

			if err := store.UnregisterAsSBC(ctx, rdb, tc.user, tc.realm); err != nil {
				t.Fatalf("UnregisterAsSBC: %v", err)
			}
			if n := rdb.Exists(ctx, key).Val(); n != 0 {
				t.Errorf("after UnregisterAsSBC, EXISTS %s = %d, want 0", key, n)
			}
			if _, err := rdb.ZScore(ctx, "active-user", key).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("after UnregisterAsSBC, ZSCORE active-user %s: err = %v, want redis.Nil (member removed)", key, err)
			}
		})
	}
}

func TestRedisRegisterAsSBCRejectsWhatSETEXCannotStore(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	for _, tc := range []struct {
		name, user, realm string
		expires           time.Duration
	}{
		{"sub-second expires", "a", "example.com", 999 * time.Millisecond},
		{"zero expires", "a", "example.com", 0},
		{"empty user", "", "example.com", time.Minute},
		{"empty realm", "a", "", time.Minute},
	} {
		_, err := store.RegisterAsSBC(context.Background(), rdb, tc.user, tc.realm, store.SBCRecord{}, tc.expires)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: err = %v, want one wrapping ErrInvalid", tc.name, err)
		}
	}
	if n := rdb.DBSize(context.Background()).Val(); n != 0 {
		t.Errorf("rejected registrations wrote %d keys, want none", n)
	}
}

func TestRedisRegisterAsSBCInAPipeline(t *testing.T) {
	t.Parallel()
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i := range 50 {
		if _, err := store.RegisterAsSBC(ctx, pipe, fmt.Sprintf("u%d", i), "example.com", store.SBCRecord{Contact: "sip:x"}, time.Minute); err != nil {
			t.Fatalf("RegisterAsSBC into a pipeline: %v", err)
		}
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("before Exec, %d keys exist; want none (RegisterAsSBC must not execute the caller's pipeline)", n)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if n := rdb.ZCard(ctx, "active-user").Val(); n != 50 {
		t.Errorf("ZCARD active-user = %d after the pipeline, want 50", n)
	}
}
