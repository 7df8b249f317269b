package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLeanHijacker checks that the small buffers handed to coder/websocket
// lose no byte: frames that arrive after the upgrade's answer, frames the
// client sent in the same packet as the upgrade request (net/http has then
// buffered them, or taken their first byte in its background read), and
// frames bigger than the buffers.
func TestLeanHijacker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(&leanHijacker{ResponseWriter: w}, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer c.CloseNow()
		for { // echo
			typ, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if err := c.Write(context.Background(), typ, b); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	big := strings.Repeat("0123456789", 1000) // > both buffers
	tests := []struct {
		name     string
		messages []string
		early    bool // sent together with the upgrade request
	}{
		{"after the answer", []string{`{"type":"subscribe"}`}, false},
		{"with the upgrade request", []string{`{"type":"subscribe"}`, "second"}, true},
		{"one byte with the upgrade request", []string{"x"}, true},
		{"bigger than the buffers, after the answer", []string{big, "small"}, false},
		{"bigger than the buffers, with the upgrade request", []string{big, "small"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			var frames []byte
			for _, m := range tt.messages {
				frames = append(frames, maskedFrame(m)...)
			}
			req := "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			if tt.early {
				_, err = conn.Write(append([]byte(req), frames...))
			} else {
				_, err = conn.Write([]byte(req))
			}
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read upgrade answer: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade answer: got %s, want 101", resp.Status)
			}
			if !tt.early {
				if _, err := conn.Write(frames); err != nil {
					t.Fatal(err)
				}
			}
			for i, want := range tt.messages {
				got, err := serverFrame(br)
				if err != nil {
					t.Fatalf("echo of message %d: %v", i, err)
				}
				if got != want {
					t.Errorf("echo of message %d: got %d bytes starting %.20q, want %d bytes starting %.20q", i, len(got), got, len(want), want)
				}
			}
		})
	}
}

// maskedFrame encodes a masked text frame, as a client must send it.
func maskedFrame(msg string) []byte {
	b := []byte{0x81}
	switch n := len(msg); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i := range len(msg) {
		b = append(b, msg[i]^key[i%4])
	}
	return b
}

// serverFrame reads one unmasked, unfragmented frame's payload.
func serverFrame(r io.Reader) (string, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return "", err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return "", err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return string(p), err
}

// TestFrameBatch writes frames of every length form, small ones gathered in
// one buffer and big ones referenced, through a frameConn while
// coder/websocket pings on the same connection, and reads them back with
// coder/websocket; after a close frame no batch may be written.
func TestFrameBatch(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 300, 0xffff, 0x10000, 200_000, 2, 3}
	payload := func(i, n int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, n) }
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lh := &leanHijacker{ResponseWriter: w, writeTimeout: 5 * time.Second}
		c, err := websocket.Accept(lh, r, nil)
		if err != nil {
			done <- err
			return
		}
		go func() { _, _, _ = c.Read(context.Background()) }() // answers pings' pongs, reads the close
		sc := &streamConn{s: &server{}, c: c, fc: lh.conn}
		b := newFrameBatch(sc)
		for i, n := range sizes {
			b.add([]byte(nil), payload(i, n))
		}
		if got := len(b.bufs); got == 0 {
			t.Errorf("big frames were not referenced")
		}
		b.cut()
		small := 0
		for _, part := range b.bufs {
			if len(part) < batchCopyMax && len(part) > 200 {
				small++
			}
		}
		if small != 1 {
			t.Errorf("the small frames went into %d buffers, want 1 (one write for what was queued together)", small)
		}
		if !b.send() {
			done <- errors.New("send failed")
			return
		}
		b.release()
		if err := c.Ping(context.Background()); err != nil {
			done <- err
			return
		}
		c.Close(websocket.StatusNormalClosure, "")
		b = newFrameBatch(sc)
		b.add(nil, []byte("after close"))
		if err := lh.conn.writeFrames(&b.bufs); err == nil {
			done <- errors.New("a data frame was written after the close frame")
			return
		}
		done <- nil
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	for i, n := range sizes {
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != websocket.MessageText || !bytes.Equal(got, payload(i, n)) {
			t.Fatalf("frame %d: %v of %d bytes, want text of %d bytes of %q", i, typ, len(got), n, string(rune('a'+i)))
		}
	}
	_, _, err = c.Read(ctx) // the ping is answered inside Read; then the close
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after the frames: %v, want the normal close", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
