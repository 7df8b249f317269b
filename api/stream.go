package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/hub/wire"
	"github.com/presencehub/presencehub/store"
	"golang.org/x/time/rate"
)

// Close codes of the stream (see README):
//
//	1000 normal closure        the client closed, or unsubscribed everything and closed
//	1001 going away            the server is shutting down
//	1008 policy violation      the client took no byte written to it (nor answered a ping) for the write timeout
//	1009 message too big       a client frame exceeded the read limit
//	1011 internal error        unexpected server error
//	4001 unauthorized          the credential the connection was opened with was revoked or expired
//	4008 output budget         more than the output budget was waiting to be written to the client
const (
	closeUnauthorized  websocket.StatusCode = 4001
	closeOutputBudget  websocket.StatusCode = 4008
	unauthorizedReason                      = "credential revoked or expired"
)

type streamStats struct {
	connections     atomic.Int64
	accepted        atomic.Uint64
	disconnects     atomic.Uint64
	slowDisconnects atomic.Uint64
	frames          atomic.Uint64
	pings           atomic.Uint64 // heartbeats that pinged
	pingsSkipped    atomic.Uint64 // heartbeats that did not: data flowed and was acknowledged
	resyncs         atomic.Uint64
	badMessages     atomic.Uint64

	// Budgets and authorisation (issue #9).
	budgetCloses    atomic.Uint64 // connections closed 4008
	authCloses      atomic.Uint64 // connections closed 4001
	revokedSubs     atomic.Uint64 // subscriptions ended with an unauthorized error frame
	limitRefusals   atomic.Uint64 // subscribes refused: subscription, name or budget cap
	rateLimited     atomic.Uint64 // subscribes refused by a rate limit
	namesDecoded    atomic.Uint64 // watchlist names decoded (only subscribes past the caps and limits decode theirs)
	keyConnRefusals atomic.Uint64 // upgrades refused: too many sockets for the key
	ipRefusals      atomic.Uint64 // upgrades refused: too many unauthenticated upgrades from the IP
}

// handleStream upgrades GET /v1/stream to a websocket that carries
// subscriptions to accounts' presence. The server closes it with (see README):
//
//	1000 normal closure        the client closed, or unsubscribed everything and closed
//	1001 going away            the server is shutting down
//	1008 policy violation      the client took no byte written to it (nor answered a ping) for the write timeout
//	1009 message too big       a client frame exceeded the read limit
//	1011 internal error        unexpected server error
func (s *server) handleStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("access_token") || q.Has("api_key") || q.Has("token") {
			encode(w, http.StatusBadRequest, msg{"API keys never go into a URL: send Authorization: Bearer <key>, or get a ticket from POST /v1/StreamTickets and pass ?ticket="})
			return
		}
		if s.conns.isShuttingDown() {
			encode(w, http.StatusServiceUnavailable, msg{"the server is shutting down"})
			return
		}
		// Until it has authenticated, a connection counts against its
		// client address: a flood of upgrades cannot pile up there.
		ip := remoteIP(r)
		if !s.conns.beginUpgrade(ip, s.stream.MaxUpgradesPerIP) {
			s.stats.ipRefusals.Add(1)
			refuseUpgrade(w, "too many unauthenticated stream connections from this address (at most "+strconv.Itoa(s.stream.MaxUpgradesPerIP)+"); retry later")
			return
		}
		defer s.conns.endUpgrade(ip)
		// Taken before the credential is checked: a change of keys or
		// sessions from here until the connection is in s.conns is seen by
		// no re-check pass, so it is checked again below.
		authChanged := s.auth.AuthChanged()
		p, cred, viaCookie, err := s.streamPrincipal(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		if testHookStreamChecked != nil {
			testHookStreamChecked(p)
		}
		key := s.conns.addKeyConn(p.KeySID, s.stream.MaxConnsPerKey, s.stream.KeySubscribeRate, s.stream.KeySubscribeBurst)
		if key == nil {
			s.stats.keyConnRefusals.Add(1)
			refuseUpgrade(w, "too many open stream connections for this key (at most "+strconv.Itoa(s.stream.MaxConnsPerKey)+")")
			return
		}
		// Cookie-authenticated upgrades come from the dashboard: the library
		// then requires Origin to match the Host (no cross-site hijacking).
		// Bearer and ticket clients prove themselves without ambient
		// credentials, so any origin may use them.
		lh := &leanHijacker{ResponseWriter: w, writeTimeout: s.stream.WriteTimeout}
		c, err := websocket.Accept(lh, r, &websocket.AcceptOptions{InsecureSkipVerify: !viaCookie})
		if err != nil {
			s.conns.removeKeyConn(p.KeySID)
			s.log.Debug("websocket upgrade refused", "err", err)
			return
		}
		c.SetReadLimit(s.stream.ReadLimit)
		s.stats.accepted.Add(1)
		s.stats.connections.Add(1)
		sc := &streamConn{s: s, c: c, fc: lh.conn, p: p, cred: cred, key: key, subs: make(map[string]*streamSub)}
		if !s.conns.add(sc) { // shutting down meanwhile
			s.stats.connections.Add(-1)
			s.conns.removeKeyConn(p.KeySID)
			c.Close(websocket.StatusGoingAway, "server shutting down")
			return
		}
		s.startAuthWatch()
		sc.armExpiry(p)
		// The connection's reader runs in a goroutine of its own and this
		// handler returns: net/http then lets go of the request, its
		// headers and its connection state, which an idle websocket
		// would otherwise keep for its whole life.
		go sc.serve()
		select {
		case <-authChanged:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sc.recheck(ctx, nil)
		default:
		}
	})
}

