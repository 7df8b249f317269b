package hub

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehub/presencehub/hub/wire"
)

// realmState is the presence of one realm (one account). Only the owner
// goroutine writes it, under mu; readers hold mu.RLock.
type realmState struct {
	name string

	// owner is the account sid that holds the realm ("" none), ownerTag
	// what it adds to the hub's epoch: the realm's epoch changes with its
	// holder, so a later holder never resumes into an earlier one's changes.
	owner    string
	ownerTag string
	// fromLog: the history was filled by RebuildWithHistory while nobody
	// had claimed the realm in this process; the first claim keeps it.
	fromLog bool

	mu        sync.RWMutex
	users     map[string]*entry
	clients   map[string]Flags // lower-cased username -> flags
	seq       uint64
	history   ring
	subs      map[*Subscription]struct{}
	online    int
	protocols map[string]int

	perSecond [60]bucket // changes per second, last minute
	perMinute [60]bucket // online count at the end of each minute, last hour

	// Caches cleared (under mu's write lock) whenever the set of users
	// changes, and rebuilt lazily by readers (under the read lock).
	names atomic.Pointer[[]string] // registered user names, sorted
	list  atomic.Pointer[[]byte]   // GET list encoding
}

type bucket struct {
	at    int64 // unix second or minute
	count int
}

func newRealm(name string, history int) *realmState {
	return &realmState{
		name:      name,
		users:     make(map[string]*entry),
		subs:      make(map[*Subscription]struct{}),
		protocols: make(map[string]int),
		history:   ring{buf: make([]*Change, 0, 16), max: history},
	}
}

// sortedUsers returns the registered names in order; r.mu must be held
// (read or write). The result is shared: callers must not modify it.
func (r *realmState) sortedUsers() []string {
	if p := r.names.Load(); p != nil {
		return *p
	}
	names := slices.Sorted(maps.Keys(r.users))
	// Stored while the caller holds the lock: the owner clears the cache
	// under the write lock, so a stale list can never be stored after it.
	r.names.Store(&names)
	return names
}

// usersChanged drops the caches that depend on the set of users; r.mu must
// be held for writing.
func (r *realmState) usersChanged() {
	r.names.Store(nil)
	r.list.Store(nil)
}

func (r *realmState) recordActivity(now time.Time) {
	s := now.Unix()
	b := &r.perSecond[s%60]
	if b.at != s {
		*b = bucket{at: s}
	}
	b.count++
	m := s / 60
	r.perMinute[m%60] = bucket{at: m, count: r.online}
}

// ring is a bounded history of changes, oldest first.
type ring struct {
	buf   []*Change
	start int
	max   int
}

func (h *ring) add(c *Change) {
	if len(h.buf) < h.max {
		h.buf = append(h.buf, c)
		return
	}
	h.buf[h.start] = c
	h.start = (h.start + 1) % len(h.buf)
}

func (h *ring) len() int { return len(h.buf) }

// at returns the i-th oldest change.
func (h *ring) at(i int) *Change { return h.buf[(h.start+i)%len(h.buf)] }

// after returns the changes with Seq > seq, oldest first; ok is false when
// the history no longer reaches back to seq+1.
func (h *ring) after(seq, current uint64) (out []*Change, ok bool) {
	if seq == current {
		return nil, true
	}
	if seq > current || h.len() == 0 {
		return nil, false
	}
	oldest := h.at(0).Seq
	if seq+1 < oldest {
		return nil, false
	}
	for i := int(seq + 1 - oldest); i < h.len(); i++ {
		out = append(out, h.at(i))
	}
	return out, true
}

// Get returns the 9-field JSON of one user of realm: the registration when
// there is one, otherwise the inactive shape with the client's flags (or 0).
func (h *Hub) Get(realm, user string) []byte {
	b := h.AppendUsers(nil, realm, []string{user})
	return b[1 : len(b)-1]
}

// AppendUsers appends a JSON array with the 9-field object of each name, in
// the given order. An empty realm name gives every name as inactive.
func (h *Hub) AppendUsers(b []byte, realm string, names []string) []byte {
	b = append(b, '[')
	r := h.realm(realm, false)
	if r != nil {
		r.mu.RLock()
		defer r.mu.RUnlock()
	}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		if r == nil {
			b = wire.AppendInactive(b, n, Flags{})
			continue
		}
		if e := r.users[n]; e != nil {
			b = append(b, e.json...)
			continue
		}
		b = wire.AppendInactive(b, n, r.clients[Fold(n)])
	}
	return append(b, ']')
}

