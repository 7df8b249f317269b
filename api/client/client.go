// Package client is a Go client of presencehub's websocket stream
// (GET /v1/stream). It dials, subscribes, applies snapshots and changes to a
// local map per subscription, resumes with "since" after a drop, and reports
// gaps (a jump in seq that the server did not mark as conflated), which it
// repairs by resubscribing from the last applied position.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/hub/wire"
)

// User is one user as the stream reports it.
type User = wire.User

// Frame is any frame the server sends.
type Frame = wire.Frame

// Options configure a Client.
type Options struct {
	// URL of the stream, e.g. ws://127.0.0.1:8080/v1/stream.
	URL string
	// Token is sent as "Authorization: Bearer <Token>".
	Token string
	// OnFrame, if set, is called for every frame received, after it is applied.
	// It runs on the client's reader goroutine: keep it short.
	OnFrame func(f *Frame, received time.Time)
	// OnState, if set, is called with "connecting", "live" or "reconnecting".
	OnState func(state string)
	Logger  *slog.Logger
	// HTTPClient dials the websocket (optional).
	HTTPClient *http.Client
}

// Client keeps one connection and its subscriptions alive.
type Client struct {
	opts Options

	mu   sync.Mutex
	subs map[string]*Sub
	conn *websocket.Conn
}

// Sub is one subscription and its local copy of the presence.
type Sub struct {
	ID         string
	AccountSID string
	Users      []string

	mu       sync.Mutex
	state    map[string]User
	epoch    string
	seq      uint64
	synced   bool
	gaps     int
	resumes  int
	snaps    int
	lastErr  *Frame
	syncedCh chan struct{}
}

// New returns a client; call Run to connect.
func New(opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{opts: opts, subs: make(map[string]*Sub)}
}

// Subscribe adds a subscription (sent now if connected, and after every
// reconnect). users is an optional watchlist.
func (c *Client) Subscribe(id, accountSID string, users ...string) *Sub {
	s := &Sub{ID: id, AccountSID: accountSID, Users: users, state: make(map[string]User), syncedCh: make(chan struct{})}
	c.mu.Lock()
	c.subs[id] = s
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		_ = c.send(context.Background(), conn, s)
	}
	return s
}

// Run connects and keeps the connection, reconnecting with backoff, until ctx
// is done.
func (c *Client) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		c.state("connecting")
		err := c.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) && (ce.Code == websocket.StatusPolicyViolation) {
			c.opts.Logger.Warn("stream closed by server", "reason", ce.Reason)
		}
		c.state("reconnecting")
		c.opts.Logger.Debug("stream dropped; reconnecting", "err", err, "in", backoff)
		t := time.NewTimer(backoff + time.Duration(rand.Int64N(int64(backoff/2)+1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Client) state(s string) {
	if c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

func (c *Client) session(ctx context.Context) error {
	h := http.Header{}
	if c.opts.Token != "" {
		h.Set("Authorization", "Bearer "+c.opts.Token)
	}
	conn, resp, err := websocket.Dial(ctx, c.opts.URL, &websocket.DialOptions{HTTPHeader: h, HTTPClient: c.opts.HTTPClient})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial: %s: %w", resp.Status, err)
		}
		return fmt.Errorf("dial: %w", err)
	}
	conn.SetReadLimit(64 << 20)
	defer conn.CloseNow()
	c.mu.Lock()
	c.conn = conn
	subs := make([]*Sub, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	for _, s := range subs {
		if err := c.send(ctx, conn, s); err != nil {
			return err
		}
	}
	c.state("live")
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		f := &Frame{}
		if err := json.Unmarshal(data, f); err != nil {
			return fmt.Errorf("bad frame from server: %w", err)
		}
		f.Raw = data
		c.mu.Lock()
		s := c.subs[f.ID]
		c.mu.Unlock()
		if s != nil && s.apply(f) {
			// A gap: ask again from the last applied position.
			_ = conn.Write(ctx, websocket.MessageText, mustJSON(wire.Request{Type: wire.TypeUnsubscribe, ID: s.ID}))
			if err := c.send(ctx, conn, s); err != nil {
				return err
			}
		}
		if c.opts.OnFrame != nil {
			c.opts.OnFrame(f, now)
		}
	}
}

func (c *Client) send(ctx context.Context, conn *websocket.Conn, s *Sub) error {
	req := wire.Request{Type: wire.TypeSubscribe, ID: s.ID, AccountSID: s.AccountSID, Users: s.Users}
	s.mu.Lock()
	if s.epoch != "" {
		req.Since = &wire.Position{Epoch: s.epoch, Seq: s.seq}
	}
	s.mu.Unlock()
	return conn.Write(ctx, websocket.MessageText, mustJSON(req))
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// apply updates the local state; it returns true when a gap was detected.
func (s *Sub) apply(f *Frame) (gap bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Type {
	case wire.TypeSnapshot:
		s.state = make(map[string]User, len(f.Users))
		for _, u := range f.Users {
			if u.RegisteredStatus == wire.StatusActive || len(s.Users) > 0 {
				s.state[u.Name] = u
			}
		}
		s.epoch, s.seq = f.Epoch, f.Seq
		s.snaps++
		s.markSynced()
	case wire.TypeResumed:
		s.epoch, s.seq = f.Epoch, f.Seq
		s.resumes++
		s.markSynced()
	case wire.TypeChange:
		if f.Seq != s.seq+1 && !(f.Conflated && f.Seq > s.seq) {
			s.gaps++
			return true
		}
		s.seq = f.Seq
		if f.User == nil {
			return false
		}
		if f.User.RegisteredStatus == wire.StatusActive || len(s.Users) > 0 {
			s.state[f.User.Name] = *f.User
		} else {
			delete(s.state, f.User.Name)
		}
	case wire.TypeError:
		s.lastErr = f
	}
	return false
}

func (s *Sub) markSynced() {
	if !s.synced {
		s.synced = true
		close(s.syncedCh)
	}
}

// Synced is closed once the first snapshot (or resume) has arrived.
func (s *Sub) Synced() <-chan struct{} { return s.syncedCh }

// State returns a copy of the local presence: for whole-account
// subscriptions the registered users; for watchlists every watched user.
func (s *Sub) State() map[string]User {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]User, len(s.state))
	for k, v := range s.state {
		out[k] = v
	}
	return out
}

// Position returns the epoch and the last applied seq.
func (s *Sub) Position() (epoch string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.seq
}

// Stats returns how many gaps were detected, resumes served and snapshots received.
func (s *Sub) Stats() (gaps, resumes, snapshots int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gaps, s.resumes, s.snaps
}

// Err returns the last error frame received for this subscription, if any.
func (s *Sub) Err() *Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}