// testHookStreamChecked, when set (by tests), runs once an upgrade's
// credential has been checked.
var testHookStreamChecked func(store.Principal)

// refuseUpgrade answers an upgrade 429 with a Retry-After.
func refuseUpgrade(w http.ResponseWriter, message string) {
	w.Header().Set("Retry-After", "1")
	encode(w, http.StatusTooManyRequests, msg{message})
}

// remoteIP is the client's address without its port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Buffer sizes of a stream connection. net/http hands a hijacked
// connection 4 KiB buffers each way, which coder/websocket keeps for the
// connection's life: 8 KiB of every idle subscriber. Client frames are small
// and rare. Data frames do not go through coder/websocket's write buffer
// (the flush writes them on the frameConn itself): it carries only control
// frames (ping, pong, close: at most 2 + 125 bytes unmasked from the
// server), each of which must fit it whole so that it is one Write on the
// frameConn (see frameConn).
const (
	streamReadBuffer  = 256
	streamWriteBuffer = 256
)

// leanHijacker gives coder/websocket small buffers when it hijacks the
// connection (see streamReadBuffer), and a frameConn in place of the bare
// connection (kept in conn).
type leanHijacker struct {
	http.ResponseWriter
	writeTimeout time.Duration // the frameConn's (0: no deadline)
	conn         *frameConn
}

func (w *leanHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	raw, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	conn := &frameConn{Conn: raw, timeout: w.writeTimeout}
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			conn.raw = rc
		}
	}
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
//
// A write fails only when the client takes no byte of it for the write
// timeout (see send): a client that keeps reading, however slowly (a
// saturated machine), is not cut off; one that stops is.
type frameConn struct {
	net.Conn
	raw     syscall.RawConn // the socket, for writes that must not wait (trySend); nil: none
	timeout time.Duration   // no progress for this long fails a write; 0: no deadline

	mu        sync.Mutex
	closeSent bool
	deadline  int64 // unix ns of the write deadline set on Conn; guarded by mu

	lastWrite atomic.Int64 // unix ns when a data write last got bytes to the kernel
	inflight  atomic.Bool  // a write is blocked in the kernel (it polices itself)
}

// Write is coder/websocket's: one control frame.
func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == 0x8 { // opcode close
		c.closeSent = true
	}
	bufs := net.Buffers{p}
	n, err := c.send(&bufs, false)
	return int(n), err
}

// writeFrames writes whole frames in one go. An error leaves the
// connection unusable: the caller closes it.
func (c *frameConn) writeFrames(bufs *net.Buffers) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return net.ErrClosed
	}
	_, err := c.send(bufs, true)
	return err
}

// send writes bufs (consuming them); c.mu is held. data marks the data
// frames, whose progress is recorded (lastWrite): a ping's own write is not
// a sign that the client reads. It fails with
// os.ErrDeadlineExceeded only when the kernel has taken no byte of them for
// at least c.timeout: a deadline that passes while bytes still trickle out
// is moved on. The deadline on the connection is only moved when less than
// half of the timeout is left, not on every write.
func (c *frameConn) send(bufs *net.Buffers, data bool) (int64, error) {
	if c.timeout <= 0 {
		return bufs.WriteTo(c.Conn)
	}
	now := time.Now()
	last := now // the last progress
	if time.Duration(c.deadline-now.UnixNano()) < c.timeout/2 {
		if err := c.setDeadline(now); err != nil {
			return 0, err
		}
	}
	var total int64
	for {
		c.inflight.Store(true)
		n, err := bufs.WriteTo(c.Conn)
		c.inflight.Store(false)
		total += n
		if n > 0 || err == nil {
			now = time.Now()
			if data {
				c.lastWrite.Store(now.UnixNano())
			}
		}
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n > 0 {
			last = now
		} else if now = time.Now(); now.Sub(last) >= c.timeout {
			return total, err // no progress for the whole timeout
		}
		if err := c.setDeadline(now); err != nil {
			return total, err
		}
	}
}

func (c *frameConn) setDeadline(now time.Time) error {
	d := now.Add(c.timeout)
	c.deadline = d.UnixNano()
	return c.Conn.SetWriteDeadline(d)
}

