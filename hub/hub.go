package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehub/presencehub/hub/heapq"
	"github.com/presencehub/presencehub/hub/wire"
)

// Events of a change.
const (
	EventRegistered   = "registered"   // a new binding
	EventRefreshed    = "refreshed"    // same binding, new expiry
	EventUpdated      = "updated"      // contact, protocol, proxy or flags changed
	EventUnregistered = "unregistered" // removed before its deadline (un-REGISTER)
	EventExpired      = "expired"      // the hub's clock passed the deadline
)

// Source feeds the hub from the registration store. Watch runs until ctx is
// done. Every time it has (re)subscribed to changes it must load the complete
// state and pass it to Resync; between resyncs it calls Update for every key
// that may have changed (reg nil when the key is gone).
type Source interface {
	Watch(ctx context.Context, sink Sink) error
}

// Sink is what a Source feeds; *Hub implements it.
type Sink interface {
	Resync(regs []Registration)
	Update(updates ...Update)
}

// Update says the registration stored for AOR is now Reg (nil: none).
type Update struct {
	AOR string
	Reg *Registration
}

// Options tune a Hub. Zero values take the defaults.
type Options struct {
	// History is how many past changes per realm are kept for resume (default 1024, min 100).
	History int
	// QueueLen bounds each subscriber's queue (default 256).
	QueueLen int
	// Logger receives the hub's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests may replace it.
	Now func() time.Time
	// Epoch, if set, is the hub's epoch instead of a random one (a cluster
	// replica takes it from the shared log).
	Epoch string
	// Tap, if set, is called for every change the hub emits from its
	// source or its expiry clock, with the registration's new state (nil
	// when it is gone). It runs on the owner goroutine with the realm's
	// lock held: it may block to give back-pressure (a cluster sequencer's
	// private hub, which has no readers, does), but must not call the hub.
	// Changes applied with Apply are not tapped.
	Tap func(c *Change, st *State)
	// Observe, when set, is called for every change on the hub's owner
	// goroutine while the realm is locked: it must return at once and never
	// block (hand the value to a bounded buffer, dropping and counting when
	// full). The registration history writer is fed this way. Unlike Tap
	// it also sees the changes applied with Apply (a cluster replica), with
	// the seq and time they were sequenced with.
	Observe func(Observed)
}

// Observed is one change as an Observe hook sees it.
type Observed struct {
	Epoch string
	Seq   uint64 // the realm's sequence number of this change
	Event string
	Time  time.Time
	// Reg is the registration after the change; for unregistered and
	// expired, the registration that ended.
	Reg Registration
	// Initial is true for the changes of the hub's first load from its
	// source (every registration appearing), before Ready.
	Initial bool
}

// Metrics are cumulative counters of the hub.
type Metrics struct {
	Changes      atomic.Uint64 // changes emitted
	Resyncs      atomic.Uint64 // full resyncs applied from the source
	Conflations  atomic.Uint64 // subscriber queues compacted to latest state per user
	SubResyncs   atomic.Uint64 // subscribers sent a fresh snapshot because they fell behind
	Subscribers  atomic.Int64  // current subscriptions
	Expirations  atomic.Uint64 // removals emitted as "expired" (by the hub's clock, or reported after the deadline)
	SyncedAtUnix atomic.Int64  // last full resync, unix ms
	Claims       atomic.Uint64 // realms that changed owner (subscriptions ended, history dropped)
}

// Hub owns the presence snapshot. Create it with New and start it with Run.
type Hub struct {
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	epoch atomic.Pointer[string]

	ops     chan func()
	ready   atomic.Bool
	started atomic.Bool   // Run was called; a hub runs once
	stopped atomic.Bool   // Run ended; set under mu before done is closed
	done    chan struct{} // closed when Run ends

	mu     sync.RWMutex // guards realms (the map, not the realms)
	realms map[string]*realmState

	// owned by the Run goroutine
	deadlines heapq.Heap[deadline]
	compactAt int    // heap size that triggers dropping stale deadlines
	lastGen   uint64 // last entry generation handed out, hub-wide
	timer     *time.Timer
	bulk      bool   // in a resync: deadlines are appended, and heaped at its end
	resyncs   uint64 // resyncs applied; entries seen by the current one carry it

	Metrics Metrics
}

