package api

import (
	"testing"
	"time"

	"github.com/presencehub/presencehub/store"
)

// TestTicketsExpireFromHeapWithCapPerKey: a key holds at most perKey unused
// tickets; expired ones leave from the heap as later tickets are issued, so
// neither the map nor the heap grows with the number ever issued.
func TestTicketsExpireFromHeapWithCapPerKey(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tk := newTickets(3)
	tk.now = func() time.Time { return now }
	a := store.Principal{KeySID: "a"}
	b := store.Principal{KeySID: "b"}
	var ids []string
	for i := range 3 {
		id, ok := tk.issue(a, credential{})
		if !ok {
			t.Fatalf("ticket %d refused under the cap", i)
		}
		ids = append(ids, id)
	}
	if _, ok := tk.issue(a, credential{}); ok {
		t.Fatal("4th outstanding ticket of one key issued, cap 3")
	}
	if _, ok := tk.issue(b, credential{}); !ok {
		t.Fatal("another key is held to a's cap")
	}
	if p, ok := tk.redeem(ids[0]); !ok || p.p.KeySID != "a" {
		t.Fatalf("redeem = %v, %v", p, ok)
	}
	if _, ok := tk.redeem(ids[0]); ok {
		t.Fatal("a ticket redeemed twice")
	}
	if _, ok := tk.issue(a, credential{}); !ok {
		t.Fatal("a redeemed ticket still counts against the cap")
	}
	now = now.Add(ticketTTL)
	if _, ok := tk.redeem(ids[1]); ok {
		t.Fatal("an expired ticket redeemed")
	}
	// 10,000 issues over time: what is outstanding stays bounded by the cap.
	for i := range 10_000 {
		now = now.Add(ticketTTL / 2)
		if _, ok := tk.issue(store.Principal{KeySID: "c"}, credential{}); !ok {
			t.Fatalf("issue %d refused although earlier tickets expired", i)
		}
	}
	if m, h := tk.outstanding(); m > 3 || h > 3 {
		t.Errorf("after 10,000 issues: %d tickets in the map, %d in the heap; want ≤ 3 each", m, h)
	}
}
