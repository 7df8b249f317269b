package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/hub/wire"
	"github.com/presencehub/presencehub/store"
)

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
// subscriptions to accounts' presence. The server closes it with (see README):
//
//	1000 normal closure        the client closed, or unsubscribed everything and closed
//	1001 going away            the server is shutting down
//	1008 policy violation      the client did not answer pings, or could not take frames within the write timeout
//	1009 message too big       a client frame exceeded the read limit
//	1011 internal error        unexpected server error
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
		lh := &leanHijacker{ResponseWriter: w}
		c, err := websocket.Accept(lh, r, &websocket.AcceptOptions{InsecureSkipVerify: !viaCookie})
		if err != nil {
			s.log.Debug("websocket upgrade refused", "err", err)
			return
		}
		c.SetReadLimit(s.stream.ReadLimit)
		s.stats.accepted.Add(1)
		s.stats.connections.Add(1)
		sc := &streamConn{s: s, c: c, fc: lh.conn, p: p, subs: make(map[string]*streamSub)}
		// The connection's reader runs in a goroutine of its own and this
		// handler returns: net/http then lets go of the request, its
		// headers and its connection state, which an idle websocket
		// would otherwise keep for its whole life.
		go sc.serve()
	})
}

// Buffer sizes of a stream connection. net/http hands a hijacked
// connection 4 KiB buffers each way, which coder/websocket keeps for the
// connection's life: 8 KiB of every idle subscriber. Client frames are small
// and rare; a change frame is a few hundred bytes and fits the write buffer
// whole (one write per frame); bigger frames (snapshots) go around it.
const (
	streamReadBuffer  = 256
	streamWriteBuffer = 1024
)

// leanHijacker gives coder/websocket small buffers when it hijacks the
// connection (see streamReadBuffer), and a frameConn in place of the bare
// connection (kept in conn).
type leanHijacker struct {
	http.ResponseWriter
	conn *frameConn
}

func (w *leanHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	raw, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	conn := &frameConn{Conn: raw}
	w.conn = conn
	br := bufio.NewReaderSize(conn, streamReadBuffer)
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent before the upgrade's answer (net/http's
		// background read may have taken the first byte of a frame). They
		// must be in the new buffer, not behind it: coder/websocket keeps
		// what is buffered and re-seats the reader on the bare connection.
		b, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn), max(n, streamReadBuffer))
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, streamWriteBuffer)), nil
}

// frameConn is a stream connection shared by two writers: coder/websocket,
// which reads client frames and writes the control frames (pong, ping,
// close), and the stream's flush, which writes the data frames itself so
// that all frames queued for a socket go out in one write (writev) instead
// of one write(2) each. Every write coder/websocket makes is one whole
// frame: it writes control frames only (at most 131 bytes, inside its
// write buffer, flushed after each), so locking each Write keeps the two
// writers' frames apart. After a close frame no data frame may follow.
type frameConn struct {
	net.Conn
	mu        sync.Mutex
	closeSent bool
}

// Write is coder/websocket's: one control frame.
func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == 0x8 { // opcode close
		c.closeSent = true
	}
	return c.Conn.Write(p)
}

// writeFrames writes whole frames in one go, before deadline. An error
// leaves the connection unusable: the caller closes it.
func (c *frameConn) writeFrames(bufs *net.Buffers, deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return net.ErrClosed
	}
	if err := c.Conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if _, err := bufs.WriteTo(c.Conn); err != nil {
		return err
	}
	// coder/websocket's own writes (pongs, close) have no deadline of ours.
	return c.Conn.SetWriteDeadline(time.Time{})
}

