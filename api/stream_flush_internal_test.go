package api

import (
	"bytes"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"
)

// socketPair is a loopback TCP connection whose server end has a small send
// buffer and whose client end a small receive buffer, so that a write of
// more than a few KiB is taken only in part until the client reads.
func socketPair(t *testing.T) (srv *net.TCPConn, cli *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv, cli = s.(*net.TCPConn), c.(*net.TCPConn)
	if err := srv.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

func newTestFrameConn(t *testing.T, srv *net.TCPConn) *frameConn {
	t.Helper()
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return &frameConn{Conn: srv, raw: rc, timeout: 10 * time.Second}
}

// TestTrySend: a worker's write takes what the socket takes now and never
// waits; when part of a frame went out, the lock stays held so that no
// control frame can come between the frame's parts, and finishSend writes
// the rest: the client reads the bytes whole and in order.
func TestTrySend(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: far more than the buffers
	tests := []struct {
		name      string
		data      [][]byte
		locked    bool // the lock is taken (a control frame waits for the client)
		closeSent bool
		wantErr   error
		wantHeld  bool
		wantRest  bool // bytes left for finishSend/writeFrames
	}{
		{name: "small frame goes out whole", data: [][]byte{[]byte("hello")}},
		{name: "several parts go out whole", data: [][]byte{[]byte("a"), []byte("bc"), []byte("def")}},
		{name: "more than the socket takes: part, lock held", data: [][]byte{big}, wantErr: errWouldBlock, wantHeld: true, wantRest: true},
		{name: "parts, more than the socket takes", data: [][]byte{[]byte("head"), big, []byte("tail")}, wantErr: errWouldBlock, wantHeld: true, wantRest: true},
		{name: "more parts than one writev takes (16): the first 16, lock held", data: manyParts(20), wantErr: errWouldBlock, wantHeld: true, wantRest: true},
		{name: "lock taken: nothing written, not waited for", data: [][]byte{[]byte("x")}, locked: true, wantErr: errWouldBlock, wantRest: true},
		{name: "after a close frame nothing goes out", data: [][]byte{[]byte("x")}, closeSent: true, wantErr: net.ErrClosed, wantRest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := socketPair(t)
			fc := newTestFrameConn(t, srv)
			fc.closeSent = tt.closeSent
			if tt.locked {
				fc.mu.Lock()
			}
			var want []byte
			for _, d := range tt.data {
				want = append(want, d...)
			}
			bufs := net.Buffers(append([][]byte(nil), tt.data...))
			start := time.Now()
			held, err := fc.trySend(&bufs)
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("trySend waited %v: it must never wait for the client", took)
			}
			if err != tt.wantErr || held != tt.wantHeld {
				t.Fatalf("trySend: got held %v, err %v; want held %v, err %v", held, err, tt.wantHeld, tt.wantErr)
			}
			if rest := len(bufs) > 0; rest != tt.wantRest {
				t.Fatalf("bytes left after trySend: got %v, want %v", rest, tt.wantRest)
			}
			if tt.locked {
				if fc.mu.TryLock() {
					t.Fatal("trySend released a lock it did not take")
				}
				fc.mu.Unlock()
			}
			if tt.closeSent {
				return
			}
			// A control frame written meanwhile must come after the data.
			ctrl := []byte("\x8a\x00") // a pong, as coder/websocket would write it
			got := make(chan []byte)
			total := int64(len(want) + len(ctrl))
			go func() {
				b, _ := io.ReadAll(io.LimitReader(cli, total))
				got <- b
			}()
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				if _, err := fc.Write(ctrl); err != nil {
					t.Errorf("control frame: %v", err)
				}
			}()
			if tt.wantRest && !tt.closeSent {
				time.Sleep(20 * time.Millisecond) // let the control frame try to cut in
				if held {
					err = fc.finishSend(&bufs)
				} else {
					<-wrote // the lock was free: the control frame may go first
					want = append(append([]byte(nil), ctrl...), want...)
					ctrl = nil
					err = fc.writeFrames(&bufs)
				}
				if err != nil {
					t.Fatalf("writing the rest: %v", err)
				}
			}
			<-wrote
			b := <-got
			if ctrl != nil {
				want = append(want, ctrl...)
			}
			if !bytes.Equal(b, want) {
				t.Fatalf("the client read %d bytes that differ from the %d written (data, then the control frame)", len(b), len(want))
			}
		})
	}
}

func TestConsume(t *testing.T) {
	tests := []struct {
		n    int
		want []string
	}{
		{0, []string{"ab", "cde", "f"}},
		{1, []string{"b", "cde", "f"}},
		{2, []string{"cde", "f"}},
		{4, []string{"e", "f"}},
		{6, nil},
	}
	for _, tt := range tests {
		bufs := net.Buffers{[]byte("ab"), []byte("cde"), []byte("f")}
		consume(&bufs, tt.n)
		var got []string
		for _, b := range bufs {
			got = append(got, string(b))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("consume(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}

// manyParts is n small parts of distinct bytes.
func manyParts(n int) [][]byte {
	parts := make([][]byte, n)
	for i := range parts {
		parts[i] = []byte{byte('a' + i%26), byte('A' + i%26)}
	}
	return parts
}
