package api

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestPingSkippable is the heartbeat's decision: skip the ping only when
// data frames were written since the last heartbeat, no write is under
// way and the send queue is known to be empty.
func TestPingSkippable(t *testing.T) {
	const beat = 1000
	tests := []struct {
		name      string
		lastWrite int64
		inflight  bool
		outq      int
		err       error
		want      bool
	}{
		{"data acknowledged", beat + 1, false, 0, nil, true},
		{"idle: no data since the last heartbeat", beat, false, 0, nil, false},
		{"idle: last data before it", beat - 500, false, 0, nil, false},
		{"never written", 0, false, 0, nil, false},
		{"data not acknowledged", beat + 1, false, 1, nil, false},
		{"peer's window closed", beat + 1, false, 2 << 20, nil, false},
		{"write under way", beat + 1, true, 0, nil, false},
		{"send queue unknown", beat + 1, false, 0, errors.ErrUnsupported, false},
	}
	for _, tc := range tests {
		if got := pingSkippable(tc.lastWrite, beat, tc.inflight, tc.outq, tc.err); got != tc.want {
			t.Errorf("%s: skip %v, want %v", tc.name, got, tc.want)
		}
	}
}

// heartbeatConn is a stream connection over loopback TCP with its
// heartbeat timer armed far away (tests call heartbeat themselves), and
// the client's end. rcvbuf > 0 sets the client's receive buffer.
func heartbeatConn(t testing.TB, writeTimeout time.Duration, rcvbuf int) (*streamConn, *websocket.Conn) {
	t.Helper()
	got := make(chan *streamConn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lh := &leanHijacker{ResponseWriter: w, writeTimeout: writeTimeout}
		c, err := websocket.Accept(lh, r, nil)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		go func() { _, _, _ = c.Read(context.Background()) }() // reads the pongs
		sc := &streamConn{s: &server{stream: StreamOptions{PingInterval: time.Hour, WriteTimeout: writeTimeout}}, c: c, fc: lh.conn}
		sc.ping = time.AfterFunc(time.Hour, func() {})
		got <- sc
	}))
	t.Cleanup(srv.Close)
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf <= 0 {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		return errors.Join(err, serr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"),
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	sc := <-got
	if sc == nil {
		t.FailNow()
	}
	t.Cleanup(func() { sc.ping.Stop(); sc.c.CloseNow() })
	return sc, c
}

// writeData writes one data frame of n bytes on sc.
func writeData(sc *streamConn, n int) error {
	frame := appendFrameHeader(nil, n)
	frame = append(frame, strings.Repeat("x", n)...)
	bufs := net.Buffers{frame}
	return sc.fc.writeFrames(&bufs)
}

// rawConn is the RawConn of sc's socket.
func rawConn(t testing.TB, sc *streamConn) syscall.RawConn {
	t.Helper()
	rc, err := sc.fc.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// TestHeartbeatSkipsAcknowledgedData: a heartbeat after data frames the
// client's TCP acknowledged sends no ping; the next one, with no data in
// between, pings (and the reading client's pong keeps the connection).
func TestHeartbeatSkipsAcknowledgedData(t *testing.T) {
	sc, c := heartbeatConn(t, 5*time.Second, 0)
	frames := make(chan error, 16)
	go func() {
		for {
			_, _, err := c.Read(context.Background()) // answers pings too
			frames <- err
			if err != nil {
				return
			}
		}
	}()
	if err := writeData(sc, 300); err != nil {
		t.Fatal(err)
	}
	if err := <-frames; err != nil {
		t.Fatalf("client read: %v", err)
	}
	// The client has the frame; its TCP's acknowledgment may be delayed
	// (delayed ACK): wait for it.
	rc := rawConn(t, sc)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n, err := sendQueue(rc)
		if err != nil {
			t.Fatalf("send queue: %v", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still unacknowledged by a reading client after 20 s", n)
		}
	}
	sc.heartbeat()
	if p, s := sc.s.stats.pings.Load(), sc.s.stats.pingsSkipped.Load(); p != 0 || s != 1 {
		t.Fatalf("heartbeat after acknowledged data: %d pings, %d skipped, want 0 and 1", p, s)
	}
	sc.heartbeat() // nothing written since the last one
	if p, s := sc.s.stats.pings.Load(), sc.s.stats.pingsSkipped.Load(); p != 1 || s != 1 {
		t.Fatalf("heartbeat with no data since the last: %d pings, %d skipped, want 1 and 1", p, s)
	}
	if err := writeData(sc, 10); err != nil {
		t.Fatalf("the connection after the answered ping: %v", err)
	}
	if err := <-frames; err != nil {
		t.Fatalf("the client after the answered ping: %v", err)
	}
}

// TestHeartbeatPingsUnacknowledgedData: a client that takes data frames
// into nothing (it does not read and its receive window is full) leaves
// bytes in the send queue: the heartbeat does not skip its ping, however
// recently data was written.
func TestHeartbeatPingsUnacknowledgedData(t *testing.T) {
	sc, _ := heartbeatConn(t, 300*time.Millisecond, 4096) // the client never reads
	since := time.Now().UnixNano()
	var err error
	for err == nil {
		err = writeData(sc, 16<<10) // until a write makes no progress for the write timeout
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("filling the buffers: %v, want a write deadline", err)
	}
	n, qerr := sendQueue(rawConn(t, sc))
	if qerr != nil || n == 0 {
		t.Fatalf("send queue with the client's window closed: %d bytes (%v), want some", n, qerr)
	}
	if sc.ackedSince(since) {
		t.Errorf("%d bytes unacknowledged, data written since the last heartbeat: the ping would be skipped", n)
	}
}

// TestHeartbeatPingsWithoutFD: data written on a connection whose socket
// cannot be reached (a pipe here, TLS in production) does not skip pings.
func TestHeartbeatPingsWithoutFD(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fc := &frameConn{Conn: a, timeout: time.Second}
	fc.lastWrite.Store(time.Now().UnixNano())
	sc := &streamConn{fc: fc}
	if sc.ackedSince(1) {
		t.Error("data written on a pipe: the ping would be skipped")
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHeartbeat is one heartbeat of a connection whose client reads
// (and answers pings) in the same process: "ping" had no data since the
// last heartbeat and pings, waiting for the pong; "skip" had data frames,
// acknowledged, and reads the send queue instead. cpu-ns/op is the whole
// process's CPU time per heartbeat (the client's read and pong included
// for "ping").
func BenchmarkHeartbeat(b *testing.B) {
	for _, mode := range []string{"ping", "skip"} {
		b.Run(mode, func(b *testing.B) {
			sc, c := heartbeatConn(b, 5*time.Second, 0)
			go func() {
				for {
					if _, _, err := c.Read(context.Background()); err != nil {
						return
					}
				}
			}()
			if err := writeData(sc, 300); err != nil {
				b.Fatal(err)
			}
			rc := rawConn(b, sc)
			for n, _ := sendQueue(rc); n != 0; n, _ = sendQueue(rc) {
				time.Sleep(time.Millisecond)
			}
			sc.lastBeat.Store(time.Now().UnixNano()) // "ping": the frame was before the last heartbeat
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if mode == "skip" {
					sc.lastBeat.Store(0) // the frame above counts as written since the last heartbeat
				}
				sc.heartbeat()
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			pings, skipped := sc.s.stats.pings.Load(), sc.s.stats.pingsSkipped.Load()
			if mode == "ping" && skipped != 0 || mode == "skip" && pings != 0 {
				b.Fatalf("%s: %d pings, %d skipped", mode, pings, skipped)
			}
		})
	}
}

// BenchmarkHeartbeatSkipRate measures how often a heartbeat finds every
// byte acknowledged on a connection that gets 5 frames/s (a subscriber at
// 5,000 changes/s over 1,000 accounts), its client reading at once: each
// iteration writes a 300-byte frame and runs a heartbeat a random part of
// the 200 ms between frames later. skipped/op is the fraction of pings
// saved (1 heartbeat per op here; one per 30 s, 150 frames, in production,
// where the heartbeat's instant is as random).
func BenchmarkHeartbeatSkipRate(b *testing.B) {
	sc, c := heartbeatConn(b, 5*time.Second, 0)
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	for b.Loop() {
		if err := writeData(sc, 300); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Duration(rand.N(200)) * time.Millisecond)
		sc.lastBeat.Store(0)
		sc.heartbeat()
	}
	b.ReportMetric(float64(sc.s.stats.pingsSkipped.Load())/float64(b.N), "skipped/op")
}
