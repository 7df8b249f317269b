package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store/storetest"
)

// idleSource feeds a hub nothing: the benchmarks below call resync
// themselves.
type idleSource struct{}

func (idleSource) Watch(ctx context.Context, _ hub.Sink) error { <-ctx.Done(); return nil }

// benchRegistrations writes n registrations over 100 realms the way an SBC
// does (the shape of presencehub-bench resync's), n from
// PRESENCEHUB_BENCH_LOAD_N (default 100,000).
func benchRegistrations(b *testing.B, rdb *redis.Client) int {
	n := 100000
	if v := os.Getenv("PRESENCEHUB_BENCH_LOAD_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	const chunk = 1000
	for start := 0; start < n; start += chunk {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < min(n, start+chunk); i++ {
				user, rec := benchRecord(i)
				if _, err := RegisterAsSBC(ctx, p, user, fmt.Sprintf("r%04d.bench.invalid", i%100), rec, 2*time.Hour); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// BenchmarkRedisLoad times a full load into a hub: "cold" into an empty hub
// (the start), "resync" into a hub that already holds the same
// registrations (a reconnect). For profiles:
//
//	go test -run '^$' -bench RedisLoad -benchtime 3x -cpuprofile cpu.out ./store/
func BenchmarkRedisLoad(b *testing.B) {
	srv := storetest.StartRedis(b)
	rdb := srv.Client(b)
	n := benchRegistrations(b, rdb)
	src, err := NewRedisSource(RedisOptions{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	run := func(b *testing.B, h *hub.Hub) {
		if err := src.resync(context.Background(), h); err != nil {
			b.Fatal(err)
		}
	}
	start := func(b *testing.B) (*hub.Hub, func()) {
		h := hub.New(hub.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = h.Run(ctx, idleSource{}); close(done) }()
		return h, func() { cancel(); <-done }
	}
	b.Run("cold", func(b *testing.B) {
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			h, stop := start(b)
			c0 := processCPU(b)
			b.StartTimer()
			run(b, h)
			b.StopTimer()
			cpu += processCPU(b) - c0
			stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/registration")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/registration")
	})
	b.Run("resync", func(b *testing.B) {
		h, stop := start(b)
		defer stop()
		run(b, h)
		c0 := processCPU(b)
		b.ResetTimer()
		for b.Loop() {
			run(b, h)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/registration")
		b.ReportMetric(float64((processCPU(b)-c0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/registration")
	})
}

// processCPU is the CPU time (user and system) this process has used: on a
// shared machine it moves far less than wall time with other load. Redis
// runs in a process of its own and is not in it.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReadKeys reads back notified keys the way the watch loop does,
// in batches of 1 (a quiet stream: each notification read on its own), 16,
// 500 and 4,096 (redisNotifiedBatch, a hub that fell behind). allocs/op and
// B/op divided by the batch size are the read-back's cost per change;
// cpu-ns/key is this process's CPU (Redis runs in its own), which moves far
// less than ns/op with other load on the machine.
//
//	go test -run '^$' -bench ReadKeys -benchmem -count 5 ./store/
func BenchmarkReadKeys(b *testing.B) {
	srv := storetest.StartRedis(b)
	rdb := srv.Client(b)
	ctx := context.Background()
	const n = redisNotifiedBatch
	keys := make([]string, n)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range keys {
			user, rec := benchRecord(i)
			if _, err := RegisterAsSBC(ctx, p, user, "r0001.bench.invalid", rec, 2*time.Hour); err != nil {
				return err
			}
			keys[i] = "user:" + user + "@r0001.bench.invalid"
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	src, err := NewRedisSource(RedisOptions{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	for _, size := range []int{1, 16, 500, n} {
		b.Run(fmt.Sprintf("keys=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			c0 := processCPU(b)
			from := 0
			for b.Loop() {
				batch := keys[from : from+size]
				if from += size; from+size > n {
					from = 0
				}
				st, err := src.readKeys(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				if len(st) != size || st[size-1].reg == nil || st[size-1].aor != strings.TrimPrefix(batch[size-1], "user:") {
					b.Fatalf("read %d states for %d keys, the last %+v, want %d with a registration of %s", len(st), size, st[len(st)-1], size, batch[size-1])
				}
			}
			b.ReportMetric(float64((processCPU(b)-c0).Nanoseconds())/float64(b.N)/float64(size), "cpu-ns/key")
		})
	}
}

// benchRecord is the i-th registration of the benchmarks: the shape
// presencehub-bench stream writes (contact, proxy, SBC addresses, flags).
func benchRecord(i int) (user string, rec SBCRecord) {
	user = fmt.Sprintf("u%07d", i)
	return user, SBCRecord{
		Contact:    fmt.Sprintf("sip:%s@10.%d.%d.%d:%d;transport=ws", user, i>>16&255, i>>8&255, i&255, 40000+i%20000),
		SBCAddress: "192.0.2.10:8443", PrivateSBCAddress: "10.0.0.10:5060", Protocol: "wss",
		Proxy:          fmt.Sprintf("sip:203.0.113.%d:%d", 1+i%254, 1024+i%60000),
		AllowDirectApp: true, AllowDirectUser: true,
	}
}
