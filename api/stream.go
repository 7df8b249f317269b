package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// Close codes of the stream (see README):
//
//	1000 normal closure        the client closed, or unsubscribed everything and closed
//	1001 going away            the server is shutting down
//	1008 policy violation      the client did not answer pings, or could not take frames within the write timeout
//	1009 message too big       a client frame exceeded the read limit
//	1011 internal error        unexpected server error
const sessionCookie = "ph_session"

type streamStats struct {
	connections     atomic.Int64
	accepted        atomic.Uint64
	disconnects     atomic.Uint64
	slowDisconnects atomic.Uint64
	frames          atomic.Uint64
	resyncs         atomic.Uint64
	badMessages     atomic.Uint64
}

// handleStream upgrades GET /v1/stream to a websocket that carries
// subscriptions to accounts' presence.
func (s *server) handleStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("access_token") || q.Has("api_key") || q.Has("token") {
			encode(w, http.StatusBadRequest, msg{"API keys never go into a URL: send Authorization: Bearer <key>, or get a ticket from POST /v1/StreamTickets and pass ?ticket="})
			return
		}
		p, viaCookie, err := s.streamPrincipal(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		// Cookie-authenticated upgrades come from the dashboard: the library
		// then requires Origin to match the Host (no cross-site hijacking).
		// Bearer and ticket clients prove themselves without ambient
		// credentials, so any origin may use them.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: !viaCookie})
		if err != nil {
			s.log.Debug("websocket upgrade refused", "err", err)
			return
		}
		c.SetReadLimit(s.stream.ReadLimit)
		s.stats.accepted.Add(1)
		s.stats.connections.Add(1)
		defer func() {
			s.stats.connections.Add(-1)
			s.stats.disconnects.Add(1)
		}()
		sc := &streamConn{s: s, c: c, p: p, wake: make(chan struct{}, 1), subs: make(map[string]*streamSub)}
		sc.serve(r.Context())
	})
}

// streamPrincipal authenticates an upgrade: bearer key, single-use ticket or
// dashboard session cookie (viaCookie true).
func (s *server) streamPrincipal(r *http.Request) (p store.Principal, viaCookie bool, err error) {
	if token, ok := bearer(r); ok {
		p, err = s.dir.Authenticate(r.Context(), token)
		return p, false, err
	}
	if t := r.URL.Query().Get("ticket"); t != "" {
		if p, ok := s.tickets.redeem(t); ok {
			return p, false, nil
		}
		return p, false, store.ErrUnauthorized
	}
	if ck, err := r.Cookie(sessionCookie); err == nil && ck.Value != "" {
		p, err = s.dir.Session(r.Context(), ck.Value)
		return p, true, err
	}
	return p, false, &apiError{http.StatusUnauthorized, "missing credentials: send Authorization: Bearer <key>, ?ticket=<ticket> or the dashboard session cookie"}
}

type streamConn struct {
	s    *server
	c    *websocket.Conn
	p    store.Principal
	wake chan struct{}

	mu    sync.Mutex
	out   [][]byte // frames queued by the reader (snapshots, errors), written before subscription items
	subs  map[string]*streamSub
	order []*streamSub // subs in subscription order, for the writer
	buf   []byte       // writer's frame buffer
}

type streamSub struct {
	id         string
	accountSID string
	sub        *hub.Subscription
	prefix     []byte // {"type":"change","id":…,"account_sid":…,
	conflated  []byte // the same with "conflated":true
}

func (sc *streamConn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.writeLoop(ctx, cancel)
	}()
	defer func() {
		cancel(nil)
		<-done
		sc.mu.Lock()
		for _, ss := range sc.subs {
			ss.sub.Close()
		}
		sc.subs = nil
		sc.mu.Unlock()
	}()
	for {
		_, data, err := sc.c.Read(ctx)
		if err != nil {
			return
		}
		sc.handle(ctx, data)
	}
}

type clientFrame struct {
	Type       string   `json:"type"`
	ID         string   `json:"id"`
	AccountSID string   `json:"account_sid"`
	Users      []string `json:"users"`
	Since      *struct {
		Epoch string `json:"epoch"`
		Seq   uint64 `json:"seq"`
	} `json:"since"`
}

