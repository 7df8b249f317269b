package hub

import (
	"errors"
	"fmt"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// State is one registration as the hub holds it: what a replica needs to
// hold exactly the same entry (and so encode exactly the same JSON).
type State struct {
	// Reg has the realm lower-cased and ExpiryTime as shown (computed from
	// Deadline when the SBC gave none, which Derived then says).
	Reg       Registration
	Derived   bool
	Since     time.Time // registered since
	EventTime time.Time // time of the last change
	Event     string    // event of the last change
}

// Applied is one change sequenced outside the hub (by a cluster's shared
// log): the hub applies it as given, with its seq and time.
type Applied struct {
	Realm string
	Seq   uint64
	Event string
	User  string
	Time  time.Time
	// State is the user's new state; nil when the user is no longer
	// registered (unregistered, expired).
	State *State
}

// ErrGap is returned by Apply when a change does not follow the realm's
// latest seq: the caller missed changes and must Rebuild.
var ErrGap = errors.New("hub: change does not follow the realm's seq")

// errStopped is Apply's error after Run has ended.
var errStopped = errors.New("hub: stopped")

// Seed installs states without emitting any change. It is for a hub whose
// state is taken over from elsewhere (a cluster's new sequencer), and must be
// called before Run. A seeded entry's deadline is armed by the first
// re-read of its registration from the source (or a change of it), so an
// entry whose registration is gone is removed by the source's first resync,
// not guessed at from a deadline that may be stale.
func (h *Hub) Seed(states []State) error {
	if h.started.Load() {
		return errors.New("hub: Seed after Run")
	}
	for i := range states {
		st := &states[i]
		r := h.realm(st.Reg.Realm, true)
		r.mu.Lock()
		e := h.install(r, st)
		e.seeded = true
		r.mu.Unlock()
	}
	return nil
}

// install makes st the entry of its user in r (locked by the caller),
// keeping the counters right, and returns it. No deadline is pushed.
func (h *Hub) install(r *realmState, st *State) *entry {
	reg := st.Reg
	reg.Realm = r.name
	e := &entry{reg: reg, since: st.Since, eventTime: st.EventTime, event: st.Event, gen: h.nextGen(), derived: st.Derived}
	e.json = appendUser(nil, &e.reg)
	old := r.users[reg.User]
	switch {
	case old == nil:
		r.online++
		r.protocols[reg.Protocol]++
		r.usersChanged()
	case old.reg.Protocol != reg.Protocol:
		r.protocols[old.reg.Protocol]--
		r.protocols[reg.Protocol]++
	}
	r.users[reg.User] = e
	return e
}

// Apply applies externally sequenced changes in order, on the owner
// goroutine, and queues them for subscribers exactly as given (seq, event,
// time). A change at or below its realm's seq was applied already and is
// skipped; one that does not follow it stops Apply with an error wrapping
// ErrGap (the changes before it stay applied). The hub's own expiry clock
// does not run for applied registrations: their lapse arrives as a change.
func (h *Hub) Apply(changes ...Applied) error {
	err := errStopped
	h.do(func() { err = h.apply(changes) })
	return err
}

func (h *Hub) apply(changes []Applied) error {
	for i := range changes {
		c := &changes[i]
		r := h.realm(c.Realm, true)
		r.mu.Lock()
		switch {
		case c.Seq <= r.seq:
			r.mu.Unlock()
			continue
		case c.Seq != r.seq+1:
			have := r.seq
			r.mu.Unlock()
			return fmt.Errorf("%w: realm %s is at %d, change has %d", ErrGap, r.name, have, c.Seq)
		}
		var body []byte
		var reg *Registration // for the Observe hook
		if c.State != nil {
			e := h.install(r, c.State)
			body = e.json
			reg = &e.reg
		} else {
			if old := r.users[c.User]; old != nil {
				delete(r.users, c.User)
				r.online--
				r.protocols[old.reg.Protocol]--
				r.usersChanged()
				reg = &old.reg
			}
			body = wire.AppendInactive(nil, c.User, r.clients[Fold(c.User)])
			if c.Event == EventExpired {
				h.Metrics.Expirations.Add(1)
			}
		}
		h.publish(r, h.record(r, c.Seq, c.Event, c.User, body, c.Time))
		if reg != nil {
			h.observe(r, c.Event, reg, c.Time)
		}
		r.mu.Unlock()
	}
	return nil
}

// Rebuild replaces the hub's state with a snapshot taken elsewhere: epoch,
// each realm's seq (a realm not in seqs is at 0) and every registration.
// Realms whose seq (or the epoch) changed lose their history, and their
// subscribers are marked to get a fresh snapshot ("resync"), so a replica that
// missed changes never leaves a silent gap; realms already at their seq are
// left alone. It also marks the hub ready.
func (h *Hub) Rebuild(epoch string, seqs map[string]uint64, states []State) {
	h.RebuildWithHistory(epoch, seqs, states, nil)
}

// RebuildWithHistory is Rebuild that also fills the resume history of every
// realm it rebuilds from recent, the changes that led to the snapshot (oldest
// first, any realms mixed): of each realm, the run of changes with
// consecutive seqs that ends at the realm's seq is kept (at most the
// history's bound), so a client may resume from before the snapshot. A
// replica that starts from a shared log passes the log's tail here.
func (h *Hub) RebuildWithHistory(epoch string, seqs map[string]uint64, states []State, recent []Applied) {
	h.do(func() { h.rebuild(epoch, seqs, states, recent) })
}

func (h *Hub) rebuild(epoch string, seqs map[string]uint64, states []State, recent []Applied) {
	byRealmRecent := make(map[string][]*Applied)
	for i := range recent {
		c := &recent[i]
		name := Fold(c.Realm)
		byRealmRecent[name] = append(byRealmRecent[name], c)
	}
	byRealm := make(map[string][]*State)
	for i := range states {
		st := &states[i]
		name := Fold(st.Reg.Realm)
		byRealm[name] = append(byRealm[name], st)
	}
	names := make(map[string]struct{})
	for n := range seqs {
		names[Fold(n)] = struct{}{}
	}
	for n := range byRealm {
		names[n] = struct{}{}
	}
	h.mu.RLock()
	for n := range h.realms {
		names[n] = struct{}{}
	}
	h.mu.RUnlock()
	lowSeqs := make(map[string]uint64, len(seqs))
	for n, s := range seqs {
		lowSeqs[Fold(n)] = s
	}

	newEpoch := epoch != h.Epoch()
	h.epoch.Store(&epoch)
	rebuilt := 0
	for n := range names {
		r := h.realm(n, true)
		r.mu.Lock()
		if !newEpoch && r.seq == lowSeqs[n] {
			r.mu.Unlock()
			continue
		}
		rebuilt++
		r.users = make(map[string]*entry, len(byRealm[n]))
		r.online = 0
		r.protocols = make(map[string]int)
		r.usersChanged()
		for _, st := range byRealm[n] {
			h.install(r, st)
		}
		r.seq = lowSeqs[n]
		r.history = ring{buf: make([]*Change, 0, 16), max: h.opts.History}
		h.backfill(r, byRealmRecent[n])
		r.fromLog = r.owner == "" && r.history.len() > 0
		for s := range r.subs {
			s.forceResync()
		}
		r.mu.Unlock()
	}
	h.Metrics.Resyncs.Add(1)
	h.Metrics.SyncedAtUnix.Store(h.now().UnixMilli())
	if !h.ready.Swap(true) {
		h.log.Info("presence snapshot loaded", "registrations", len(states), "epoch", epoch)
	} else if rebuilt > 0 {
		h.log.Warn("presence rebuilt from a snapshot", "realms", rebuilt, "new_epoch", newEpoch)
	}
}

// backfill puts into r's (empty) history the changes of recent that end at
// r.seq with consecutive seqs; r.mu is held by the caller.
func (h *Hub) backfill(r *realmState, recent []*Applied) {
	end := len(recent)
	for end > 0 && recent[end-1].Seq > r.seq {
		end--
	}
	if end == 0 || recent[end-1].Seq != r.seq {
		return
	}
	start := end - 1
	for start > 0 && end-start < h.opts.History && recent[start-1].Seq == recent[start].Seq-1 {
		start--
	}
	for _, c := range recent[start:end] {
		var body []byte
		if c.State != nil {
			reg := c.State.Reg
			body = appendUser(nil, &reg)
		} else {
			body = wire.AppendInactive(nil, c.User, r.clients[Fold(c.User)])
		}
		ch := &Change{Realm: r.name, Seq: c.Seq, Event: c.Event, User: c.User, Time: c.Time}
		ch.Body = wire.AppendChange(make([]byte, 0, wire.ChangeSize(len(body))), c.Seq, c.Event, body, c.Time)
		r.history.add(ch)
	}
}
