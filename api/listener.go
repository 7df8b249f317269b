package api

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// LimitListener returns a listener that has at most n of its accepted
// connections open at once: Accept blocks while n are open, until one is
// closed (each connection frees its slot once, on its first Close) or the
// listener is closed. It is golang.org/x/net/netutil.LimitListener with one
// difference: its connections keep SyscallConn, which the stream's
// heartbeat needs to read the socket's send queue (see
// streamConn.heartbeat); netutil's wrapper hides it.
func LimitListener(l net.Listener, n int) net.Listener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed by Close
}

func (l *limitListener) acquire() bool {
	select {
	case <-l.done:
		return false
	case l.sem <- struct{}{}:
		return true
	}
}

func (l *limitListener) release() { <-l.sem }

func (l *limitListener) Accept() (net.Conn, error) {
	if !l.acquire() {
		// Closed: Accept on the closed listener fails at once. A listener
		// that hands out a connection all the same (golang.org/issue/50216)
		// gets it closed, as netutil does, until it fails.
		for {
			c, err := l.Listener.Accept()
			if err != nil {
				return nil, err
			}
			c.Close()
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	l        *limitListener
	released atomic.Bool
}

// Close closes the connection and frees its slot (the first time).
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.released.CompareAndSwap(false, true) {
		c.l.release()
	}
	return err
}

// errNoSyscallConn: the accepted connection has no file descriptor to reach.
var errNoSyscallConn = errors.New("connection has no SyscallConn")

// SyscallConn is the accepted connection's (a *net.TCPConn's, from a TCP
// listener).
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNoSyscallConn
}