// busySince reports whether the client took data frames' bytes from us at
// or after t, or a write is under way (a write fails by itself when the client takes
// nothing for the write timeout).
func (c *frameConn) busySince(t time.Time) bool {
	return c.inflight.Load() || c.lastWrite.Load() >= t.UnixNano()
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

// batchPool holds what a flush gathers a round's frames in (batchBufs):
// taken for one round and given back, so an idle connection holds none.
var batchPool = sync.Pool{New: func() any { return &batchBufs{buf: make([]byte, 0, 8<<10), parts: make(net.Buffers, 0, 8)} }}

// batchBufs are a round's buffers: buf for the small frames' bytes, parts
// for the slices written together.
type batchBufs struct {
	buf   []byte
	parts net.Buffers
	w     net.Buffers // what a write is consuming
}

// Frames bigger than this are not copied into the batch buffer but written
// from where they are (writev).
const batchCopyMax = 4 << 10

// credential is what a stream connection authenticated with, kept so that
// its authorisation can be checked again for as long as it is open.
type credential struct {
	session bool   // token is a dashboard session, else an API key
	token   string // a ticket's is the key that issued it
}

// check authenticates cred against the current state of keys and sessions.
func (s *server) check(ctx context.Context, cred credential) (store.Principal, error) {
	if cred.session {
		return s.auth.Session(ctx, cred.token)
	}
	return s.auth.Authenticate(ctx, cred.token)
}

// streamPrincipal authenticates an upgrade: bearer key, single-use ticket or
// dashboard session cookie (viaCookie true).
func (s *server) streamPrincipal(r *http.Request) (p store.Principal, cred credential, viaCookie bool, err error) {
	if token, ok := bearer(r); ok {
		cred = credential{token: token}
		p, err = s.authenticate(r, s.lim.proxies.ClientIP(r), token)
		return p, cred, false, err
	}
	if t := r.URL.Query().Get("ticket"); t != "" {
		tcred, ok, err := s.redeemTicket(r.Context(), t)
		if err != nil {
			return p, cred, false, err
		}
		if !ok {
			return p, cred, false, store.ErrUnauthorized
		}
		// The ticket stands for the key that issued it: check that key
		// now, it may have been revoked since.
		p, err = s.check(r.Context(), tcred)
		return p, tcred, false, err
	}
	ck, err := r.Cookie(store.SecureCookiePrefix + store.SessionCookie) // the dashboard's name when cookies are Secure
	if err != nil {
		ck, err = r.Cookie(store.SessionCookie)
	}
	if err == nil && ck.Value != "" {
		cred = credential{session: true, token: ck.Value}
		p, err = s.check(r.Context(), cred)
		return p, cred, true, err
	}
	return p, cred, false, &apiError{http.StatusUnauthorized, "missing credentials: send Authorization: Bearer <key>, ?ticket=<ticket> or the dashboard session cookie"}
}

// streamConn is one websocket connection. Its only long-lived goroutine is
// the one reading client frames. Writing happens when there is something
// to send, on a flush worker (flushQueue) or, when the client makes it
// wait, a goroutine started for it and ended when the queues are empty, so
// an idle connection costs no writer stack; pings run from a runtime timer
// the same way.
type streamConn struct {
	s    *server
	c    *websocket.Conn
	fc   *frameConn // data frames are written here, batched (see frameConn)
	cred credential
	key  *keyConns // the key's socket count and subscribe bucket

	writing  atomic.Bool // a flush is queued or running (one at a time: worker or goroutine)
	pending  atomic.Bool // more was queued while it ran
	ping     *time.Timer
	lastBeat atomic.Int64 // unix ns of the last heartbeat (0: none yet)

	// owned by the reader
	limiter *rate.Limiter // subscribes of this connection; made at the first

	mu        sync.Mutex
	p         store.Principal // as of the last check
	expiry    *time.Timer     // re-checks at p's expiry
	out       [][]byte        // frames queued by the reader (snapshots, errors), written before subscription items
	queued    int             // bytes waiting: out, plus the first snapshots not yet built
	names     int             // watched names over all subscriptions
	subs      map[string]*streamSub
	order     []*streamSub // subs in subscription order, for the writer
	closed    bool
	closeCode websocket.StatusCode // when set, the writer closes with it after writing out

	// owned by the running flush (one at a time)
	items   []hub.Item
	subsBuf []*streamSub
}

type streamSub struct {
	id         string
	accountSID string
	realm      string
	names      int // watched names (0: the whole realm)
	sub        *hub.Subscription
	prefix     []byte // wire.AppendChangePrefix, written before each change's Body
	conflated  []byte // the same with "conflated":true

	// The first snapshot is built when it is written (it is the largest
	// frame, and a client that does not read must not make us hold it).
	// Guarded by streamConn.mu.
	first      bool
	notResumed bool // the client asked to resume: the snapshot says resumed:false
	reserve    int  // its estimated size, counted in queued until it is built
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
		sc.s.conns.remove(sc)
		sc.s.conns.removeKeyConn(sc.key.sid)
		sc.ping.Stop()
		sc.mu.Lock()
		sc.closed = true
		if sc.expiry != nil {
			sc.expiry.Stop()
		}
		subs := sc.subs
		sc.subs, sc.order, sc.out = nil, nil, nil
		sc.mu.Unlock()
		for _, ss := range subs {
			ss.sub.Close()
		}
		sc.c.Close(websocket.StatusNormalClosure, "")
	}()
	for {
		buf, err := readFrame(ctx, sc.c)
		if err != nil {
			return
		}
		sc.handleOffStack(ctx, *buf)
		putFrameBuf(buf)
	}
}

