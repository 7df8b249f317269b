package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/presencehub/presencehub/hub/heapq"
	"github.com/presencehub/presencehub/store"
)

// ticketTTL is how long a stream ticket may wait before it is used.
const ticketTTL = 30 * time.Second

// tickets are short-lived, single-use credentials for browsers, which cannot
// set an Authorization header on a websocket upgrade; a long-lived key never
// goes into a URL.
//
// Expired tickets leave from a min-heap ordered by expiry, so issuing costs
// O(log n) however many tickets are outstanding (no sweep of the whole map).
// Each key may hold at most perKey unused, unexpired tickets.
type tickets struct {
	mu     sync.Mutex
	m      map[string]ticket
	byKey  map[string]int // outstanding tickets per api_key_sid
	exp    heapq.Heap[ticketExpiry]
	perKey int
	now    func() time.Time
}

type ticket struct {
	p       store.Principal
	cred    credential // the key that issued it: a stream opened with the ticket is checked against it for as long as it is open
	expires time.Time
}

func newTickets(perKey int) *tickets {
	if perKey <= 0 {
		perKey = 100
	}
	return &tickets{m: make(map[string]ticket), byKey: make(map[string]int), perKey: perKey, now: time.Now}
}

// issue returns a new ticket for p (authenticated with cred), or false when
// p's key already holds perKey outstanding tickets.
func (t *tickets) issue(p store.Principal, cred credential) (string, bool) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	if t.byKey[p.KeySID] >= t.perKey {
		return "", false
	}
	exp := now.Add(ticketTTL)
	t.m[id] = ticket{p: p, cred: cred, expires: exp}
	t.byKey[p.KeySID]++
	t.exp.Push(ticketExpiry{id: id, at: exp})
	return id, true
}

// expire drops the tickets whose time has passed (the heap's head first).
func (t *tickets) expire(now time.Time) {
	for t.exp.Len() > 0 && !now.Before(t.exp.Min().at) {
		e := t.exp.Pop()
		if tk, ok := t.m[e.id]; ok {
			t.forget(e.id, tk)
		}
	}
}

func (t *tickets) forget(id string, tk ticket) {
	delete(t.m, id)
	if n := t.byKey[tk.p.KeySID] - 1; n > 0 {
		t.byKey[tk.p.KeySID] = n
	} else {
		delete(t.byKey, tk.p.KeySID)
	}
}

// redeem returns the ticket once; false when unknown, used or expired. A
// redeemed ticket's heap entry stays until its expiry and is then dropped
// without effect.
func (t *tickets) redeem(id string) (ticket, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	tk, ok := t.m[id]
	if !ok {
		return ticket{}, false
	}
	t.forget(id, tk)
	if !now.Before(tk.expires) {
		return ticket{}, false
	}
	return tk, true
}

// outstanding is the number of unexpired, unused tickets (for tests).
func (t *tickets) outstanding() (tickets, heapLen int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m), t.exp.Len()
}

type ticketExpiry struct {
	id string
	at time.Time
}

// Less orders the expiry heap, earliest first.
func (e ticketExpiry) Less(o ticketExpiry) bool { return e.at.Before(o.at) }

// handleTicketCreate issues a stream ticket: at most Limits.Tickets per key
// and Limits.TicketsPerKey outstanding, else 429.
func (s *server) handleTicketCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal(r.Context())
		d := s.lim.tickets.Allow(p.KeySID)
		if !d.OK {
			s.tooMany(w, d, "too many stream tickets requested with this api key")
			return
		}
		// requireAuth let the request through with this key; the ticket
		// stands for it, so a stream opened with the ticket ends with it.
		token, _ := bearer(r)
		id, ok, err := s.issueTicket(r.Context(), p, credential{token: token})
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		if !ok {
			s.lim.limited.Add(1)
			w.Header().Set("Retry-After", "30")
			encode(w, http.StatusTooManyRequests, msg{"this api key holds too many unused stream tickets; use them or wait for them to expire (30 s)"})
			return
		}
		encode(w, http.StatusCreated, map[string]any{"ticket": id, "expires_in": int(ticketTTL / time.Second)})
	})
}

// issueTicket issues a ticket in the cluster's shared store, or else in
// this process.
func (s *server) issueTicket(ctx context.Context, p store.Principal, cred credential) (string, bool, error) {
	if s.shared != nil {
		return s.shared.IssueTicket(ctx, store.Ticket{Principal: p, Token: cred.token, Session: cred.session}, ticketTTL, s.perKey)
	}
	id, ok := s.tickets.issue(p, cred)
	return id, ok, nil
}

// redeemTicket takes a ticket once, from the cluster's shared store or
// else from this process.
func (s *server) redeemTicket(ctx context.Context, id string) (credential, bool, error) {
	if s.shared != nil {
		t, ok, err := s.shared.RedeemTicket(ctx, id)
		return credential{token: t.Token, session: t.Session}, ok, err
	}
	tk, ok := s.tickets.redeem(id)
	return tk.cred, ok, nil
}
