package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

func openCluster(t *testing.T, opts store.ClusterOptions) (*store.Cluster, *redis.Client) {
	t.Helper()
	srv := storetest.StartRedis(t)
	opts.Redis.URL = srv.URL
	c, err := store.OpenCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	return c, rdb
}

func testState(user, realm string, n int) *hub.State {
	now := time.UnixMilli(1_764_000_000_000 + int64(n))
	return &hub.State{
		Reg: hub.Registration{User: user, Realm: realm, Contact: fmt.Sprintf("sip:%s@10.0.0.%d:5060", user, n%250),
			Protocol: "udp", Proxy: "sip:203.0.113.1:5060", SBCAddress: "10.1.1.1", AllowDirectUser: 1,
			ExpiryTime: now.Add(time.Hour).UnixMilli(), Deadline: now.Add(time.Hour)},
		Since: now, EventTime: now, Event: hub.EventRegistered,
	}
}

// TestClusterFencedAppend: only the lease's holder appends; a token whose
// lease passed to another (a deposed sequencer) gets ErrDeposed and
// appends nothing, as does an append for another epoch.
func TestClusterFencedAppend(t *testing.T) {
	ctx := context.Background()
	c, rdb := openCluster(t, store.ClusterOptions{LeaseTTL: 200 * time.Millisecond})
	epoch, err := c.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, b := store.NewLeaseToken(), store.NewLeaseToken()
	if ok, err := c.AcquireLease(ctx, a); !ok || err != nil {
		t.Fatalf("first AcquireLease = %v, %v; want true", ok, err)
	}
	if ok, err := c.AcquireLease(ctx, b); ok || err != nil {
		t.Fatalf("AcquireLease while held = %v, %v; want false", ok, err)
	}
	ch := []store.LogChange{
		{Realm: "F.example", User: "alice", Event: hub.EventRegistered, Time: time.Now(), State: testState("alice", "f.example", 1)},
		{Realm: "f.example", User: "bob", Event: hub.EventRegistered, Time: time.Now(), State: testState("bob", "f.example", 2)},
	}
	seqs, err := c.Append(ctx, a, epoch, ch)
	if err != nil || !reflect.DeepEqual(seqs, []uint64{1, 2}) {
		t.Fatalf("holder's Append = %v, %v; want [1 2]", seqs, err)
	}
	if _, err := c.Append(ctx, a, "not-the-epoch", ch[:1]); !errors.Is(err, store.ErrLogChanged) {
		t.Errorf("Append for another epoch = %v, want ErrLogChanged", err)
	}
	if _, err := c.Append(ctx, b, epoch, ch[:1]); !errors.Is(err, store.ErrDeposed) {
		t.Errorf("non-holder's Append = %v, want ErrDeposed", err)
	}

	// a stops renewing (paused); b takes the lease once it lapses.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := c.AcquireLease(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease never lapsed for another token")
		}
		time.Sleep(20 * time.Millisecond)
	}
	lenBefore := rdb.XLen(ctx, "presencehub:{cluster}:log").Val()
	if _, err := c.Append(ctx, a, epoch, ch[:1]); !errors.Is(err, store.ErrDeposed) {
		t.Errorf("deposed holder's Append = %v, want ErrDeposed", err)
	}
	if err := c.RenewLease(ctx, a); !errors.Is(err, store.ErrDeposed) {
		t.Errorf("deposed holder's RenewLease = %v, want ErrDeposed", err)
	}
	if n := rdb.XLen(ctx, "presencehub:{cluster}:log").Val(); n != lenBefore {
		t.Errorf("log length %d after the deposed append, want %d (unchanged)", n, lenBefore)
	}
	if err := c.ReleaseLease(ctx, a); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.LeaseHolder(ctx); h != b {
		t.Errorf("after the deposed token's release the holder is %q, want the new holder %q", h, b)
	}
	seqs, err = c.Append(ctx, b, epoch, ch[1:])
	if err != nil || !reflect.DeepEqual(seqs, []uint64{3}) {
		t.Errorf("new holder's Append = %v, %v; want [3]", seqs, err)
	}
	if err := c.RenewLease(ctx, b); err != nil {
		t.Errorf("holder's RenewLease = %v", err)
	}
	if err := c.ReleaseLease(ctx, b); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.LeaseHolder(ctx); h != "" {
		t.Errorf("after release the holder is %q, want none", h)
	}
}