// handleOffStack runs sc.handle on a short-lived goroutine and waits for
// it. The reader's goroutine lives as long as the connection, mostly
// parked in a read; its stack, once grown, is shrunk by the runtime only
// when under a quarter of it is in use, which a parked read is not. A
// subscribe (parse, checks, hub subscription) needs more than 4 KiB of
// stack, so handled here it left every idle connection holding an 8 KiB
// stack instead of 4 KiB. Client frames are few (a subscribe bucket per
// connection), so a goroutine each costs little; frames are still handled
// one at a time, in order.
func (sc *streamConn) handleOffStack(ctx context.Context, data []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.handle(ctx, data)
	}()
	<-done
}

// frameBufs holds the buffers client frames are read into. A frame is
// handled before the next is read and nothing keeps a reference to its
// bytes (parseClientFrame copies what it keeps), so a connection needs one
// buffer while it reads, none while it waits, and a client that sends many
// big frames reuses one instead of growing a fresh one for each (what
// websocket.Conn.Read does, with io.ReadAll).
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// readFrame reads the next client frame into a buffer of frameBufs (the
// connection's read limit bounds it).
func readFrame(ctx context.Context, c *websocket.Conn) (*[]byte, error) {
	_, r, err := c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	buf := frameBufs.Get().(*[]byte)
	b := (*buf)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*buf = b
			return buf, nil
		}
		if err != nil {
			*buf = b
			putFrameBuf(buf)
			return nil, err
		}
	}
}

func putFrameBuf(buf *[]byte) {
	*buf = (*buf)[:0]
	frameBufs.Put(buf)
}

// heartbeat pings the client. Its pong comes after the frames queued
// before the ping, which a client on a saturated machine may take long to
// read: it is waited for as long as the client keeps taking our bytes
// (pongWatch). A client that answers nothing and takes nothing for the
// write timeout is closed (1008).
//
// The ping is skipped when data flowing shows the peer alive (see
// ackedSince): data frames were written since the last heartbeat and the
// peer's TCP has acknowledged every byte written to the socket.
func (sc *streamConn) heartbeat() {
	since := sc.lastBeat.Swap(time.Now().UnixNano())
	if sc.ackedSince(since) {
		sc.s.stats.pingsSkipped.Add(1)
		sc.rearmPing()
		return
	}
	sc.s.stats.pings.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &pongWatch{fc: sc.fc, timeout: sc.s.stream.WriteTimeout, cancel: cancel, since: time.Now()}
	w.arm()
	err := sc.c.Ping(ctx)
	w.stop()
	if err != nil {
		sc.c.Close(websocket.StatusPolicyViolation, "no pong")
		return
	}
	sc.rearmPing()
}

// rearmPing schedules the next heartbeat, unless the connection is closed.
func (sc *streamConn) rearmPing() {
	sc.mu.Lock()
	if !sc.closed {
		sc.ping.Reset(sc.s.stream.PingInterval)
	}
	sc.mu.Unlock()
}

// ackedSince reports whether the peer shows itself alive without a ping:
// data frames were written to the socket after since (the previous
// heartbeat, unix ns; 0 for the first) and the socket's send queue is
// empty, so the peer's TCP acknowledged every byte we wrote, those frames
// included. A ping proves no more than that: the pong, too, is seen as
// soon as the peer's stack and websocket reader take bytes, and what
// catches a peer whose application stops reading is the write timeout,
// not the pong (pongWatch waits for a pong as long as data frames are
// still taken). The guarantees hold:
//
//   - A connection that gets no data frame between two heartbeats is
//     pinged exactly as before, so an idle dead peer is closed as before.
//   - A peer host that dies or vanishes acknowledges nothing more: the
//     next data frame stays in the send queue (the queue is then not
//     empty) and the heartbeat after it pings, or, if no frame comes, the
//     heartbeat pings because nothing was written. A dead peer is seen at
//     most one interval later than with a ping at every heartbeat.
//   - A peer whose application stops reading still has its kernel
//     acknowledge what fits in its receive buffer. Once that is full its
//     window closes, our bytes stay queued (zero-window probes advance
//     nothing), the heartbeats ping again, and a write that makes no
//     progress for the write timeout closes the connection (frameConn.send),
//     as it did before: such a peer never answered the pong earlier either,
//     and pongWatch kept waiting while the data frames were still taken.
//   - A write under way (inflight) means bytes wait: ping.
//
// When the send queue cannot be read (no file descriptor: TLS, a
// connection that is not a socket, an error, another OS), the heartbeat
// pings as before.
func (sc *streamConn) ackedSince(since int64) bool {
	fc := sc.fc
	if fc == nil || fc.raw == nil || fc.lastWrite.Load() <= since {
		return false // no socket to ask, or no data to go by: no ioctl
	}
	outq, err := sendQueue(fc.raw)
	return pingSkippable(fc.lastWrite.Load(), since, fc.inflight.Load(), outq, err)
}

// pingSkippable is the heartbeat's decision (see ackedSince): data frames
// were last written at lastWrite, after the previous heartbeat (since), no
// write is under way, and the send queue holds outq bytes (err: unknown).
func pingSkippable(lastWrite, since int64, inflight bool, outq int, err error) bool {
	return err == nil && !inflight && lastWrite > since && outq == 0
}

