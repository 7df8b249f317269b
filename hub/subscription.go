package hub

import (
	"sync"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// Position is where a subscriber is in a realm's history.
type Position struct {
	Epoch string
	Seq   uint64
}

// SubscribeRequest describes a subscription.
type SubscribeRequest struct {
	Realm string
	// Users is a watchlist; nil or empty means every user of the realm.
	Users []string
	// Since asks to resume after this position.
	Since *Position
	// Owner, if set, is the account sid the subscriber was authorised
	// for: the subscription claims the realm for it first (see Claim), so
	// it never starts from a previous holder's history.
	Owner string
	// Deferred asks for no snapshot now: the subscription starts marked
	// for one (Next reports resync) and the caller builds it with
	// Resnapshot when it is ready to write it, so an unwritten snapshot
	// costs no memory. Start.Size estimates its encoded size. A resume
	// is still answered at once.
	Deferred bool
	// Wake is signalled, without blocking, whenever items are queued or the
	// subscription needs attention. Several subscriptions may share one.
	Wake chan struct{}
	// Notify, if set, is called instead of signalling Wake. It is called
	// with the realm's lock held, so it must not block or call back into
	// the hub; starting a goroutine is fine.
	Notify func()
}

// Snapshot is the state of a realm (or of a watchlist) at Seq.
type Snapshot struct {
	Epoch string
	Seq   uint64
	// Users are encoded in the stream's shape: the 9 REST fields plus
	// event_time. Whole-realm snapshots hold registered users sorted by name;
	// watchlist snapshots hold each watched name, registered or not.
	Users [][]byte
}

// Start is what a new subscription begins with: either a snapshot, or (when
// Since could be served) the missed changes in order.
type Start struct {
	Resumed  bool
	Snapshot Snapshot // when !Resumed and not Deferred
	Missed   []*Change
	// Epoch is the realm's epoch at subscription.
	Epoch string
	// Size is the encoded size in bytes of the users of the snapshot a
	// Deferred subscription will get, as of now.
	Size int
}

// Item is one queued change. Conflated is true when older changes of the same
// user were dropped from the queue in favour of this one, so the subscriber
// knows a jump in seq is intended.
type Item struct {
	Change    *Change
	Conflated bool
}

// Subscription receives the changes of one realm (optionally one watchlist).
type Subscription struct {
	realm *realmState
	hub   *Hub
	users map[string]struct{} // nil: all
	names []string            // watchlist in request order
	wake  chan struct{}
	note  func()

	mu      sync.Mutex
	queue   []Item
	max     int
	resync  bool
	closed  bool
	revoked bool // closed because the realm changed owner
}

// Subscribe registers a subscription and returns its start in one step under
// the realm's lock, so no change falls between the two.
func (h *Hub) Subscribe(req SubscribeRequest) (*Subscription, Start) {
	r := h.realm(req.Realm, true)
	s := &Subscription{realm: r, hub: h, wake: req.Wake, note: req.Notify, max: h.opts.QueueLen}
	if len(req.Users) > 0 {
		s.users = make(map[string]struct{}, len(req.Users))
		for _, u := range req.Users {
			if _, dup := s.users[u]; !dup {
				s.users[u] = struct{}{}
				s.names = append(s.names, u)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Owner != "" {
		h.claimLocked(r, req.Owner)
	}
	if h.stopped.Load() {
		// Run has ended and nothing would ever close it: hand back a
		// closed subscription, so Next reports closed at once.
		s.closed = true
		s.signal()
		return s, Start{Snapshot: s.snapshotLocked()}
	}
	epoch := h.epochOf(r)
	st := Start{Epoch: epoch}
	if p := req.Since; p != nil && p.Epoch == epoch {
		if missed, ok := r.history.after(p.Seq, r.seq); ok {
			st.Resumed = true
			for _, c := range missed {
				if s.wants(c.User) {
					st.Missed = append(st.Missed, c)
				}
			}
		}
	}
	switch {
	case st.Resumed:
	case req.Deferred:
		s.resync = true
		st.Size = s.snapshotSizeLocked()
	default:
		st.Snapshot = s.snapshotLocked()
	}
	r.subs[s] = struct{}{}
	h.Metrics.Subscribers.Add(1)
	return s, st
}

func (s *Subscription) wants(user string) bool {
	if s.users == nil {
		return true
	}
	_, ok := s.users[user]
	return ok
}

// snapshotLocked builds the subscription's snapshot; r.mu must be held.
func (s *Subscription) snapshotLocked() Snapshot {
	r := s.realm
	snap := Snapshot{Epoch: s.hub.epochOf(r), Seq: r.seq}
	names := s.names
	if s.users == nil {
		names = r.sortedUsers()
	}
	if len(names) == 0 {
		return snap
	}
	// Every user's encoding goes into one buffer of the estimated size
	// (each user a capped slice of it), not a buffer of its own: a
	// watchlist of 8,000 inactive names is 2 allocations, not 16,000.
	arena := make([]byte, 0, s.snapshotSizeLocked())
	snap.Users = make([][]byte, 0, len(names))
	add := func(user []byte, t time.Time) {
		start := len(arena)
		arena = wire.AppendStreamUser(arena, user, t)
		snap.Users = append(snap.Users, arena[start:len(arena):len(arena)])
	}
	var scratch []byte // an inactive user's 9 fields, before event_time
	for _, n := range names {
		if e := r.users[n]; e != nil {
			add(e.json, e.eventTime)
			continue
		}
		scratch = wire.AppendInactive(scratch[:0], n, r.clients[Fold(n)])
		add(scratch, zeroTime)
	}
	return snap
}

// inactiveSize is about what appendInactive and withEventTime add to a name.
const inactiveSize = 212 // 209 for a name without escapes; the snapshot's buffer is this size

// snapshotSizeLocked estimates the encoded size of the users of the
// subscription's snapshot without building it; r.mu must be held.
func (s *Subscription) snapshotSizeLocked() int {
	r := s.realm
	n := 0
	if s.users == nil {
		for _, e := range r.users {
			n += len(e.json) + 40
		}
		return n
	}
	for _, name := range s.names {
		if e := r.users[name]; e != nil {
			n += len(e.json) + 40
			continue
		}
		n += len(name) + inactiveSize
	}
	return n
}

// push queues c; the realm's lock is held by the caller. It never blocks: a
// full queue is compacted to the latest change per user, and if that does not
// free enough room the subscriber is marked for a fresh snapshot.
func (s *Subscription) push(c *Change) {
	if !s.wants(c.User) {
		return
	}
	s.mu.Lock()
	if s.closed || s.resync {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= s.max {
		s.conflate()
	}
	if !s.resync {
		s.queue = append(s.queue, Item{Change: c})
	}
	s.mu.Unlock()
	s.signal()
}

// conflate keeps only the newest queued change per user. If more than half
// the queue is still distinct users, the subscriber is too far behind for
// changes to help: it gets a fresh snapshot instead.
func (s *Subscription) conflate() {
	latest := make(map[string]int, len(s.queue))
	for i, it := range s.queue {
		latest[it.Change.User] = i
	}
	if len(latest) > s.max/2 {
		s.queue = nil
		s.resync = true
		s.hub.Metrics.SubResyncs.Add(1)
		return
	}
	kept := s.queue[:0]
	for i, it := range s.queue {
		if latest[it.Change.User] == i {
			kept = append(kept, it)
			continue
		}
		// The newest change of this user now stands for the dropped ones.
		s.queue[latest[it.Change.User]].Conflated = true
	}
	for i := len(kept); i < len(s.queue); i++ {
		s.queue[i] = Item{}
	}
	s.queue = kept
	s.hub.Metrics.Conflations.Add(1)
}

func (s *Subscription) signal() {
	if s.note != nil {
		s.note()
		return
	}
	if s.wake == nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next moves the queued items into buf (reset to length 0) and returns it.
// resync is true when the subscriber fell too far behind: call Resnapshot and
// send that instead. closed is true once the subscription or the hub ended.
func (s *Subscription) Next(buf []Item) (items []Item, resync, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items = append(buf[:0], s.queue...)
	for i := range s.queue {
		s.queue[i] = Item{}
	}
	s.queue = s.queue[:0]
	return items, s.resync, s.closed
}

// Resnapshot returns a fresh snapshot and clears the queue in one step, for a
// subscriber that fell behind.
func (s *Subscription) Resnapshot() Snapshot {
	r := s.realm
	r.mu.Lock()
	defer r.mu.Unlock()
	s.mu.Lock()
	s.queue = s.queue[:0]
	s.resync = false
	s.mu.Unlock()
	return s.snapshotLocked()
}

// Close ends the subscription; it is safe to call more than once.
func (s *Subscription) Close() {
	r := s.realm
	r.mu.Lock()
	if _, ok := r.subs[s]; ok {
		delete(r.subs, s)
		s.hub.Metrics.Subscribers.Add(-1)
	}
	r.mu.Unlock()
	s.close()
}

// Revoked reports whether the subscription was ended because its realm
// changed owner (see Claim) rather than by Close or the hub stopping.
func (s *Subscription) Revoked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revoked
}

// revoke closes s because its realm changed owner; the realm's lock is held.
func (s *Subscription) revoke() {
	s.mu.Lock()
	s.revoked = true
	s.mu.Unlock()
	s.close()
}

func (s *Subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	s.signal()
}

// forceResync drops the queue and marks the subscriber for a fresh snapshot;
// its realm's lock is held by the caller.
func (s *Subscription) forceResync() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.queue = nil
	if !s.resync {
		s.resync = true
		s.hub.Metrics.SubResyncs.Add(1)
	}
	s.mu.Unlock()
	s.signal()
}

// Queued counts the changes waiting in every subscription's queue, not yet
// taken by its writer. It walks every realm and subscription (each under
// its lock, one at a time): for a scrape or a benchmark's end, not for a
// hot path.
func (h *Hub) Queued() int {
	h.mu.RLock()
	realms := make([]*realmState, 0, len(h.realms))
	for _, r := range h.realms {
		realms = append(realms, r)
	}
	h.mu.RUnlock()
	n := 0
	for _, r := range realms {
		r.mu.RLock()
		for s := range r.subs {
			s.mu.Lock()
			n += len(s.queue)
			s.mu.Unlock()
		}
		r.mu.RUnlock()
	}
	return n
}
