package hub

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestLoadQuietIsTheSerialLoad: a first load stored by realm in parallel
// (loadQuiet) leaves the snapshot, the deadline heap, the changes and what
// subscribers got exactly as the serial loop of upsert does, with the
// registrations it leaves to upsert: repeats of a user (a realm written in
// two cases, a second write), lapsed ones (of an unknown realm, of a known
// one, after a live one of the same user), ones without expiryTime or
// deadline, a realm with a subscriber, a user already in the snapshot.
func TestLoadQuietIsTheSerialLoad(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	var regs []Registration
	for i := range 3000 {
		r := reg(fmt.Sprintf("u%04d", i%2500), fmt.Sprintf("r%02d.example", i%37), now)
		r.Contact += fmt.Sprintf(";n=%d", i)
		r.ExpiryTime += int64(i % 7)
		r.Deadline = r.Deadline.Add(time.Duration(i%5) * time.Millisecond) // equal deadlines too
		switch i % 11 {
		case 1:
			r.Realm = fmt.Sprintf("R%02d.EXAMPLE", i%37) // the same realm, folded
		case 2:
			r.ExpiryTime = 0 // derived from the deadline
		case 3:
			r.Deadline = now.Add(-time.Second) // lapsed
		case 4:
			r.Deadline = time.Time{} // no deadline
		case 5:
			r.Protocol = "wss"
		}
		regs = append(regs, r)
	}
	lapsedNew := reg("gone", "lapsed-only.example", now)
	lapsedNew.Deadline = now.Add(-time.Minute)
	regs = append(regs, lapsedNew)

	type result struct {
		state     string
		deadlines []string
		items     []string
	}
	load := func(t *testing.T, min int) result {
		defer func(old int) { parallelLoadMin = old }(parallelLoadMin)
		parallelLoadMin = min
		h := newHub(Options{Now: clk.Now, Epoch: "e"})
		run(t, h, nil)
		// Before the load: a subscriber in one realm, a user in another.
		sub, _ := h.Subscribe(SubscribeRequest{Realm: "r05.example"})
		h.Update(Update{AOR: "u0007@r07.example", Reg: &Registration{User: "u0007", Realm: "r07.example", Contact: "sip:x", ExpiryTime: now.Add(time.Hour).UnixMilli(), Deadline: now.Add(time.Hour)}})
		h.Resync(slices.Clone(regs))
		var res result
		h.do(func() {
			res.state = dumpHub(h)
			for h.deadlines.Len() > 0 {
				// Stale ones are left behind until the Run loop compacts
				// the heap, which may or may not have run yet.
				if d := h.deadlines.Pop(); h.current(d) {
					res.deadlines = append(res.deadlines, fmt.Sprintf("%d %s@%s", d.at, d.e.reg.User, d.e.reg.Realm))
				}
			}
		})
		// Equal deadlines come out in the order of the heap's layout, which
		// depends on whether the Run loop has compacted it yet.
		slices.Sort(res.deadlines)
		items, _, _ := sub.Next(nil)
		for _, it := range items {
			res.items = append(res.items, string(it.Change.Body))
		}
		return res
	}
	serial := load(t, math.MaxInt)
	parallel := load(t, 1)
	if parallel.state != serial.state {
		t.Errorf("snapshot after the parallel load differs from the serial one:\nparallel:\n%.3000s\nserial:\n%.3000s", parallel.state, serial.state)
	}
	if !reflect.DeepEqual(parallel.deadlines, serial.deadlines) {
		t.Errorf("deadline heap: parallel %d entries, serial %d; first parallel %v, first serial %v",
			len(parallel.deadlines), len(serial.deadlines), parallel.deadlines[:min(5, len(parallel.deadlines))], serial.deadlines[:min(5, len(serial.deadlines))])
	}
	if !reflect.DeepEqual(parallel.items, serial.items) {
		t.Errorf("subscriber got %d changes after the parallel load, %d after the serial one", len(parallel.items), len(serial.items))
	}
	if len(serial.items) == 0 {
		t.Error("the subscriber's realm got no changes: the test does not cover it")
	}
}

// dumpHub writes every realm's state but the generations; owner goroutine.
func dumpHub(h *Hub) string {
	var b []byte
	for _, name := range slices.Sorted(maps.Keys(h.realms)) {
		r := h.realms[name]
		b = fmt.Appendf(b, "realm %s seq %d online %d protocols %v\n", r.name, r.seq, r.online, r.protocols)
		for _, u := range slices.Sorted(maps.Keys(r.users)) {
			e := r.users[u]
			b = fmt.Appendf(b, "  %s %+v since %v at %v %s derived %v seeded %v resync %d %s\n",
				u, e.reg, e.since, e.eventTime, e.event, e.derived, e.seeded, e.resync, e.json)
		}
		for i := range r.history.len() {
			b = fmt.Appendf(b, "  change %s\n", r.history.at(i).Body)
		}
	}
	return string(b)
}