// pongWatch ends the wait for a pong (cancel) once the client has taken
// none of our bytes for the timeout: every timeout it checks that some
// were taken since the last check, or that a write is under way.
type pongWatch struct {
	fc      *frameConn // nil: no progress is known, the timeout is the pong's
	timeout time.Duration
	cancel  context.CancelFunc

	mu      sync.Mutex
	since   time.Time
	t       *time.Timer
	stopped bool
}

func (w *pongWatch) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t = time.AfterFunc(w.timeout, w.check)
}

func (w *pongWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.fc != nil && w.fc.busySince(w.since) {
		w.since = time.Now()
		w.t.Reset(w.timeout)
		return
	}
	w.cancel()
}

func (w *pongWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
}

func (sc *streamConn) handle(ctx context.Context, data []byte) {
	f, ferr := parseClientFrame(data)
	if ferr != nil {
		sc.fail(ferr.id, ferr.code, ferr.msg)
		return
	}
	switch f.Type {
	case wire.TypeSubscribe:
		sc.subscribe(ctx, &f)
	case wire.TypeUnsubscribe:
		sc.mu.Lock()
		ss := sc.subs[f.ID]
		if ss != nil {
			sc.dropLocked(ss)
		}
		sc.mu.Unlock()
		if ss == nil {
			sc.fail(f.ID, wire.CodeNotFound, "no subscription with this id")
			return
		}
		ss.sub.Close()
		sc.queue(wire.AppendUnsubscribed(nil, f.ID))
	}
}

// dropLocked forgets ss; sc.mu is held.
func (sc *streamConn) dropLocked(ss *streamSub) {
	delete(sc.subs, ss.id)
	sc.order = removeSub(sc.order, ss)
	sc.names -= ss.names
	if ss.first {
		sc.queued -= ss.reserve
		ss.first = false
	}
}

func removeSub(list []*streamSub, ss *streamSub) []*streamSub {
	for i, x := range list {
		if x == ss {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// allowSubscribe spends a token of the connection's and of the key's
// subscribe buckets; false (with an error frame sent) when either is empty.
func (sc *streamConn) allowSubscribe(id string) bool {
	if sc.limiter == nil {
		sc.limiter = rate.NewLimiter(rate.Limit(sc.s.stream.SubscribeRate), sc.s.stream.SubscribeBurst)
	}
	now := time.Now()
	if r := sc.limiter.ReserveN(now, 1); !r.OK() || r.DelayFrom(now) > 0 {
		if r.OK() {
			r.CancelAt(now)
		}
		sc.s.stats.rateLimited.Add(1)
		sc.fail(id, wire.CodeRateLimited, "too many subscribes on this connection (at most "+
			strconv.FormatFloat(sc.s.stream.SubscribeRate, 'g', -1, 64)+" per second, bursts of "+strconv.Itoa(sc.s.stream.SubscribeBurst)+"); retry later")
		return false
	}
	if !sc.key.limiter.AllowN(now, 1) {
		sc.s.stats.rateLimited.Add(1)
		sc.fail(id, wire.CodeRateLimited, "too many subscribes with this key; retry later")
		return false
	}
	return true
}

// subscribe acts on a subscribe frame. The checks that may refuse it
// without a look at the database or the hub come first, and before its
// watchlist is decoded (only counted so far): a refused subscribe costs no
// string per name.
func (sc *streamConn) subscribe(ctx context.Context, f *clientFrame) {
	sc.mu.Lock()
	_, dup := sc.subs[f.ID]
	n, names := len(sc.subs), sc.names
	sc.mu.Unlock()
	switch {
	case dup:
		sc.fail(f.ID, wire.CodeBadRequest, "a subscription with this id exists already")
		return
	case n >= sc.s.stream.MaxSubs:
		sc.s.stats.limitRefusals.Add(1)
		sc.fail(f.ID, wire.CodeLimitExceeded, "too many subscriptions on this connection (at most "+strconv.Itoa(sc.s.stream.MaxSubs)+")")
		return
	case names+f.Users.n > sc.s.stream.MaxNames:
		sc.s.stats.limitRefusals.Add(1)
		sc.fail(f.ID, wire.CodeLimitExceeded, "too many watched users on this connection (at most "+strconv.Itoa(sc.s.stream.MaxNames)+" over all its subscriptions)")
		return
	}
	if !sc.allowSubscribe(f.ID) {
		return
	}
	users, ferr := f.users()
	if ferr != nil {
		sc.fail(ferr.id, ferr.code, ferr.msg)
		return
	}
	sc.s.stats.namesDecoded.Add(uint64(len(users)))
	// Authorisation is checked against the current state on every
	// subscribe, not only at the upgrade: the key may be gone by now.
	p, err := sc.s.check(ctx, sc.cred)
	if errors.Is(err, store.ErrUnauthorized) {
		sc.revoke()
		return
	} else if err != nil {
		sc.s.log.Error("stream subscribe: checking the credential failed", "err", err)
		sc.fail(f.ID, wire.CodeInternal, "internal error")
		return
	}
	sc.setPrincipal(p)
	a, err := sc.s.account(withPrincipal(ctx, p), f.AccountSID)
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
	req := hub.SubscribeRequest{Realm: a.SIPRealm, Users: users, Notify: sc.signal, Owner: a.SID, Deferred: true}
	if f.Since != nil {
		req.Since = &hub.Position{Epoch: f.Since.Epoch, Seq: f.Since.Seq}
	}
	sub, st := sc.s.pres.Subscribe(req)
	ss := &streamSub{id: f.ID, accountSID: a.SID, realm: a.SIPRealm, names: len(users), sub: sub}
	ss.prefix = wire.AppendChangePrefix(nil, f.ID, a.SID, false)
	ss.conflated = wire.AppendChangePrefix(nil, f.ID, a.SID, true)

	var frames [][]byte
	size := 0
	if st.Resumed {
		frames = append(frames, wire.AppendResumed(nil, f.ID, a.SID, f.Since.Epoch, f.Since.Seq))
		for _, c := range st.Missed {
			frames = append(frames, append(append([]byte(nil), ss.prefix...), c.Body...))
		}
		for _, fr := range frames {
			size += len(fr)
		}
	} else {
		ss.first, ss.notResumed = true, f.Since != nil
		ss.reserve = st.Size + 160 + len(st.Epoch) + len(f.ID) + len(a.SID)
		size = ss.reserve
	}
	sc.mu.Lock()
	switch {
	case sc.closed: // connection ended meanwhile
		sc.mu.Unlock()
		sub.Close()
		return
	case sc.queued > 0 && sc.queued+size > sc.s.stream.OutputBudget:
		// What this subscription would start with does not fit beside
		// what the client has not read yet. (Alone it always may: a
		// realm's snapshot can be bigger than the budget.)
		pending := sc.queued
		sc.mu.Unlock()
		sub.Close()
		sc.s.stats.limitRefusals.Add(1)
		sc.fail(f.ID, wire.CodeLimitExceeded, "output budget: "+strconv.Itoa(pending)+" bytes are waiting to be written to this connection and this subscription would add "+
			strconv.Itoa(size)+" (budget "+strconv.Itoa(sc.s.stream.OutputBudget)+"); read first, then subscribe again")
		return
	}
	sc.out = append(sc.out, frames...)
	sc.queued += size
	sc.subs[f.ID] = ss
	sc.order = append(sc.order, ss)
	sc.names += ss.names
	sc.mu.Unlock()
	sc.signal()
}

// setPrincipal records the principal of the latest check and re-arms the
// expiry timer.
func (sc *streamConn) setPrincipal(p store.Principal) {
	sc.mu.Lock()
	sc.p = p
	sc.mu.Unlock()
	sc.armExpiry(p)
}

// armExpiry makes the connection re-check its credential when p expires.
func (sc *streamConn) armExpiry(p store.Principal) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return
	}
	if sc.expiry != nil {
		sc.expiry.Stop()
		sc.expiry = nil
	}
	if p.ExpiresAt == nil {
		return
	}
	sc.expiry = time.AfterFunc(time.Until(*p.ExpiresAt), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sc.recheck(ctx, nil)
	})
}