func (sc *streamConn) handle(ctx context.Context, data []byte) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		sc.fail("", "bad_request", "frame is not a valid message: "+jsonProblem(err))
		return
	}
	if len(f.ID) > 128 {
		sc.fail("", "bad_request", "id is longer than 128 characters")
		return
	}
	switch f.Type {
	case "subscribe":
		sc.subscribe(ctx, f)
	case "unsubscribe":
		sc.mu.Lock()
		ss := sc.subs[f.ID]
		if ss != nil {
			delete(sc.subs, f.ID)
			sc.order = removeSub(sc.order, ss)
		}
		sc.mu.Unlock()
		if ss == nil {
			sc.fail(f.ID, "not_found", "no subscription with this id")
			return
		}
		ss.sub.Close()
		sc.queue(frameStart("unsubscribed", f.ID))
	default:
		sc.fail(f.ID, "bad_request", `type must be "subscribe" or "unsubscribe"`)
	}
}

func jsonProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return "field " + strconv.Quote(typ.Field) + " has the wrong type"
	}
	return "not a JSON object"
}

func removeSub(list []*streamSub, ss *streamSub) []*streamSub {
	for i, x := range list {
		if x == ss {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

func (sc *streamConn) subscribe(ctx context.Context, f clientFrame) {
	if f.ID == "" {
		sc.fail("", "bad_request", "subscribe needs an id")
		return
	}
	if len(f.Users) > maxNames {
		sc.fail(f.ID, "bad_request", "at most "+strconv.Itoa(maxNames)+" users per subscription")
		return
	}
	sc.mu.Lock()
	_, dup := sc.subs[f.ID]
	n := len(sc.subs)
	sc.mu.Unlock()
	if dup {
		sc.fail(f.ID, "bad_request", "a subscription with this id exists already")
		return
	}
	if n >= sc.s.stream.MaxSubs {
		sc.fail(f.ID, "bad_request", "too many subscriptions on this connection")
		return
	}
	actx := withPrincipal(ctx, sc.p)
	a, err := sc.s.account(actx, f.AccountSID)
	if err != nil {
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.status == http.StatusForbidden:
			sc.fail(f.ID, "forbidden", "insufficient permissions")
		case errors.As(err, &ae):
			sc.fail(f.ID, "bad_request", ae.msg)
		case errors.Is(err, store.ErrNotFound):
			sc.fail(f.ID, "not_found", "no account with this sid")
		default:
			sc.s.log.Error("stream subscribe failed", "err", err)
			sc.fail(f.ID, "internal", "internal error")
		}
		return
	}
	if a.SIPRealm == "" {
		sc.fail(f.ID, "bad_request", "account does not have sip_realm configuration")
		return
	}
	req := hub.SubscribeRequest{Realm: a.SIPRealm, Users: f.Users, Wake: sc.wake}
	if f.Since != nil {
		req.Since = &hub.Position{Epoch: f.Since.Epoch, Seq: f.Since.Seq}
	}
	sub, st := sc.s.pres.Subscribe(req)
	ss := &streamSub{id: f.ID, accountSID: a.SID, sub: sub}
	sid := append(appendJSON(nil, a.SID), ',')
	ss.prefix = append(append(frameStart("change", f.ID), `,"account_sid":`...), sid...)
	ss.conflated = append(append(frameStart("change", f.ID), `,"conflated":true,"account_sid":`...), sid...)

	var frames [][]byte
	if st.Resumed {
		b := append(frameStart("resumed", f.ID), `,"account_sid":`...)
		b = appendJSON(b, a.SID)
		b = append(b, `,"epoch":`...)
		b = appendJSON(b, f.Since.Epoch)
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, f.Since.Seq, 10)
		frames = append(frames, append(b, '}'))
		for _, c := range st.Missed {
			frames = append(frames, append(append([]byte(nil), ss.prefix...), c.Body...))
		}
	} else {
		frames = append(frames, snapshotFrame(ss, st.Snapshot, f.Since != nil, false))
	}
	sc.mu.Lock()
	if sc.subs == nil { // connection ended meanwhile
		sc.mu.Unlock()
		sub.Close()
		return
	}
	sc.out = append(sc.out, frames...)
	sc.subs[f.ID] = ss
	sc.order = append(sc.order, ss)
	sc.mu.Unlock()
	sc.signal()
}

// snapshotFrame encodes a snapshot; notResumed marks one sent instead of a
// requested resume, resync one sent because the subscriber fell behind.
func snapshotFrame(ss *streamSub, snap hub.Snapshot, notResumed, resync bool) []byte {
	size := 128
	for _, u := range snap.Users {
		size += len(u) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, `{"type":"snapshot","id":`...)
	b = appendJSON(b, ss.id)
	b = append(b, `,"account_sid":`...)
	b = appendJSON(b, ss.accountSID)
	b = append(b, `,"epoch":`...)
	b = appendJSON(b, snap.Epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, snap.Seq, 10)
	if notResumed {
		b = append(b, `,"resumed":false`...)
	}
	if resync {
		b = append(b, `,"resync":true`...)
	}
	b = append(b, `,"users":[`...)
	for i, u := range snap.Users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u...)
	}
	return append(b, "]}"...)
}