// TestClusterEpoch: the epoch is created once and stays; when the stream is
// lost while the epoch remains, a new epoch (and log) begins and appends
// for the old one are refused.
func TestClusterEpoch(t *testing.T) {
	ctx := context.Background()
	c, rdb := openCluster(t, store.ClusterOptions{})
	e1, err := c.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e2, _ := c.Epoch(ctx); e2 != e1 {
		t.Fatalf("second Epoch = %q, want %q", e2, e1)
	}
	tok := store.NewLeaseToken()
	if ok, _ := c.AcquireLease(ctx, tok); !ok {
		t.Fatal("lease not acquired")
	}
	if _, err := c.Append(ctx, tok, e1, []store.LogChange{{Realm: "e.example", User: "u", Event: hub.EventRegistered, Time: time.Now(), State: testState("u", "e.example", 1)}}); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, "presencehub:{cluster}:log")
	e3, err := c.Epoch(ctx)
	if err != nil || e3 == e1 {
		t.Fatalf("Epoch after the log was lost = %q, %v; want a new one (old %q)", e3, err, e1)
	}
	if _, err := c.Append(ctx, tok, e1, []store.LogChange{{Realm: "e.example", User: "u", Event: hub.EventUnregistered, Time: time.Now()}}); !errors.Is(err, store.ErrLogChanged) {
		t.Errorf("Append for the lost epoch = %v, want ErrLogChanged", err)
	}
	seqs, err := c.Append(ctx, tok, e3, []store.LogChange{{Realm: "e.example", User: "u", Event: hub.EventRegistered, Time: time.Now(), State: testState("u", "e.example", 2)}})
	if err != nil || seqs[0] != 1 {
		t.Errorf("first Append of the new log = %v, %v; want seq 1", seqs, err)
	}
}

// TestClusterRetention: the log is trimmed by length, and Status tells a
// reader that its position was trimmed away.
func TestClusterRetention(t *testing.T) {
	ctx := context.Background()
	c, _ := openCluster(t, store.ClusterOptions{MaxEntries: 100})
	epoch, _ := c.Epoch(ctx)
	tok := store.NewLeaseToken()
	c.AcquireLease(ctx, tok)
	st0, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		var batch []store.LogChange
		for j := range 50 {
			u := fmt.Sprintf("u%d", j)
			batch = append(batch, store.LogChange{Realm: "t.example", User: u, Event: hub.EventRegistered, Time: time.Now(), State: testState(u, "t.example", i)})
		}
		if _, err := c.Append(ctx, tok, epoch, batch); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Length > 300 || st.Appended != 1000 {
		t.Errorf("after 1,000 appends with MaxEntries 100: length %d (want ≤ 300, trimmed in whole nodes), appended %d (want 1000)", st.Length, st.Appended)
	}
	if !st.Missed(st0.Appended) {
		t.Errorf("status %+v: a reader at the log's start does not know it missed trimmed entries", st)
	}
	if st.Missed(st.Appended) || st.Missed(st.FirstN-1) {
		t.Errorf("status %+v: a reader at the end, or just before the first entry, counts as having missed entries", st)
	}
	// A snapshot still gives every user's state.
	s, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.States) != 50 || s.Seqs["t.example"] != 1000 {
		t.Errorf("snapshot after trimming: %d states, seq %d; want 50 and 1000", len(s.States), s.Seqs["t.example"])
	}
}

// model is what a log's changes make of the users: the expected state.
type model struct {
	mu    sync.Mutex
	users map[string]string // user@realm -> contact
	seqs  map[string]uint64
}