// recheck checks the connection's credential and every subscription's
// account against the current state: a revoked or expired credential ends
// the connection (unauthorized error frames, then 4001); a subscription
// whose account the principal may no longer see, or that no longer has
// the realm subscribed to, ends with an unauthorized error frame. Errors
// other than a refusal (the database is down) leave things as they are.
// m, if not nil, memoises the answers for a pass over many connections.
func (sc *streamConn) recheck(ctx context.Context, m *recheckMemo) {
	p, err := m.check(ctx, sc.s, sc.cred)
	if errors.Is(err, store.ErrUnauthorized) {
		sc.revoke()
		return
	}
	if err != nil {
		sc.s.log.Warn("stream: re-checking a connection's credential failed; it stays open", "err", err)
		return
	}
	sc.setPrincipal(p)
	sc.mu.Lock()
	subs := append([]*streamSub(nil), sc.order...)
	sc.mu.Unlock()
	for _, ss := range subs {
		a, err := m.account(ctx, sc.s, ss.accountSID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			sc.s.log.Warn("stream: re-checking a subscription's account failed; it stays", "err", err)
			continue
		case p.CanSeeAccount(a) && a.SIPRealm == ss.realm:
			continue
		}
		sc.endSub(ss)
	}
}

// endSub ends one subscription whose authorisation is gone.
func (sc *streamConn) endSub(ss *streamSub) {
	sc.mu.Lock()
	if sc.subs[ss.id] != ss {
		sc.mu.Unlock()
		return
	}
	sc.dropLocked(ss)
	sc.mu.Unlock()
	ss.sub.Close()
	sc.s.stats.revokedSubs.Add(1)
	sc.queue(errorFrame(ss.id, wire.CodeUnauthorized, "this subscription is no longer authorized: the account is gone, has another sip_realm, or is no longer visible to this credential"))
}

