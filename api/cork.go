package api

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxCork bounds what a corked connection holds before it writes through.
const maxCork = 256 << 10

// corkConn lets the stream's writer gather the frames of one flush round
// and hand them to the kernel in one write instead of one per frame: the
// websocket library flushes after every message, and at tens of thousands
// of frames per second those write(2) calls were most of the server's CPU.
// Outside a round (pings, close frames) writes go straight through.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked && len(c.buf)+len(p) <= maxCork {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what was gathered, giving up at deadline.
func (c *corkConn) uncork(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(deadline)
	err := c.flushLocked()
	_ = c.Conn.SetWriteDeadline(time.Time{})
	return err
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if cap(c.buf) > 64<<10 { // don't keep a burst's buffer on an idle connection
		c.buf = nil
	}
	return err
}

// corkWriter hands the websocket library a corkConn when it hijacks the
// connection.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: conn}
	// net/http's writer of a hijacked connection is new and empty; write
	// through the corkConn instead.
	brw.Writer = bufio.NewWriter(w.conn)
	return w.conn, brw, nil
}