// TestClusterSnapshotConsistent: snapshots taken while a sequencer appends
// without pause, each followed by reading the log on from its position and
// applying by seq, end exactly at the appender's final state; the recent
// changes end at each realm's seq.
func TestClusterSnapshotConsistent(t *testing.T) {
	ctx := context.Background()
	c, _ := openCluster(t, store.ClusterOptions{Backfill: 500})
	epoch, _ := c.Epoch(ctx)
	tok := store.NewLeaseToken()
	c.AcquireLease(ctx, tok)
	m := &model{users: make(map[string]string), seqs: make(map[string]uint64)}
	realms := []string{"a.example", "b.example", "c.example"}
	stop := make(chan struct{})
	appended := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		n := 0
		for {
			select {
			case <-stop:
				appended <- nil
				return
			default:
			}
			var batch []store.LogChange
			for range 1 + rng.IntN(20) {
				n++
				realm, user := realms[rng.IntN(len(realms))], fmt.Sprintf("u%d", rng.IntN(200))
				ch := store.LogChange{Realm: realm, User: user, Time: time.Now()}
				if rng.IntN(3) == 0 {
					ch.Event = hub.EventUnregistered
				} else {
					ch.Event, ch.State = hub.EventRegistered, testState(user, realm, n)
				}
				batch = append(batch, ch)
			}
			// The lease must not lapse while this runs on a slow machine.
			if err := c.RenewLease(ctx, tok); err != nil {
				appended <- err
				return
			}
			seqs, err := c.Append(ctx, tok, epoch, batch)
			if err != nil {
				appended <- err
				return
			}
			m.mu.Lock()
			for i, ch := range batch {
				if ch.State != nil {
					m.users[ch.User+"@"+ch.Realm] = ch.State.Reg.Contact
				} else {
					delete(m.users, ch.User+"@"+ch.Realm)
				}
				m.seqs[ch.Realm] = seqs[i]
			}
			m.mu.Unlock()
		}
	}()

	type replica struct {
		last  string
		seqs  map[string]uint64
		users map[string]string
	}
	var reps []*replica
	for range 4 {
		s, err := c.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Epoch != epoch {
			t.Fatalf("snapshot epoch %q, want %q", s.Epoch, epoch)
		}
		r := &replica{last: s.Last, seqs: s.Seqs, users: make(map[string]string)}
		for _, st := range s.States {
			r.users[st.Reg.User+"@"+st.Reg.Realm] = st.Reg.Contact
		}
		for realm, seq := range s.Seqs {
			var tail []uint64
			for _, a := range s.Recent {
				if a.Realm == realm {
					tail = append(tail, a.Seq)
				}
			}
			if len(tail) == 0 || tail[len(tail)-1] != seq {
				t.Errorf("snapshot's recent changes of %s end at %v, want at its seq %d", realm, tail[max(0, len(tail)-1):], seq)
			}
		}
		reps = append(reps, r)
	}
	close(stop)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	for i, r := range reps {
		for {
			entries, last, err := c.Read(ctx, r.last, -1)
			if err != nil {
				t.Fatal(err)
			}
			if last == r.last {
				break
			}
			r.last = last
			for _, e := range entries {
				if e.Seq <= r.seqs[e.Realm] {
					continue
				}
				if e.Seq != r.seqs[e.Realm]+1 {
					t.Fatalf("replica %d: %s jumps from seq %d to %d", i, e.Realm, r.seqs[e.Realm], e.Seq)
				}
				r.seqs[e.Realm] = e.Seq
				if e.State != nil {
					r.users[e.User+"@"+e.Realm] = e.State.Reg.Contact
				} else {
					delete(r.users, e.User+"@"+e.Realm)
				}
			}
		}
		if !reflect.DeepEqual(r.users, m.users) {
			t.Errorf("replica %d from a snapshot: %d users, want %d (the appender's)", i, len(r.users), len(m.users))
		}
		if !reflect.DeepEqual(r.seqs, m.seqs) {
			t.Errorf("replica %d seqs %v, want %v", i, r.seqs, m.seqs)
		}
	}
	// The state hash is the final state too, as a new sequencer seeds it.
	states, err := c.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]string)
	for _, st := range states {
		got[st.Reg.User+"@"+st.Reg.Realm] = st.Reg.Contact
	}
	if !reflect.DeepEqual(got, m.users) {
		t.Errorf("States: %d users, want %d", len(got), len(m.users))
	}
}