// revoke ends the connection because its credential is no longer valid:
// an unauthorized error frame for each subscription (one without an id
// when there are none), then close 4001.
func (sc *streamConn) revoke() {
	sc.mu.Lock()
	if sc.closed || sc.closeCode != 0 {
		sc.mu.Unlock()
		return
	}
	subs := sc.order
	for _, ss := range subs {
		ss.first = false
	}
	sc.subs, sc.order, sc.names, sc.queued = map[string]*streamSub{}, nil, 0, 0
	sc.out = nil // what was queued is no longer theirs to read
	const m = "the credential this connection was opened with was revoked or has expired"
	if len(subs) == 0 {
		sc.out = append(sc.out, errorFrame("", wire.CodeUnauthorized, m))
	}
	for _, ss := range subs {
		sc.out = append(sc.out, errorFrame(ss.id, wire.CodeUnauthorized, m))
	}
	sc.closeCode = closeUnauthorized
	sc.mu.Unlock()
	for _, ss := range subs {
		ss.sub.Close()
	}
	sc.s.stats.revokedSubs.Add(uint64(len(subs)))
	sc.s.stats.authCloses.Add(1)
	sc.signal()
}

// snapshotFrame encodes a snapshot; notResumed marks one sent instead of a
// requested resume, resync one sent because the subscriber fell behind.
func snapshotFrame(ss *streamSub, snap hub.Snapshot, notResumed, resync bool) []byte {
	h := wire.Snapshot{ID: ss.id, AccountSID: ss.accountSID, Epoch: snap.Epoch, Seq: snap.Seq, NotResumed: notResumed, Resync: resync}
	return wire.AppendSnapshot(make([]byte, 0, wire.SnapshotSize(snap.Users)), &h, snap.Users)
}

func errorFrame(id, code, message string) []byte { return wire.AppendError(nil, id, code, message) }

// fail queues an error frame; the connection stays up.
func (sc *streamConn) fail(id, code, message string) {
	sc.s.stats.badMessages.Add(1)
	sc.queue(errorFrame(id, code, message))
}

// queue adds a frame for the writer. A client that lets more than the
// output budget wait unread is disconnected (4008): it is not reading, or
// not fast enough for what it asks.
func (sc *streamConn) queue(frame []byte) {
	sc.mu.Lock()
	if sc.closed || sc.closeCode != 0 {
		sc.mu.Unlock()
		return
	}
	if sc.queued+len(frame) > sc.s.stream.OutputBudget {
		sc.closed = true // queue no more; the writer stops at its next round
		sc.out = nil
		sc.mu.Unlock()
		sc.s.stats.budgetCloses.Add(1)
		// Not from the writer, which may be stuck on this very client:
		// Close gives up on the close frame after 5s and drops the
		// connection, which unblocks the writer.
		go sc.c.Close(closeOutputBudget, "output budget exceeded")
		return
	}
	sc.out = append(sc.out, frame)
	sc.queued += len(frame)
	sc.mu.Unlock()
	sc.signal()
}

// signal makes sure a flush runs after this call.
func (sc *streamConn) signal() {
	if sc.writing.CompareAndSwap(false, true) {
		if sc.fc != nil && sc.fc.raw != nil {
			sc.s.flushq.push(sc) // see flushQueue
			return
		}
		go sc.flush()
		return
	}
	sc.pending.Store(true)
}

