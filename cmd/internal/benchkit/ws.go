package benchkit

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// WS is the benchmark subscribers' side of a websocket (RFC 6455),
// only what a subscriber needs: the upgrade, masked text frames out,
// messages in, pongs to the server's pings and the close handshake.
//
// The benchmarks run their subscribers on the same cores as the server,
// like wrk for REST, so whatever memory and CPU the subscribers take the
// measured server does not have; a full websocket library per subscriber
// costs far more of both. This reader keeps one 2 KiB buffer per connection
// and reads a change frame with one read. The product's own clients (api/client, the
// tests) use coder/websocket.
type WS struct {
	conn net.Conn
	br   *bufio.Reader
	msg  []byte // the message being read; reused while small
	out  []byte // frame being written
}

// WSBuffer is the read buffer of each connection.
const WSBuffer = 2 << 10

// ErrWSClosed: the server closed the websocket.
var ErrWSClosed = errors.New("websocket closed by the server")

// DialWS opens a websocket to wsURL (ws://host:port/path) from
// localAddr (nil: any) with the given request headers.
func DialWS(wsURL string, localAddr net.Addr, header http.Header, timeout time.Duration) (*WS, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("%s: only ws:// is supported", wsURL)
	}
	d := net.Dialer{Timeout: timeout, LocalAddr: localAddr}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	ws, err := UpgradeWS(conn, u, header, timeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return ws, nil
}

func UpgradeWS(conn net.Conn, u *url.URL, header http.Header, timeout time.Duration) (*WS, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", u.RequestURI(), u.Host, key)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, WSBuffer)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("upgrade: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		return nil, errors.New("upgrade: wrong Sec-WebSocket-Accept")
	}
	conn.SetDeadline(time.Time{})
	return &WS{conn: conn, br: br}, nil
}

// WriteText sends one masked text frame.
func (ws *WS) WriteText(p []byte) error {
	return ws.writeFrame(0x1, p)
}

func (ws *WS) writeFrame(opcode byte, p []byte) error {
	b := append(ws.out[:0], 0x80|opcode)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range p {
		b = append(b, c^mask[i&3])
	}
	_, err := ws.conn.Write(b)
	if cap(b) <= 1024 {
		ws.out = b
	}
	return err
}

// ReadMessage returns the next data message; the slice is valid until the
// next call. Pings are answered on the way; a close frame is answered and
// ends the connection (ErrWSClosed).
func (ws *WS) ReadMessage() ([]byte, error) {
	if cap(ws.msg) > 4<<10 { // a snapshot's buffer is not kept for the changes
		ws.msg = nil
	}
	msg := ws.msg[:0]
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(ws.br, hdr[:2]); err != nil {
			return nil, err
		}
		fin, opcode := hdr[0]&0x80 != 0, hdr[0]&0x0f
		if hdr[0]&0x70 != 0 {
			return nil, errors.New("frame with reserved bits set (no extension was negotiated)")
		}
		if hdr[1]&0x80 != 0 {
			return nil, errors.New("masked frame from the server")
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(ws.br, hdr[:2]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(ws.br, hdr[:8]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if n > 1<<30 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		if opcode >= 0x8 { // control frame, at most 125 bytes, never fragmented
			if n > 125 || !fin {
				return nil, errors.New("bad control frame")
			}
			var p [125]byte
			if _, err := io.ReadFull(ws.br, p[:n]); err != nil {
				return nil, err
			}
			switch opcode {
			case 0x9: // ping
				if err := ws.writeFrame(0xA, p[:n]); err != nil {
					return nil, err
				}
			case 0x8: // close: answer with the same code, then end
				_ = ws.writeFrame(0x8, p[:min(n, 2)])
				ws.conn.Close()
				if n >= 2 {
					return nil, fmt.Errorf("%w: status %d %s", ErrWSClosed, binary.BigEndian.Uint16(p[:2]), p[2:n])
				}
				return nil, ErrWSClosed
			}
			continue
		}
		start := len(msg)
		msg = append(msg, make([]byte, n)...)
		if _, err := io.ReadFull(ws.br, msg[start:]); err != nil {
			return nil, err
		}
		if fin {
			ws.msg = msg
			return msg, nil
		}
	}
}

// Close ends the connection without the close handshake.
func (ws *WS) Close() error {
	return ws.conn.Close()
}