// TestClusterStateRoundTrip: a state read back from the log is the state
// appended (to the millisecond).
func TestClusterStateRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, _ := openCluster(t, store.ClusterOptions{})
	epoch, _ := c.Epoch(ctx)
	tok := store.NewLeaseToken()
	c.AcquireLease(ctx, tok)
	st, _ := c.Status(ctx)
	want := testState("ünïcode \"q\"", "r.example", 7)
	want.Derived = true
	want.Reg.CallHook, want.Reg.AllowDirectApp, want.Reg.AllowDirectQueue = "https://h", 1, 1
	at := time.UnixMilli(1_764_000_000_123)
	if _, err := c.Append(ctx, tok, epoch, []store.LogChange{{Realm: "r.example", User: want.Reg.User, Event: hub.EventUpdated, Time: at, State: want}}); err != nil {
		t.Fatal(err)
	}
	entries, _, err := c.Read(ctx, st.LastID, time.Second)
	if err != nil || len(entries) != 1 {
		t.Fatalf("Read = %d entries, %v; want 1", len(entries), err)
	}
	e := entries[0]
	if e.Event != hub.EventUpdated || !e.Time.Equal(at) || e.Seq != 1 || e.N != 1 {
		t.Errorf("entry %+v, want updated at %v seq 1 number 1", e, at)
	}
	if !reflect.DeepEqual(*e.State, *want) {
		t.Errorf("state read back\n %+v\nwant\n %+v", *e.State, *want)
	}
}

// TestClusterTickets: a ticket issued by one replica is redeemed once by any
// (GETDEL), carries its credential sealed (never the token in the clear),
// expires with its TTL, and a key holds at most perKey unused ones.
func TestClusterTickets(t *testing.T) {
	ctx := context.Background()
	c1, rdb := openCluster(t, store.ClusterOptions{Secret: storetest.EncryptionKey})
	c2, err := store.OpenCluster(store.ClusterOptions{Redis: c1.Options().Redis, Secret: storetest.EncryptionKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	tk := store.Ticket{Principal: store.Principal{KeySID: "k1", Scope: "account", AccountSID: "a1"}, Token: "ph_TOKEN_in_clear"}
	id, ok, err := c1.IssueTicket(ctx, tk, time.Minute, 2)
	if err != nil || !ok {
		t.Fatalf("IssueTicket = %v, %v", ok, err)
	}
	raw := rdb.Get(ctx, "presencehub:{cluster}:ticket:"+id).Val()
	if strings.Contains(raw, tk.Token) {
		t.Errorf("the ticket's value holds the token in the clear: %s", raw)
	}
	if ttl := rdb.PTTL(ctx, "presencehub:{cluster}:ticket:"+id).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("ticket TTL %v, want within (0, 1m]", ttl)
	}
	got, ok, err := c2.RedeemTicket(ctx, id)
	if err != nil || !ok || !reflect.DeepEqual(got, tk) {
		t.Fatalf("redeem on another replica = %+v, %v, %v; want %+v", got, ok, err, tk)
	}
	if _, ok, _ := c1.RedeemTicket(ctx, id); ok {
		t.Errorf("a ticket redeemed twice")
	}
	// The cap counts unused tickets; a redeemed one frees its place.
	for i := range 2 {
		if _, ok, _ := c1.IssueTicket(ctx, tk, time.Minute, 2); !ok {
			t.Fatalf("ticket %d of 2 refused", i+1)
		}
	}
	if _, ok, _ := c1.IssueTicket(ctx, tk, time.Minute, 2); ok {
		t.Errorf("a third unused ticket with cap 2 was issued")
	}
	other := tk
	other.Principal.KeySID = "k2"
	if _, ok, _ := c1.IssueTicket(ctx, other, time.Minute, 2); !ok {
		t.Errorf("another key's ticket refused by the first key's cap")
	}
	// Expired tickets are gone, and leave the cap.
	short, ok, _ := c1.IssueTicket(ctx, other, 20*time.Millisecond, 2)
	if !ok {
		t.Fatal("short ticket refused")
	}
	waitFor(t, 10*time.Second, "the short ticket to expire", func() bool {
		return rdb.Exists(ctx, "presencehub:{cluster}:ticket:"+short).Val() == 0
	}, func() string { return "" })
	if _, ok, _ := c2.RedeemTicket(ctx, short); ok {
		t.Errorf("an expired ticket was redeemed")
	}
	wrong, _ := store.OpenCluster(store.ClusterOptions{Redis: c1.Options().Redis, Secret: storetest.OtherEncryptionKey})
	defer wrong.Close()
	id, _, _ = c1.IssueTicket(ctx, other, time.Minute, 5)
	if _, ok, err := wrong.RedeemTicket(ctx, id); ok || err == nil {
		t.Errorf("a ticket opened with another secret: ok %v err %v, want an error", ok, err)
	}
}