// flush writes until nothing is queued, then ends. At most one runs at a
// time (writing); a signal that arrives while it runs sets pending, which
// makes it go round once more. It runs on a goroutine of its own: one
// started by signal, or one a flushQueue worker handed the connection to
// (see flushInline).
func (sc *streamConn) flush() {
	for {
		sc.pending.Store(false)
		if sc.flushOnce(false) != flushOK {
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

// flushStatus is how a flush round ended.
type flushStatus int

const (
	flushOK      flushStatus = iota // written out
	flushEnd                        // the connection ends; writing stays set
	flushHandoff                    // inline only: the round needs waiting, a goroutine of the connection's own now owns the flush
)

// flushOnce writes the reader's frames first, then drains every
// subscription; a subscriber that fell behind gets a fresh snapshot.
// inline is a flushQueue worker's round, which must not wait: whatever
// would (a socket that takes less than the round's bytes now, a snapshot
// to build, a close) is handed to a goroutine of the connection's own
// (flushHandoff).
func (sc *streamConn) flushOnce(inline bool) flushStatus {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return flushEnd
	}
	code := sc.closeCode
	if inline && code != 0 {
		sc.mu.Unlock()
		go sc.flush()
		return flushHandoff
	}
	out := sc.out
	sc.out = nil
	for _, f := range out {
		sc.queued -= len(f) // in flight now
	}
	// The flush's own copy of the subscriptions, reused round after round.
	sc.subsBuf = append(sc.subsBuf[:0], sc.order...)
	subs := sc.subsBuf
	sc.mu.Unlock()
	// A client that takes no byte of this round's write for the write
	// timeout is gone or stuck (see frameConn.send); one that reads slowly
	// is waited for.
	b := newFrameBatch(sc)
	st := sc.flushFrames(&b, out, subs, inline)
	clear(subs) // an ended subscription is not kept until the next round
	if st == flushHandoff {
		// b (and its pooled buffers) now belong to the goroutine that
		// writes its rest.
		go sc.finishFlush(b)
		return flushHandoff
	}
	b.release()
	if st != flushOK {
		return st
	}
	if code != 0 {
		sc.mu.Lock()
		sc.closed = true
		sc.mu.Unlock()
		sc.c.Close(code, unauthorizedReason)
		return flushEnd
	}
	return flushOK
}

// frameBatch gathers one round's frames for a single write: small frames
// are copied into buf (header and payload), big ones are referenced.
type frameBatch struct {
	sc     *streamConn
	pooled *batchBufs
	buf    []byte
	bufs   net.Buffers
	frames uint64
	// After an inline send (trySend) that did not write everything:
	tried bool  // the rest is in pooled.w
	held  bool  // the frameConn's lock is held for the rest (part of a frame went out)
	err   error // the write failed with it
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

// send writes what was gathered; false when the client took nothing for
// the write timeout.
func (b *frameBatch) send() bool {
	b.cut()
	if len(b.bufs) == 0 {
		return true
	}
	// Writing consumes the slice it is given: it gets a copy, b.bufs keeps
	// its array. The copy lives in the pooled struct (a local would be
	// allocated: writing takes its address).
	w := &b.pooled.w
	*w = b.bufs
	err := b.sc.fc.writeFrames(w)
	return b.sent(err)
}

// sent ends a write of the batch: the parts are let go, the frames counted;
// false when it failed.
func (b *frameBatch) sent(err error) bool {
	b.pooled.w = nil
	clear(b.bufs)
	b.bufs = b.bufs[:0]
	if err != nil {
		b.sc.slow()
		return false
	}
	b.sc.s.stats.frames.Add(b.frames)
	b.frames = 0
	return true
}

// trySend is send for a flushQueue worker: it writes what the socket takes
// now. false: some is left (in pooled.w), or the write failed; finish, on a
// goroutine that may wait, then does the rest.
func (b *frameBatch) trySend() bool {
	b.cut()
	if len(b.bufs) == 0 {
		return true
	}
	w := &b.pooled.w
	*w = b.bufs
	held, err := b.sc.fc.trySend(w)
	if err == nil {
		return b.sent(nil)
	}
	b.tried, b.held = true, held
	if err != errWouldBlock {
		b.err = err
	}
	return false
}

// finish writes what was gathered, or what trySend left, waiting as send
// does; false when the client took nothing for the write timeout or the
// write failed.
func (b *frameBatch) finish() bool {
	if !b.tried {
		return b.send()
	}
	b.tried = false
	w := &b.pooled.w
	var err error
	switch {
	case b.err != nil:
		err, b.err = b.err, nil
	case b.held:
		b.held = false
		err = b.sc.fc.finishSend(w)
	default:
		err = b.sc.fc.writeFrames(w)
	}
	return b.sent(err)
}

// release gives the pooled buffers back (the byte buffer as it was taken:
// a burst that outgrew it leaves its bigger buffer to the garbage
// collector).
func (b *frameBatch) release() {
	if cap(b.bufs) <= 64 {
		clear(b.bufs)
		b.pooled.parts = b.bufs[:0]
	}
	b.pooled.w = nil
	batchPool.Put(b.pooled)
	b.bufs, b.buf, b.pooled = nil, nil, nil
}

// newFrameBatch takes a round's buffers from the pool.
func newFrameBatch(sc *streamConn) frameBatch {
	pooled := batchPool.Get().(*batchBufs)
	// b.buf is only ever appended to or resliced past what was cut, so the
	// parts already in b.bufs are never overwritten.
	return frameBatch{sc: sc, pooled: pooled, buf: pooled.buf[:0], bufs: pooled.parts[:0]}
}

// flushFrames writes one round's frames: the reader's, then every
// subscription's changes (and its snapshot: the first one, built now, or a
// fresh one for a subscriber that fell behind), all in one write. Inline
// (a flushQueue worker), it stops at what would take long or wait: a
// snapshot to build or a subscription that ended (it writes the round so
// far and hands off; the goroutine's round finds them again, as Next keeps
// reporting them), and a write the socket does not take whole now.
func (sc *streamConn) flushFrames(b *frameBatch, out [][]byte, subs []*streamSub, inline bool) flushStatus {
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
			if ended { // unsubscribed or revoked meanwhile
				continue
			}
			if inline {
				return flushHandoff // its write, then what follows, on the goroutine
			}
			if ss.sub.Revoked() { // the realm changed hands: an error frame, next round
				sc.endSub(ss)
				continue
			}
			if !b.send() {
				return flushEnd
			}
			sc.c.Close(websocket.StatusGoingAway, "server shutting down")
			return flushEnd
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
			if inline {
				return flushHandoff
			}
			sc.mu.Lock()
			first, notResumed := ss.first, ss.notResumed
			if first {
				ss.first = false
				sc.queued -= ss.reserve // built now: in flight
			}
			sc.mu.Unlock()
			if !first {
				sc.s.stats.resyncs.Add(1)
			}
			// Written before the next snapshot is built: a connection holds
			// at most one snapshot at a time.
			b.add(nil, snapshotFrame(ss, ss.sub.Resnapshot(), notResumed, !first))
			if !b.send() {
				return flushEnd
			}
		}
	}
	if cap(sc.items) > 1024 {
		sc.items = nil
	}
	if inline {
		if !b.trySend() {
			return flushHandoff
		}
		return flushOK
	}
	if !b.send() {
		return flushEnd
	}
	return flushOK
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
