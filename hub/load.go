package hub

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// parallelLoadMin is the smallest first load stored by realm in parallel
// (loadQuiet); a smaller one is not worth the goroutines. A variable for the
// tests, which compare it with the serial loop.
var parallelLoadMin = 1024

// loadQuiet is the first load of resync (quiet) spread over the CPUs, one
// realm at a time per goroutine: realms share nothing that upsert writes
// for a new entry of a realm without subscribers (no change is emitted, the
// deadline goes to a slot of its own, the generation was handed out
// before). On 2 cores it halved the hub's part of a cold start, which ran
// on one goroutine after Redis had been read.
//
// It stores what upsert would store as a new, quiet entry, and does
// nothing else: every other registration (a realm with subscribers, a user
// already in the snapshot, a repeat of a user, a lapsed registration where
// upsert would remove something) is left to upsert, which the caller runs
// over them afterwards in their order, as a serial resync would. The
// deadlines are appended to the heap in the registrations' order too, so
// the snapshot, the heap and every change are what the serial loop made.
// h.bulk must be set.
func (h *Hub) loadQuiet(regs []Registration, now time.Time) {
	type group struct {
		r   *realmState
		idx []int32
	}
	// Realms are created here, on the owner goroutine, as upsert would:
	// for every registration that is not lapsed. A lapsed one of an
	// unknown realm is nothing to upsert either (remove finds no realm).
	groups := make(map[string]*group)
	var order []*group
	rest := make([]bool, len(regs)) // left to upsert
	for i := range regs {
		reg := &regs[i]
		lapsed := !reg.Deadline.IsZero() && !reg.Deadline.After(now)
		name := Fold(reg.Realm)
		g := groups[name]
		if g == nil {
			r := h.realm(name, !lapsed)
			if r == nil {
				continue
			}
			g = &group{r: r}
			groups[name] = g
			order = append(order, g)
		}
		g.idx = append(g.idx, int32(i))
	}
	base := h.lastGen
	h.lastGen += uint64(len(regs)) // regs[i] gets base+1+i
	dl := make([]deadline, len(regs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(order)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1)) - 1
				if n >= len(order) {
					return
				}
				g := order[n]
				h.loadRealmQuiet(g.r, g.idx, regs, now, base, dl, rest)
			}
		}()
	}
	wg.Wait()
	for i := range regs {
		switch {
		case rest[i]:
			h.upsert(&regs[i], now, true)
		case dl[i].e != nil:
			h.deadlines.Append(dl[i])
		}
	}
}

// loadRealmQuiet stores the registrations idx of regs, all of realm r, that
// upsert would store as new quiet entries, and marks the others in rest.
// Each slot of dl and rest is written by one goroutine only.
func (h *Hub) loadRealmQuiet(r *realmState, idx []int32, regs []Registration, now time.Time, base uint64, dl []deadline, rest []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.subs) > 0 {
		for _, i := range idx {
			rest[i] = true
		}
		return
	}
	added := false
	for _, i := range idx {
		reg := regs[i]
		reg.Realm = r.name
		if r.users[reg.User] != nil {
			rest[i] = true // an update of it, or its removal when lapsed
			continue
		}
		if !reg.Deadline.IsZero() && !reg.Deadline.After(now) {
			continue // lapsed, and nothing to remove
		}
		derived := reg.ExpiryTime == 0 && !reg.Deadline.IsZero()
		if derived {
			reg.ExpiryTime = reg.Deadline.UnixMilli()
		}
		gen := base + 1 + uint64(i)
		e := &entry{reg: reg, since: now, eventTime: now, event: EventRegistered, gen: gen, derived: derived, resync: h.resyncs}
		e.json = appendUser(make([]byte, 0, userJSONSize(&e.reg)), &e.reg)
		r.online++
		r.protocols[reg.Protocol]++
		r.users[reg.User] = e
		added = true
		if !reg.Deadline.IsZero() {
			dl[i] = deadline{at: reg.Deadline.UnixNano(), e: e, gen: gen}
		}
	}
	if added {
		r.usersChanged()
	}
}
