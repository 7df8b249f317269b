package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// TestReadyzFollowsRedis: /readyz is 503 while Redis is down and while a
// restarted Redis lacks keyspace notifications (serve keeps running and logs
// the fix), 200 again once they are on; its body never names an address.
func TestReadyzFollowsRedis(t *testing.T) {
	in := startInstance(t)
	readyz := func() (int, string) {
		resp, err := http.Get(in.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, status int, text string) string {
		t.Helper()
		var body string
		in.eventually(what, 20*time.Second, func() bool {
			var code int
			code, body = readyz()
			return code == status && strings.Contains(body, text)
		})
		if strings.Contains(body, "127.0.0.1") || strings.Contains(body, in.redis.Addr) {
			t.Errorf("%s: /readyz names an address: %s", what, body)
		}
		return body
	}
	waitFor("ready at start", 200, "ready")

	in.redis.Stop()
	waitFor("503 while redis is down", 503, "redis unreachable")

	in.redis.StartWithoutNotifications()
	waitFor("503 while redis lacks notifications", 503, "redis keyspace notifications are off")
	in.eventually("the fix in the log", 10*time.Second, func() bool {
		return strings.Contains(in.stderr.String(), "CONFIG SET notify-keyspace-events")
	})

	if err := in.rdb.ConfigSet(context.Background(), "notify-keyspace-events", "Kg$x").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor("ready once notifications are on", 200, "ready")
	resp, err := http.Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"presencehub_redis_connected 1", "presencehub_redis_last_sync_age_seconds ", "presencehub_redis_reads_total "} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

type storeHealth struct {
	connected bool
	last      time.Time
}

func (h storeHealth) health() store.RedisHealth {
	p := ""
	if !h.connected {
		p = "redis unreachable"
	}
	return store.RedisHealth{Connected: h.connected, LastSync: h.last, Problem: p}
}

func TestRedisReadinessSyncAge(t *testing.T) {
	now := time.Unix(10_000, 0)
	tests := []struct {
		name              string
		h                 storeHealth
		maxAge, reconcile time.Duration
		wantProblem       bool
	}{
		{"connected, fresh", storeHealth{true, now.Add(-time.Minute)}, 0, 5 * time.Minute, false},
		{"connected, stale by default bound", storeHealth{true, now.Add(-16 * time.Minute)}, 0, 5 * time.Minute, true},
		{"connected, stale, explicit bound", storeHealth{true, now.Add(-2 * time.Minute)}, time.Minute, 5 * time.Minute, true},
		{"reconcile off: no default bound", storeHealth{true, now.Add(-time.Hour)}, 0, -1, false},
		{"disconnected", storeHealth{false, now}, 0, 5 * time.Minute, true},
	}
	for _, tt := range tests {
		got := redisReadiness(tt.h.health(), tt.maxAge, tt.reconcile, now)
		if (len(got) > 0) != tt.wantProblem {
			t.Errorf("%s: problems %q, want a problem: %v", tt.name, got, tt.wantProblem)
		}
	}
}

// TestServeStartsWithoutRedisReady: Redis without keyspace notifications, or
// not running at all, when serve starts is not a reason to exit: serve
// starts, /readyz is 503 naming what is missing (the log gives the fix for
// the notifications), and it becomes ready once Redis is there with them.
func TestServeStartsWithoutRedisReady(t *testing.T) {
	tests := []struct {
		name        string
		redisOpts   []storetest.RedisOption
		beforeServe func(in *instance)
		want        string // in the 503 body
		wantLog     string
		fix         func(in *instance)
	}{
		{
			name:      "notifications off",
			redisOpts: []storetest.RedisOption{storetest.WithoutNotifications()},
			want:      "redis keyspace notifications are off",
			wantLog:   "CONFIG SET notify-keyspace-events",
			fix: func(in *instance) {
				if err := in.rdb.ConfigSet(context.Background(), "notify-keyspace-events", "Kg$x").Err(); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:        "redis down",
			beforeServe: func(in *instance) { in.redis.Stop() },
			want:        "redis unreachable",
			wantLog:     "redis is not reachable at start",
			fix:         func(in *instance) { in.redis.Start() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := startInstanceWith(t, startOptions{notReady: true, beforeServe: tt.beforeServe}, tt.redisOpts...)
			readyz := func() (int, string) {
				resp, err := http.Get(in.url + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			in.eventually("503 naming the problem", 20*time.Second, func() bool {
				code, body := readyz()
				return code == 503 && strings.Contains(body, tt.want)
			})
			in.eventually("the log says what to do", 10*time.Second, func() bool {
				return strings.Contains(in.stderr.String(), tt.wantLog)
			})
			// Still serving after a few retries.
			in.eventually("a retry", 10*time.Second, func() bool {
				return strings.Count(in.stderr.String(), "retry_in") >= 2
			})
			select {
			case <-in.served:
				t.Fatalf("serve exited: %v", in.serveErr)
			default:
			}
			tt.fix(in)
			in.eventually("ready once fixed", 30*time.Second, func() bool {
				code, _ := readyz()
				return code == 200
			})
		})
	}
}