func frameStart(typ, id string) []byte {
	b := append([]byte(`{"type":"`), typ...)
	b = append(b, `","id":`...)
	return appendJSON(b, id)
}

func appendJSON(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// fail queues an error frame; the connection stays up.
func (sc *streamConn) fail(id, code, message string) {
	sc.s.stats.badMessages.Add(1)
	b := frameStart("error", id)
	b = append(b, `,"code":`...)
	b = appendJSON(b, code)
	b = append(b, `,"msg":`...)
	b = appendJSON(b, message)
	sc.queue(append(b, '}'))
}

func (sc *streamConn) queue(frame []byte) {
	sc.mu.Lock()
	sc.out = append(sc.out, frame)
	sc.mu.Unlock()
	sc.signal()
}

func (sc *streamConn) signal() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the only writer of the connection. It writes the reader's
// frames first, then drains every subscription; a subscriber that fell
// behind gets a fresh snapshot. It also pings the client.
func (sc *streamConn) writeLoop(ctx context.Context, cancel context.CancelCauseFunc) {
	ping := time.NewTicker(sc.s.stream.PingInterval)
	defer ping.Stop()
	var items []hub.Item
	for {
		select {
		case <-ctx.Done():
			sc.c.Close(websocket.StatusNormalClosure, "")
			return
		case <-ping.C:
			go func() {
				pctx, pcancel := context.WithTimeout(ctx, sc.s.stream.WriteTimeout)
				defer pcancel()
				if err := sc.c.Ping(pctx); err != nil && ctx.Err() == nil {
					sc.c.Close(websocket.StatusPolicyViolation, "no pong")
					cancel(err)
				}
			}()
			continue
		case <-sc.wake:
		}
		sc.mu.Lock()
		out := sc.out
		sc.out = nil
		subs := append([]*streamSub(nil), sc.order...)
		sc.mu.Unlock()
		for _, f := range out {
			if !sc.write(ctx, cancel, f) {
				return
			}
		}
		for _, ss := range subs {
			var resync, closed bool
			items, resync, closed = ss.sub.Next(items)
			if closed {
				sc.c.Close(websocket.StatusGoingAway, "server shutting down")
				cancel(errors.New("hub closed"))
				return
			}
			for _, it := range items {
				p := ss.prefix
				if it.Conflated {
					p = ss.conflated
				}
				sc.buf = append(append(sc.buf[:0], p...), it.Change.Body...)
				if !sc.write(ctx, cancel, sc.buf) {
					return
				}
			}
			clear(items)
			if resync {
				sc.s.stats.resyncs.Add(1)
				if !sc.write(ctx, cancel, snapshotFrame(ss, ss.sub.Resnapshot(), false, true)) {
					return
				}
			}
		}
	}
}

func (sc *streamConn) write(ctx context.Context, cancel context.CancelCauseFunc, frame []byte) bool {
	wctx, wcancel := context.WithTimeout(ctx, sc.s.stream.WriteTimeout)
	err := sc.c.Write(wctx, websocket.MessageText, frame)
	wcancel()
	if err != nil {
		if ctx.Err() == nil {
			sc.s.stats.slowDisconnects.Add(1)
			sc.c.Close(websocket.StatusPolicyViolation, "client too slow")
		}
		cancel(err)
		return false
	}
	sc.s.stats.frames.Add(1)
	return true
}
