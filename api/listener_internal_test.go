package api

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestLimitListener: at most n accepted connections are open; a closed
// one frees its slot once however often it is closed; closing the
// listener ends an Accept waiting for a slot; accepted connections keep
// SyscallConn (what the heartbeat reads the send queue through).
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(inner, 2)
	defer ln.Close()
	l := ln.(*limitListener)
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	dial := func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for range 4 {
		dial() // the kernel's backlog holds them until accepted
	}
	c1, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := len(l.sem); got != 2 {
		t.Fatalf("2 connections open: %d slots taken, want 2", got)
	}

	rc, ok := c1.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		t.Fatalf("accepted connection %T has no SyscallConn", c1)
	}
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	if _, err := sendQueue(raw); err != nil {
		t.Errorf("send queue of an accepted TCP connection: %v", err)
	}

	third := make(chan net.Conn)
	go func() {
		c, err := ln.Accept() // waits for a slot
		if err != nil {
			t.Error(err)
		}
		third <- c
	}()
	c1.Close()
	c1.Close() // a second Close frees nothing more
	c3 := <-third
	defer c3.Close()
	if got := len(l.sem); got != 2 {
		t.Errorf("after one of 2 was closed twice and a third accepted: %d slots taken, want 2", got)
	}

	fourth := make(chan error)
	go func() {
		c, err := ln.Accept() // no slot is free: waits until the listener closes
		if err == nil {
			c.Close()
			err = errors.New("accepted a connection past the limit")
		}
		fourth <- err
	}()
	ln.Close()
	if err := <-fourth; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept waiting for a slot when the listener closed: %v, want net.ErrClosed", err)
	}
}

// TestLimitConnWithoutSyscallConn: a connection that has no file
// descriptor (net.Pipe) reports an error, and the heartbeat pings.
func TestLimitConnWithoutSyscallConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l := &limitListener{sem: make(chan struct{}, 1), done: make(chan struct{})}
	l.sem <- struct{}{}
	c := &limitConn{Conn: a, l: l}
	if _, err := c.SyscallConn(); err == nil {
		t.Error("SyscallConn of a pipe: no error")
	}
	c.Close()
	if got := len(l.sem); got != 0 {
		t.Errorf("after Close: %d slots taken, want 0", got)
	}
}