// AppendAll appends a JSON array of every registered user of realm in the
// 9-field shape, sorted by name.
func (h *Hub) AppendAll(b []byte, realm string) []byte {
	b = append(b, '[')
	r := h.realm(realm, false)
	if r == nil {
		return append(b, ']')
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for i, n := range r.sortedUsers() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.users[n].json...)
	}
	return append(b, ']')
}

// ListJSON returns the JSON array of "user@realm" strings of realm, sorted.
// The encoding is cached until the set of users changes; callers must not
// modify it.
func (h *Hub) ListJSON(realm string) []byte {
	r := h.realm(realm, false)
	if r == nil {
		return []byte("[]")
	}
	if p := r.list.Load(); p != nil {
		return *p
	}
	r.mu.RLock()
	b := make([]byte, 0, len(r.users)*(len(r.name)+16)+2)
	b = append(b, '[')
	for i, n := range r.sortedUsers() {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendString(b, n+"@"+r.name)
	}
	b = append(b, ']')
	// No spare capacity: an append by a caller must copy, not write into
	// the cache that other readers share.
	b = b[:len(b):len(b)]
	r.list.Store(&b) // under the read lock, as in sortedUsers

	r.mu.RUnlock()
	return b
}

// UserView is one registered user, for the dashboard.
type UserView struct {
	Name       string
	Contact    string
	Protocol   string
	Proxy      string
	ExpiryTime int64
	Deadline   time.Time
	Since      time.Time
	EventTime  time.Time
	LastEvent  string
	Flags      Flags
}

// Users returns every registered user of realm, sorted by name.
func (h *Hub) Users(realm string) []UserView {
	r := h.realm(realm, false)
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]UserView, 0, len(r.users))
	for _, n := range r.sortedUsers() {
		e := r.users[n]
		out = append(out, UserView{
			Name: n, Contact: e.reg.Contact, Protocol: e.reg.Protocol, Proxy: e.reg.Proxy,
			ExpiryTime: e.reg.ExpiryTime, Deadline: e.reg.Deadline, Since: e.since,
			EventTime: e.eventTime, LastEvent: e.event,
			Flags: e.reg.flags(),
		})
	}
	return out
}

// Stats summarise one realm.
type Stats struct {
	Online            int
	Protocols         map[string]int // protocol ("" when unknown) -> online users
	ChangesLastMinute int
	// Epoch and Seq are the realm's position: a stream subscriber resumes
	// from them.
	Epoch string
	Seq   uint64
	// Series is the online count at the end of each of the last 60 minutes,
	// oldest first (the last element is the current count).
	Series []int
}

// Stats returns the counters of realm.
func (h *Hub) Stats(realm string) Stats {
	r := h.realm(realm, false)
	if r == nil {
		return Stats{Epoch: h.Epoch(), Protocols: map[string]int{}, Series: make([]int, 60)}
	}
	now := h.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := Stats{Epoch: h.epochOf(r), Online: r.online, Seq: r.seq, Protocols: make(map[string]int, len(r.protocols))}
	for p, n := range r.protocols {
		if n > 0 {
			st.Protocols[p] = n
		}
	}
	sec := now.Unix()
	for _, b := range r.perSecond {
		if b.at > sec-60 && b.at <= sec {
			st.ChangesLastMinute += b.count
		}
	}
	// A minute with no change ended with the count of the minute before it:
	// carry recorded values forward; minutes before the first record take
	// that record's value.
	min := sec / 60
	st.Series = make([]int, 60)
	val, have := r.online, false
	for i := 0; i < 60; i++ {
		m := min - 59 + int64(i)
		if b := r.perMinute[m%60]; b.at == m {
			if !have {
				for j := 0; j < i; j++ {
					st.Series[j] = b.count
				}
			}
			val, have = b.count, true
		}
		st.Series[i] = val
	}
	if !have {
		for i := range st.Series {
			st.Series[i] = r.online
		}
	}
	st.Series[59] = r.online
	return st
}

// Recent returns up to n of the latest changes of realm, newest first.
func (h *Hub) Recent(realm string, n int) []*Change {
	r := h.realm(realm, false)
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Change
	for i := r.history.len() - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, r.history.at(i))
	}
	return out
}

// Realms returns the names of the realms the hub knows, sorted.
func (h *Hub) Realms() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return slices.Sorted(maps.Keys(h.realms))
}
