package store

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards a loopback port to target and can be cut and restored,
// so a test can take PostgreSQL away from one client and give it back.
type tcpProxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, addr: "127.0.0.1:0"}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
}

// down closes the listener and every forwarded connection.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestHistoryOutage takes PostgreSQL away from the writer: changes wait in
// the buffer and are written, none lost, when it comes back.
func TestHistoryOutage(t *testing.T) {
	direct, dbURL := openTestDB(t)
	ctx := context.Background()
	acct := mustAccount(t, direct, mustSP(t, direct, "sp"), "acct", "example.com")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	viaProxy := openDB(t, u.String(), testKey)

	clk := &testClock{t: time.Now().Truncate(time.Millisecond)}
	rig := startHistory(t, viaProxy, clk, HistoryOptions{Linger: time.Millisecond})
	alice := sipReg("alice", "example.com", "sip:203.0.113.1:4000", clk.Now())
	rig.apply(t, 1, put(alice))

	proxy.down()
	clk.Add(time.Second)
	bob := sipReg("bob", "example.com", "sip:203.0.113.2:4000", clk.Now())
	rig.sink.Update(put(bob)) // the hub does not wait for the writer
	clk.Add(time.Second)
	rig.sink.Update(gone(alice.AOR()))
	eventually(t, "the writer to fail against the missing database", func() bool { return rig.hist.Metrics.Failures.Load() > 0 })
	if got := rig.hist.Metrics.Changes.Load(); got != 1 {
		t.Fatalf("changes written while PostgreSQL was away: %d, want 1", got)
	}

	proxy.up()
	deadline := time.Now().Add(15 * time.Second) // the writer backs off up to 5s
	for rig.hist.Metrics.Changes.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after PostgreSQL came back: %d changes written, want 3", rig.hist.Metrics.Changes.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, _, err := direct.RegistrationHistory(ctx, acct.SID, HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	checkSessions(t, "after the outage", got, []sessionWant{
		{name: "bob", proxy: bob.Proxy, open: true},
		{name: "alice", proxy: alice.Proxy, reason: EndUnregistered},
	})
	if d := rig.hist.Metrics.Dropped.Load(); d != 0 {
		t.Errorf("dropped %d changes, want 0 (the buffer was large enough)", d)
	}
}