// New returns a hub that is not yet running.
func New(opts Options) *Hub {
	switch {
	case opts.History <= 0:
		opts.History = 1024
	case opts.History < 100:
		opts.History = 100
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	epoch := opts.Epoch
	if epoch == "" {
		var e [6]byte
		_, _ = rand.Read(e[:])
		epoch = hex.EncodeToString(e[:])
	}
	h := &Hub{
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		ops:       make(chan func(), 256),
		done:      make(chan struct{}),
		realms:    make(map[string]*realmState),
		compactAt: minCompact,
	}
	h.epoch.Store(&epoch)
	return h
}

// Epoch identifies this hub's history; it changes on every start (in a
// cluster: when the shared log is lost, see Rebuild).
func (h *Hub) Epoch() string { return *h.epoch.Load() }

// Claim records that owner (an account sid; "" for nobody) holds realm. When
// that changes who holds it, the realm's presence stops belonging to the
// previous holder, in one step under the realm's lock: its subscriptions end
// (Next reports closed, Revoked true), its history and activity counts are
// discarded, and its epoch changes (the hub's epoch plus a tag of the
// holder, the same in every process of a cluster), so nobody can resume
// into changes made while someone else held it. The registrations themselves stay: they are
// what the SBC reports for the realm now. Claiming an unknown realm for
// nobody does nothing.
func (h *Hub) Claim(realm, owner string) {
	r := h.realm(realm, owner != "")
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h.claimLocked(r, owner)
}

// claimLocked is Claim with r.mu held.
func (h *Hub) claimLocked(r *realmState, owner string) {
	if r.owner == owner {
		return
	}
	// A history filled from a cluster's log before this process learnt
	// the realm's holder is the holder's now: the log's changes are the
	// realm's whoever the replicas take to hold it, and the other replicas
	// kept it.
	keep := r.owner == "" && r.fromLog
	r.fromLog = false
	r.owner = owner
	r.ownerTag = ownerTag(owner)
	for s := range r.subs {
		s.revoke()
	}
	h.Metrics.Subscribers.Add(-int64(len(r.subs)))
	r.subs = make(map[*Subscription]struct{})
	if keep {
		return
	}
	r.history = ring{buf: make([]*Change, 0, 16), max: r.history.max}
	r.perSecond = [60]bucket{}
	r.perMinute = [60]bucket{}
	h.Metrics.Claims.Add(1)
}

// ownerTag is what a realm held by owner adds to the hub's epoch: a short
// hash, so the account sid does not show in positions.
func ownerTag(owner string) string {
	if owner == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(owner))
	return "." + hex.EncodeToString(sum[:4])
}

// epochOf is r's epoch; r.mu must be held.
func (h *Hub) epochOf(r *realmState) string { return h.Epoch() + r.ownerTag }

// Ready reports whether the first full sync from the source has been applied.
func (h *Hub) Ready() bool { return h.ready.Load() }

// errSourceStopped is Run's error when the Source's Watch returns nil before
// ctx is done, which the Source contract does not allow.
var errSourceStopped = errors.New("hub: source stopped watching")

