package hub

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkAppendUsers100 is the REST "which of these 100 users are
// registered" read against a realm of 10k registered users.
func BenchmarkAppendUsers100(b *testing.B) {
	now := time.Now()
	const realm = "bench.example"
	regs := make([]Registration, 10_000)
	for i := range regs {
		regs[i] = reg("user"+strconv.Itoa(i), realm, now)
	}
	h := newHub(Options{})
	src := newFakeSource(regs...)
	stop := runBench(b, h, src)
	defer stop()
	<-src.sinks

	names := make([]string, 100)
	for i := range names {
		if i%10 == 9 {
			names[i] = "unknown" + strconv.Itoa(i) // 10% not registered
		} else {
			names[i] = "user" + strconv.Itoa(i*97)
		}
	}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = h.AppendUsers(buf[:0], realm, names)
	}
}

// BenchmarkFanout is one change applied through the owner and queued for 10
// subscribers of its realm.
func BenchmarkFanout(b *testing.B) {
	now := time.Now()
	const realm = "bench.example"
	h := newHub(Options{QueueLen: 4096})
	src := newFakeSource()
	stop := runBench(b, h, src)
	defer stop()
	sink := <-src.sinks

	subs := make([]*Subscription, 10)
	for i := range subs {
		subs[i], _ = h.Subscribe(SubscribeRequest{Realm: realm})
		defer subs[i].Close()
	}
	r := reg("alice", realm, now)
	var buf []Item
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r.ExpiryTime++
		sink.Update(put(r))
		if i%1024 == 0 {
			for _, s := range subs {
				buf, _, _ = s.Next(buf)
			}
		}
	}
}

func runBench(b *testing.B, h *Hub, src Source) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, src) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}
