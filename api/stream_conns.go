package api

import (
	"context"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/store"
	"golang.org/x/time/rate"
)

// streamConns is the set of open stream connections, for what concerns
// them all: re-checking their authorisation when keys or sessions change,
// the per-key and per-address caps, and closing them on shutdown.
type streamConns struct {
	mu        sync.Mutex
	conns     map[*streamConn]struct{}
	keys      map[string]*keyConns // by api_key_sid
	upgrading map[string]int       // unauthenticated upgrades in progress, by client IP
	shutting  bool

	watchOnce sync.Once
	stop      chan struct{} // closed by Shutdown; ends the watch of AuthChanged
}

// keyConns is one key's open sockets and its subscribe bucket.
type keyConns struct {
	sid     string
	n       int
	limiter *rate.Limiter
}

func newStreamConns() *streamConns {
	return &streamConns{
		conns:     make(map[*streamConn]struct{}),
		keys:      make(map[string]*keyConns),
		upgrading: make(map[string]int),
		stop:      make(chan struct{}),
	}
}

func (c *streamConns) isShuttingDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shutting
}

// beginUpgrade counts an unauthenticated upgrade from ip; false when ip
// has max of them in progress already.
func (c *streamConns) beginUpgrade(ip string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upgrading[ip] >= max {
		return false
	}
	c.upgrading[ip]++
	return true
}

func (c *streamConns) endUpgrade(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upgrading[ip]--; c.upgrading[ip] <= 0 {
		delete(c.upgrading, ip)
	}
}

// addKeyConn counts a socket of key; nil when the key has max open
// already. The key's subscribe bucket lives as long as it has sockets.
func (c *streamConns) addKeyConn(key string, max int, r float64, burst int) *keyConns {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.keys[key]
	if k == nil {
		k = &keyConns{sid: key, limiter: rate.NewLimiter(rate.Limit(r), burst)}
		c.keys[key] = k
	}
	if k.n >= max {
		if k.n == 0 {
			delete(c.keys, key)
		}
		return nil
	}
	k.n++
	return k
}

func (c *streamConns) removeKeyConn(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.keys[key]; k != nil {
		if k.n--; k.n <= 0 {
			delete(c.keys, key)
		}
	}
}

// add registers sc; false when the server is shutting down.
func (c *streamConns) add(sc *streamConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutting {
		return false
	}
	c.conns[sc] = struct{}{}
	return true
}

func (c *streamConns) remove(sc *streamConn) {
	c.mu.Lock()
	delete(c.conns, sc)
	c.mu.Unlock()
}

func (c *streamConns) all() []*streamConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*streamConn, 0, len(c.conns))
	for sc := range c.conns {
		out = append(out, sc)
	}
	return out
}

// startAuthWatch starts, once, the goroutine that re-checks every
// connection when keys or sessions change (a key deleted, a session
// signed out, an account deleted with its keys, in this process or,
// through PostgreSQL's NOTIFY, in another). It ends at Shutdown.
func (s *server) startAuthWatch() {
	s.conns.watchOnce.Do(func() {
		ch := s.auth.AuthChanged()
		go func() {
			for {
				select {
				case <-ch:
				case <-s.conns.stop:
					return
				}
				// Taken before the pass: a change during it is not missed.
				ch = s.auth.AuthChanged()
				s.recheckAll()
			}
		}()
	})
}

// recheckAll re-checks every open connection, asking the directory once
// per credential and account.
func (s *server) recheckAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := &recheckMemo{creds: map[credential]checked{}, accounts: map[string]accountAnswer{}}
	for _, sc := range s.conns.all() {
		sc.recheck(ctx, m)
	}
}

// recheckMemo remembers a pass's answers: ten thousand sockets of one key
// cost one check.
type recheckMemo struct {
	creds    map[credential]checked
	accounts map[string]accountAnswer
}

type checked struct {
	p   store.Principal
	err error
}

type accountAnswer struct {
	a   store.Account
	err error
}

// check is s.check, memoised when m is not nil.
func (m *recheckMemo) check(ctx context.Context, s *server, cred credential) (store.Principal, error) {
	if m == nil {
		return s.check(ctx, cred)
	}
	if c, ok := m.creds[cred]; ok {
		return c.p, c.err
	}
	p, err := s.check(ctx, cred)
	m.creds[cred] = checked{p, err}
	return p, err
}

// account is s.accounts.Account, memoised when m is not nil.
func (m *recheckMemo) account(ctx context.Context, s *server, sid string) (store.Account, error) {
	if m == nil {
		return s.accounts.Account(ctx, sid)
	}
	if a, ok := m.accounts[sid]; ok {
		return a.a, a.err
	}
	a, err := s.accounts.Account(ctx, sid)
	m.accounts[sid] = accountAnswer{a, err}
	return a, err
}

// shutdown refuses new stream connections and closes every open one with
// 1001 (going away), subscribed or not, waiting up to the close
// handshake's bound.
func (s *server) shutdown() {
	c := s.conns
	c.mu.Lock()
	if c.shutting {
		c.mu.Unlock()
		return
	}
	c.shutting = true
	close(c.stop)
	conns := make([]*streamConn, 0, len(c.conns))
	for sc := range c.conns {
		conns = append(conns, sc)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, sc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.mu.Lock()
			sc.closed = true // the writer stops; nothing more is queued
			sc.mu.Unlock()
			sc.c.Close(websocket.StatusGoingAway, "server shutting down")
		}()
	}
	wg.Wait()
}