// Run owns the snapshot until ctx is done. If src is not nil its Watch is
// run alongside; Run returns when ctx is done (or when Watch returns), closing
// every subscription, and only after Watch has returned. A hub runs once: a
// second call returns an error.
func (h *Hub) Run(ctx context.Context, src Source) error {
	if !h.started.CompareAndSwap(false, true) {
		return errors.New("hub: Run called more than once")
	}
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	watching := src != nil
	if watching {
		go func() { errc <- src.Watch(ctx, h) }()
	}
	h.timer = time.NewTimer(time.Hour)
	defer func() {
		cancel()
		h.timer.Stop()
		// closeAll closes done, which releases a Watch blocked in Update or
		// Resync; then wait for it so no goroutine outlives Run.
		h.closeAll()
		if watching {
			<-errc
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			watching = false
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errSourceStopped
			}
			return err
		case op := <-h.ops:
			op()
			// Drain what is already queued before looking at the clock, so a
			// burst is applied in one go.
			for n := 0; n < 256; n++ {
				select {
				case op = <-h.ops:
					op()
					continue
				default:
				}
				break
			}
		case <-h.timer.C:
		}
		h.expire()
		h.compactDeadlines()
		h.resetTimer()
	}
}

// closeAll ends every subscription. stopped is set first, under h.mu, so a
// Subscribe racing with it either sees stopped (under its realm's lock) or
// registered its subscription before closeAll reached that realm.
func (h *Hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped.Store(true)
	for _, r := range h.realms {
		r.mu.Lock()
		for s := range r.subs {
			s.close()
		}
		h.Metrics.Subscribers.Add(-int64(len(r.subs)))
		r.subs = make(map[*Subscription]struct{})
		r.mu.Unlock()
	}
	close(h.done)
}

// do runs f on the owner goroutine and waits for it.
func (h *Hub) do(f func()) {
	ch := make(chan struct{})
	select {
	case h.ops <- func() { f(); close(ch) }:
	case <-h.done:
		return
	}
	select {
	case <-ch:
	case <-h.done:
	}
}

// Resync replaces the whole snapshot with regs, emitting the differences as
// changes. It implements Sink and blocks until applied.
func (h *Hub) Resync(regs []Registration) {
	h.do(func() { h.resync(regs) })
}

// Update applies changes of single keys. It implements Sink and blocks until
// applied, which gives the source back-pressure.
func (h *Hub) Update(updates ...Update) {
	h.do(func() {
		now := h.now()
		for _, u := range updates {
			if u.Reg != nil {
				h.upsert(u.Reg, now, false)
				continue
			}
			user, realm, ok := SplitAOR(u.AOR)
			if !ok {
				continue
			}
			h.remove(realm, user, now, false)
		}
	})
}

// SetClients replaces the known SIP clients of realm (usernames to flags;
// usernames match case-insensitively); they give the flags of users that are
// not registered. The hub keeps a copy of clients.
func (h *Hub) SetClients(realm string, clients map[string]Flags) {
	// A copy: the hub reads it under its lock, so keeping the caller's map
	// would race with the caller reusing it.
	m := make(map[string]Flags, len(clients))
	for name, f := range clients {
		m[Fold(name)] = f
	}
	r := h.realm(realm, true)
	r.mu.Lock()
	r.clients = m
	r.mu.Unlock()
}