// appendFrameHeader appends the header of a final, unmasked text frame of
// n payload bytes (RFC 6455 5.2: a server never masks).
func appendFrameHeader(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		return append(b, 0x81, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// batchPool holds the buffers a flush gathers its small frames in: taken
// for one round and given back, so an idle connection holds none.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// Frames bigger than this are not copied into the batch buffer but written
// from where they are (writev).
const batchCopyMax = 4 << 10

// streamPrincipal authenticates an upgrade: bearer key, single-use ticket or
// dashboard session cookie (viaCookie true).
func (s *server) streamPrincipal(r *http.Request) (p store.Principal, viaCookie bool, err error) {
	if token, ok := bearer(r); ok {
		p, err = s.authenticate(r, s.lim.proxies.ClientIP(r), token)
		return p, false, err
	}
	if t := r.URL.Query().Get("ticket"); t != "" {
		if p, ok := s.tickets.redeem(t); ok {
			return p, false, nil
		}
		return p, false, store.ErrUnauthorized
	}
	ck, err := r.Cookie(store.SecureCookiePrefix + store.SessionCookie) // the dashboard's name when cookies are Secure
	if err != nil {
		ck, err = r.Cookie(store.SessionCookie)
	}
	if err == nil && ck.Value != "" {
		p, err = s.dir.Session(r.Context(), ck.Value)
		return p, true, err
	}
	return p, false, &apiError{http.StatusUnauthorized, "missing credentials: send Authorization: Bearer <key>, ?ticket=<ticket> or the dashboard session cookie"}
}

// streamConn is one websocket connection. Its only long-lived goroutine is
// the one reading client frames (the handler's). Writing happens in a
// goroutine started on demand when there is something to send and ended
// when the queues are empty, so an idle connection costs no writer stack;
// pings run from a runtime timer the same way.
type streamConn struct {
	s  *server
	c  *websocket.Conn
	fc *frameConn // data frames are written here, batched (see frameConn)
	p  store.Principal

	writing atomic.Bool // a flush goroutine is running
	pending atomic.Bool // more was queued while it ran
	ping    *time.Timer

	mu     sync.Mutex
	out    [][]byte // frames queued by the reader (snapshots, errors), written before subscription items
	subs   map[string]*streamSub
	order  []*streamSub // subs in subscription order, for the writer
	closed bool

	// owned by the flush goroutine (one at a time)
	items []hub.Item
}

type streamSub struct {
	id         string
	accountSID string
	sub        *hub.Subscription
	prefix     []byte // wire.AppendChangePrefix, written before each change's Body
	conflated  []byte // the same with "conflated":true
}

func (sc *streamConn) serve() {
	// Not the request's context: net/http cancels that when the handler
	// returns. The connection ends when the client or the server closes it.
	ctx := context.Background()
	// The first ping comes after a random part of the interval: connections
	// made together (a reconnecting fleet) do not ping together ever after.
	first := sc.s.stream.PingInterval/2 + rand.N(sc.s.stream.PingInterval/2+1)
	sc.ping = time.AfterFunc(first, sc.heartbeat)
	defer func() {
		sc.s.stats.connections.Add(-1)
		sc.s.stats.disconnects.Add(1)
		sc.ping.Stop()
		sc.mu.Lock()
		sc.closed = true
		subs := sc.subs
		sc.subs, sc.order, sc.out = nil, nil, nil
		sc.mu.Unlock()
		for _, ss := range subs {
			ss.sub.Close()
		}
		sc.c.Close(websocket.StatusNormalClosure, "")
	}()
	for {
		_, data, err := sc.c.Read(ctx)
		if err != nil {
			return
		}
		sc.handle(ctx, data)
	}
}

// heartbeat pings the client; no pong within the write timeout closes the
// connection (1008).
func (sc *streamConn) heartbeat() {
	ctx, cancel := context.WithTimeout(context.Background(), sc.s.stream.WriteTimeout)
	defer cancel()
	if err := sc.c.Ping(ctx); err != nil {
		sc.c.Close(websocket.StatusPolicyViolation, "no pong")
		return
	}
	sc.mu.Lock()
	if !sc.closed {
		sc.ping.Reset(sc.s.stream.PingInterval)
	}
	sc.mu.Unlock()
}

func (sc *streamConn) handle(ctx context.Context, data []byte) {
	var f wire.Request
	if err := json.Unmarshal(data, &f); err != nil {
		sc.fail("", wire.CodeBadRequest, "frame is not a valid message: "+jsonProblem(err))
		return
	}
	if len(f.ID) > 128 {
		sc.fail("", wire.CodeBadRequest, "id is longer than 128 characters")
		return
	}
	switch f.Type {
	case wire.TypeSubscribe:
		sc.subscribe(ctx, f)
	case wire.TypeUnsubscribe:
		sc.mu.Lock()
		ss := sc.subs[f.ID]
		if ss != nil {
			delete(sc.subs, f.ID)
			sc.order = removeSub(sc.order, ss)
		}
		sc.mu.Unlock()
		if ss == nil {
			sc.fail(f.ID, wire.CodeNotFound, "no subscription with this id")
			return
		}
		ss.sub.Close()
		sc.queue(wire.AppendUnsubscribed(nil, f.ID))
	default:
		sc.fail(f.ID, wire.CodeBadRequest, `type must be "subscribe" or "unsubscribe"`)
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

func (sc *streamConn) subscribe(ctx context.Context, f wire.Request) {
	if f.ID == "" {
		sc.fail("", wire.CodeBadRequest, "subscribe needs an id")
		return
	}
	if len(f.Users) > maxNames {
		sc.fail(f.ID, wire.CodeBadRequest, "at most "+strconv.Itoa(maxNames)+" users per subscription")
		return
	}
	sc.mu.Lock()
	_, dup := sc.subs[f.ID]
	n := len(sc.subs)
	sc.mu.Unlock()
	if dup {
		sc.fail(f.ID, wire.CodeBadRequest, "a subscription with this id exists already")
		return
	}
	if n >= sc.s.stream.MaxSubs {
		sc.fail(f.ID, wire.CodeBadRequest, "too many subscriptions on this connection")
		return
	}
	actx := withPrincipal(ctx, sc.p)
	a, err := sc.s.account(actx, f.AccountSID)
	if err != nil {
		switch status, message, ok := problem(err); {
		case !ok || status == http.StatusUnauthorized || status == http.StatusConflict:
			sc.s.log.Error("stream subscribe failed", "err", err)
			sc.fail(f.ID, wire.CodeInternal, "internal error")
		case status == http.StatusForbidden:
			sc.fail(f.ID, wire.CodeForbidden, message)
		case status == http.StatusNotFound:
			sc.fail(f.ID, wire.CodeNotFound, "no account with this sid")
		default:
			sc.fail(f.ID, wire.CodeBadRequest, message)
		}
		return
	}
	if a.SIPRealm == "" {
		sc.fail(f.ID, wire.CodeBadRequest, "account does not have sip_realm configuration")
		return
	}
	req := hub.SubscribeRequest{Realm: a.SIPRealm, Users: f.Users, Notify: sc.signal}
	if f.Since != nil {
		req.Since = &hub.Position{Epoch: f.Since.Epoch, Seq: f.Since.Seq}
	}
	sub, st := sc.s.pres.Subscribe(req)
	ss := &streamSub{id: f.ID, accountSID: a.SID, sub: sub}
	ss.prefix = wire.AppendChangePrefix(nil, f.ID, a.SID, false)
	ss.conflated = wire.AppendChangePrefix(nil, f.ID, a.SID, true)

	var frames [][]byte
	if st.Resumed {
		frames = append(frames, wire.AppendResumed(nil, f.ID, a.SID, f.Since.Epoch, f.Since.Seq))
		for _, c := range st.Missed {
			frames = append(frames, append(append([]byte(nil), ss.prefix...), c.Body...))
		}
	} else {
		frames = append(frames, snapshotFrame(ss, st.Snapshot, f.Since != nil, false))
	}
	sc.mu.Lock()
	if sc.closed { // connection ended meanwhile
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
	h := wire.Snapshot{ID: ss.id, AccountSID: ss.accountSID, Epoch: snap.Epoch, Seq: snap.Seq, NotResumed: notResumed, Resync: resync}
	return wire.AppendSnapshot(make([]byte, 0, wire.SnapshotSize(snap.Users)), &h, snap.Users)
}

// fail queues an error frame; the connection stays up.
func (sc *streamConn) fail(id, code, message string) {
	sc.s.stats.badMessages.Add(1)
	sc.queue(wire.AppendError(nil, id, code, message))
}

func (sc *streamConn) queue(frame []byte) {
	sc.mu.Lock()
	sc.out = append(sc.out, frame)
	sc.mu.Unlock()
	sc.signal()
}

// signal makes sure a flush runs after this call.
func (sc *streamConn) signal() {
	if sc.writing.CompareAndSwap(false, true) {
		go sc.flush()
		return
	}
	sc.pending.Store(true)
}

// flush writes until nothing is queued, then ends. At most one runs at a
// time (writing); a signal that arrives while it runs sets pending, which
// makes it go round once more.
func (sc *streamConn) flush() {
	for {
		sc.pending.Store(false)
		if !sc.flushOnce() {
			return // the connection is being closed; writing stays set
		}
		if sc.pending.Load() {
			continue
		}
		sc.writing.Store(false)
		if !sc.pending.Load() || !sc.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

// flushOnce writes the reader's frames first, then drains every
// subscription; a subscriber that fell behind gets a fresh snapshot. It
// returns false when the connection must end.
func (sc *streamConn) flushOnce() bool {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return false
	}
	out := sc.out
	sc.out = nil
	subs := append([]*streamSub(nil), sc.order...)
	sc.mu.Unlock()
	// One deadline for what this round writes: a client that cannot take
	// it within the write timeout is too slow.
	return sc.flushFrames(time.Now().Add(sc.s.stream.WriteTimeout), out, subs)
}

// frameBatch gathers one round's frames for a single write: small frames
// are copied into buf (header and payload), big ones are referenced.
type frameBatch struct {
	sc     *streamConn
	pooled *[]byte
	buf    []byte
	bufs   net.Buffers
	frames uint64
}

func (b *frameBatch) add(prefix, body []byte) {
	n := len(prefix) + len(body)
	b.frames++
	if n <= batchCopyMax {
		b.buf = appendFrameHeader(b.buf, n)
		b.buf = append(append(b.buf, prefix...), body...)
		return
	}
	b.cut()
	b.bufs = append(b.bufs, appendFrameHeader(make([]byte, 0, 10), n))
	if len(prefix) > 0 {
		b.bufs = append(b.bufs, prefix)
	}
	b.bufs = append(b.bufs, body)
}

// cut ends the copied part so far, so that referenced frames keep their
// place in the order.
func (b *frameBatch) cut() {
	if len(b.buf) > 0 {
		b.bufs = append(b.bufs, b.buf)
		b.buf = b.buf[len(b.buf):]
	}
}

// send writes what was gathered; false when the client is too slow.
func (b *frameBatch) send(deadline time.Time) bool {
	b.cut()
	if len(b.bufs) == 0 {
		return true
	}
	err := b.sc.fc.writeFrames(&b.bufs, deadline)
	b.bufs = b.bufs[:0]
	if err != nil {
		b.sc.slow()
		return false
	}
	b.sc.s.stats.frames.Add(b.frames)
	b.frames = 0
	return true
}

// release gives the pooled buffer back (as it was taken: a burst that
// outgrew it leaves its bigger buffer to the garbage collector).
func (b *frameBatch) release() {
	batchPool.Put(b.pooled)
	b.bufs, b.buf, b.pooled = nil, nil, nil
}

// flushFrames writes one round's frames: the reader's, then every
// subscription's changes (and a fresh snapshot for one that fell behind),
// all in one write.
func (sc *streamConn) flushFrames(deadline time.Time, out [][]byte, subs []*streamSub) bool {
	pooled := batchPool.Get().(*[]byte)
	// b.buf is only ever appended to or resliced past what was cut, so the
	// parts already in b.bufs are never overwritten.
	b := frameBatch{sc: sc, pooled: pooled, buf: (*pooled)[:0]}
	defer b.release()
	for _, f := range out {
		b.add(nil, f)
	}
	for _, ss := range subs {
		var resync, closed bool
		sc.items, resync, closed = ss.sub.Next(sc.items)
		if closed {
			sc.mu.Lock()
			ended := sc.closed || sc.subs[ss.id] != ss
			sc.mu.Unlock()
			if ended { // unsubscribed meanwhile
				continue
			}
			if !b.send(deadline) {
				return false
			}
			sc.c.Close(websocket.StatusGoingAway, "server shutting down")
			return false
		}
		for _, it := range sc.items {
			p := ss.prefix
			if it.Conflated {
				p = ss.conflated
			}
			b.add(p, it.Change.Body)
		}
		clear(sc.items)
		if resync {
			sc.s.stats.resyncs.Add(1)
			b.add(nil, snapshotFrame(ss, ss.sub.Resnapshot(), false, true))
		}
	}
	if cap(sc.items) > 1024 {
		sc.items = nil
	}
	return b.send(deadline)
}

// slow disconnects a client that could not take its frames in time (1008).
func (sc *streamConn) slow() {
	sc.mu.Lock()
	closing := sc.closed
	sc.mu.Unlock()
	if !closing {
		sc.s.stats.slowDisconnects.Add(1)
		sc.c.Close(websocket.StatusPolicyViolation, "client too slow")
	}
}
