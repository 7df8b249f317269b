package api

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/hub/wire"
)

// BenchmarkFlushRound is one change through a subscription and one flush
// round writing it to a loopback TCP socket (read and discarded by another
// goroutine): what a stream connection costs per frame when its rounds
// carry one frame each (5,000 changes/s over 1,000 accounts: each socket
// gets 5 frames/s). -benchmem shows the allocations per frame.
func BenchmarkFlushRound(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := hub.New(hub.Options{QueueLen: 4096, Logger: slog.New(slog.DiscardHandler)})
	go func() { _ = h.Run(ctx, nil) }()
	h.Resync(nil)
	const realm = "bench.example"

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	sc := &streamConn{s: &server{stream: StreamOptions{WriteTimeout: 10 * time.Second}}, fc: &frameConn{Conn: conn, timeout: 10 * time.Second}, subs: map[string]*streamSub{}}
	sub, _ := h.Subscribe(hub.SubscribeRequest{Realm: realm, Notify: func() {}})
	defer sub.Close()
	ss := &streamSub{id: "s", accountSID: "AC1", realm: realm, sub: sub, prefix: wire.AppendChangePrefix(nil, "s", "AC1", false)}
	sc.subs[ss.id], sc.order = ss, []*streamSub{ss}

	reg := hub.Registration{User: "alice", Realm: realm, Protocol: "udp", Proxy: "sip:203.0.113.7:40123",
		SBCAddress: "10.0.0.1:5060", ExpiryTime: time.Now().Add(time.Hour).UnixMilli(), Deadline: time.Now().Add(time.Hour)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := reg
		r.Contact = "sip:alice@192.168.1.20:5060;ts=" + strconv.Itoa(i)
		h.Update(hub.Update{AOR: "alice@" + realm, Reg: &r})
		if sc.flushOnce(false) != flushOK {
			b.Fatal("the flush round failed")
		}
	}
	if got := sc.s.stats.frames.Load(); got < uint64(i) {
		b.Fatalf("%d frames written for %d changes", got, i)
	}
}