func (h *Hub) realm(name string, create bool) *realmState {
	name = Fold(name)
	h.mu.RLock()
	r := h.realms[name]
	h.mu.RUnlock()
	if r != nil || !create {
		return r
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r = h.realms[name]; r == nil {
		r = newRealm(name, h.opts.History)
		h.realms[name] = r
	}
	return r
}

func (h *Hub) resync(regs []Registration) {
	now := h.now()
	// The first load of an empty hub is no news: nobody can have seen the
	// registrations go missing, so they are stored without a change each
	// (no 100,000 "registered" in the history of a cold start), except in
	// realms that already have subscribers, and except when a Tap (a
	// cluster sequencer) must see every registration as a change.
	quiet := !h.ready.Load()
	h.resyncs++
	h.bulk = true
	// Room for a deadline per registration up front: grown by append, the
	// heap of a 100,000-registration resync was copied over and over.
	h.deadlines.Grow(len(regs))
	fresh := h.deadlines.Len() == 0
	if quiet && h.opts.Tap == nil && len(regs) >= parallelLoadMin {
		h.loadQuiet(regs, now)
	} else {
		for i := range regs {
			h.upsert(&regs[i], now, quiet)
		}
	}
	h.bulk = false
	h.deadlines.Init()
	if fresh {
		// Every deadline of a load into an empty heap is current (but
		// for a repeated user's): compacting it at the end of this op, as
		// compactDeadlines would since it grew past compactAt, looked up
		// every entry again for nothing (8% of a cold start's CPU).
		h.compactAt = max(h.compactAt, 2*h.deadlines.Len())
	}
	h.mu.RLock()
	all := make([]*realmState, 0, len(h.realms))
	for _, r := range h.realms {
		all = append(all, r)
	}
	h.mu.RUnlock()
	for _, r := range all {
		var gone []string
		r.mu.RLock()
		for u, e := range r.users {
			if e.resync != h.resyncs {
				gone = append(gone, u)
			}
		}
		r.mu.RUnlock()
		for _, u := range gone {
			h.remove(r.name, u, now, false)
		}
	}
	h.Metrics.Resyncs.Add(1)
	h.Metrics.SyncedAtUnix.Store(now.UnixMilli())
	if !h.ready.Swap(true) {
		h.log.Info("presence snapshot loaded", "registrations", len(regs))
	}
}

// upsert stores reg and emits registered, refreshed or updated (nothing when
// it is identical to what the hub has, as for the "expire" notification that
// follows every SETEX). quiet stores a new registration of a realm without
// subscribers without emitting it (see resync).
func (h *Hub) upsert(in *Registration, now time.Time, quiet bool) {
	reg := *in
	reg.Realm = Fold(reg.Realm)
	derived := reg.ExpiryTime == 0 && !reg.Deadline.IsZero()
	if derived {
		reg.ExpiryTime = reg.Deadline.UnixMilli()
	}
	if !reg.Deadline.IsZero() && !reg.Deadline.After(now) {
		// Already lapsed: Redis will drop it; treat as absent.
		h.remove(reg.Realm, reg.User, now, true)
		return
	}
	r := h.realm(reg.Realm, true)
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.users[reg.User]
	event := EventRegistered
	since := now
	if old != nil {
		since = old.since
		if derived && old.derived && absMillis(reg.ExpiryTime-old.reg.ExpiryTime) < expiryJitter.Milliseconds() {
			// The SBC gave no expiryTime, so it comes from the TTL measured
			// at each read; a re-read without a new REGISTER differs by the
			// measurement only and must not look like a refresh.
			reg.ExpiryTime = old.reg.ExpiryTime
		}
		switch {
		case old.reg.Contact != reg.Contact || old.reg.Protocol != reg.Protocol || old.reg.Proxy != reg.Proxy ||
			old.reg.AllowDirectApp != reg.AllowDirectApp || old.reg.AllowDirectQueue != reg.AllowDirectQueue ||
			old.reg.AllowDirectUser != reg.AllowDirectUser:
			event = EventUpdated
		case old.reg.ExpiryTime != reg.ExpiryTime:
			event = EventRefreshed
		default:
			// Same record as far as any encoding goes: no change to emit,
			// but keep the fields no encoding shows (SBC addresses, hooks)
			// and the fresher deadline.
			deadline := old.reg.Deadline
			if !reg.Deadline.IsZero() && (old.seeded || deadline.IsZero() || absDuration(reg.Deadline.Sub(deadline)) > deadlineJitter) {
				deadline = reg.Deadline
				old.gen = h.nextGen()
				old.seeded = false
				h.pushDeadline(old, deadline)
			}
			old.reg = reg
			old.reg.Deadline = deadline
			old.resync = h.resyncs
			return
		}
	}
	// A fresh generation from a hub-wide counter, not old.gen+1: after an
	// un-REGISTER the entry is gone, and a re-registration counting from 0
	// again would match the old binding's heap entry and expire at its
	// deadline.
	e := &entry{reg: reg, since: since, eventTime: now, event: event, gen: h.nextGen(), derived: derived, resync: h.resyncs}
	e.json = appendUser(make([]byte, 0, userJSONSize(&e.reg)), &e.reg)
	if old == nil {
		r.online++
		r.protocols[reg.Protocol]++
		r.usersChanged()
	} else if old.reg.Protocol != reg.Protocol {
		r.protocols[old.reg.Protocol]--
		r.protocols[reg.Protocol]++
	}
	r.users[reg.User] = e
	if !reg.Deadline.IsZero() {
		h.pushDeadline(e, reg.Deadline)
	}
	if quiet && old == nil && len(r.subs) == 0 && h.opts.Tap == nil {
		return
	}
	var st *State
	if h.opts.Tap != nil {
		st = &State{Reg: e.reg, Derived: derived, Since: since, EventTime: now, Event: event}
	}
	h.emit(r, event, reg.User, e.json, now, st)
	h.observe(r, event, &e.reg, now)
}

// observe hands a change of r (locked by the caller, after its seq was
// recorded) to the Observe hook.
func (h *Hub) observe(r *realmState, event string, reg *Registration, now time.Time) {
	if h.opts.Observe != nil {
		h.opts.Observe(Observed{Epoch: h.Epoch(), Seq: r.seq, Event: event, Time: now, Reg: *reg, Initial: !h.ready.Load()})
	}
}

// remove deletes realm/user if present. expired tells whether the removal is
// the lapse of the registration; when false it still counts as expired if the
// entry's deadline has passed (Redis reporting the lapse first).
func (h *Hub) remove(realm, user string, now time.Time, expired bool) {
	r := h.realm(realm, false)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.users[user]
	if old == nil {
		return
	}
	delete(r.users, user)
	r.online--
	r.protocols[old.reg.Protocol]--
	r.usersChanged()
	event := EventUnregistered
	if expired || (!old.reg.Deadline.IsZero() && !old.reg.Deadline.After(now)) {
		event = EventExpired
		h.Metrics.Expirations.Add(1)
	}
	h.emit(r, event, user, wire.AppendInactive(nil, user, r.clients[Fold(user)]), now, nil)
	h.observe(r, event, &old.reg, now)
}

// emit records a change of r (locked by the caller) with the realm's next
// seq, hands it to the tap (with st, the user's new state) and queues it for
// r's subscribers.
func (h *Hub) emit(r *realmState, event, user string, userJSON []byte, now time.Time, st *State) {
	c := h.record(r, r.seq+1, event, user, userJSON, now)
	if h.opts.Tap != nil {
		h.opts.Tap(c, st)
	}
	h.publish(r, c)
}

// record encodes a change of r (locked by the caller) at seq, makes it the
// realm's latest and keeps it in the history.
func (h *Hub) record(r *realmState, seq uint64, event, user string, userJSON []byte, now time.Time) *Change {
	r.seq = seq
	c := &Change{Realm: r.name, Seq: r.seq, Event: event, User: user, Time: now}
	c.Body = wire.AppendChange(make([]byte, 0, wire.ChangeSize(len(userJSON))), c.Seq, event, userJSON, now)
	r.history.add(c)
	r.recordActivity(now)
	return c
}

// publish queues c for r's subscribers; r is locked by the caller.
func (h *Hub) publish(r *realmState, c *Change) {
	for s := range r.subs {
		s.push(c)
	}
	h.Metrics.Changes.Add(1)
}

// expiryJitter is how far an expiry computed from a re-measured TTL may move
// without counting as a refresh (Redis TTL has a resolution of one second).
const expiryJitter = 2 * time.Second

// deadlineJitter is how far a re-read of the same write (same expiryTime)
// may move its deadline without re-arming it: each load measures the clock
// skew, or the key's TTL, again, and the measurements differ by a round
// trip. Re-arming every entry on every resync cost a heap push per
// registration; a move beyond this (say, an EXPIRE on the key) re-arms.
const deadlineJitter = time.Second

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func absMillis(ms int64) int64 {
	if ms < 0 {
		return -ms
	}
	return ms
}

// nextGen returns a generation no entry has had; owner goroutine only.
func (h *Hub) nextGen() uint64 {
	h.lastGen++
	return h.lastGen
}

// pushDeadline arms e's deadline d under e's current gen.
func (h *Hub) pushDeadline(e *entry, d time.Time) {
	x := deadline{at: d.UnixNano(), e: e, gen: e.gen}
	if h.bulk { // Init at the end of the resync: O(n), not O(n log n)
		h.deadlines.Append(x)
		return
	}
	h.deadlines.Push(x)
}

// current reports whether d is the armed deadline of an entry still in the
// snapshot (not replaced, removed, or re-armed since).
func (h *Hub) current(d deadline) bool {
	r := h.realm(d.e.reg.Realm, false)
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.users[d.e.reg.User] == d.e && d.e.gen == d.gen
}

// expire removes every entry whose own deadline has passed.
func (h *Hub) expire() {
	now := h.now()
	for h.deadlines.Len() > 0 && h.deadlines.Min().at <= now.UnixNano() {
		d := h.deadlines.Pop()
		if h.current(d) {
			h.remove(d.e.reg.Realm, d.e.reg.User, now, true)
		}
	}
}

// minCompact is the smallest heap size at which stale deadlines are dropped.
const minCompact = 1024

// compactDeadlines drops heap entries that no longer match a live entry's
// gen. Every refresh and every re-read with a re-measured TTL pushes a new
// deadline and leaves the old one behind until it comes due, which can be an
// hour later: with a periodic reconcile the heap would hold many times the
// number of registrations. Compacting when the heap doubles keeps it within
// twice the live count (plus minCompact) at amortised O(1) per push. It runs on
// the owner goroutine with no lock held.
func (h *Hub) compactDeadlines() {
	if h.deadlines.Len() <= h.compactAt {
		return
	}
	h.deadlines.Retain(h.current)
	h.compactAt = max(minCompact, 2*h.deadlines.Len())
}

func (h *Hub) resetTimer() {
	if h.deadlines.Len() == 0 {
		h.timer.Reset(time.Hour)
		return
	}
	wait := time.Duration(h.deadlines.Min().at - h.now().UnixNano())
	if wait < 0 {
		wait = 0
	}
	h.timer.Reset(wait)
}

// deadline is one armed expiry: 24 bytes, where a time.Time and the realm
// and user names took 64 (100,000 registrations keep 100,000 to 200,000 of
// them). e is the entry it was armed for; it is current while e is still
// its user's entry and still has gen.
type deadline struct {
	at  int64 // unix nanoseconds
	e   *entry
	gen uint64
}

// Less orders the deadlines heap, earliest first.
func (d deadline) Less(o deadline) bool { return d.at < o.at }

// Change is one change of one user in one realm: its fields, and Body, its
// encoding once for every subscriber (wire.AppendChange:
// `"seq":N,"event":"…","user":{…}}`). A transport writes its own
// wire.AppendChangePrefix and then Body.
type Change struct {
	Realm string
	Seq   uint64
	Event string
	User  string
	Time  time.Time
	Body  []byte
}

// entry is one registration in the snapshot.
type entry struct {
	reg       Registration
	since     time.Time
	eventTime time.Time
	event     string
	gen       uint64 // matches the one current deadline heap entry
	derived   bool   // reg.ExpiryTime was computed from Deadline
	seeded    bool   // installed by Seed: no deadline pushed yet
	resync    uint64 // the last resync that saw it
	json      []byte // the 9-field encoding
}

var zeroTime time.Time
