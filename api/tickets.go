package api

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/presencehub/presencehub/store"
)

// ticketTTL is how long a stream ticket may wait before it is used.
const ticketTTL = 30 * time.Second

// tickets are short-lived, single-use credentials for browsers, which cannot
// set an Authorization header on a websocket upgrade; a long-lived key never
// goes into a URL.
type tickets struct {
	mu sync.Mutex
	m  map[string]ticket
}

type ticket struct {
	p       store.Principal
	expires time.Time
}

func newTickets() *tickets { return &tickets{m: make(map[string]ticket)} }

func (t *tickets) issue(p store.Principal) string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.m { // tickets are few; sweep expired ones here
		if now.After(v.expires) {
			delete(t.m, k)
		}
	}
	t.m[id] = ticket{p: p, expires: now.Add(ticketTTL)}
	return id
}

// redeem returns the ticket's principal once; false when unknown, used or expired.
func (t *tickets) redeem(id string) (store.Principal, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tk, ok := t.m[id]
	delete(t.m, id)
	if !ok || time.Now().After(tk.expires) {
		return store.Principal{}, false
	}
	return tk.p, true
}

func (s *server) handleTicketCreate() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusCreated, map[string]any{
			"ticket":     s.tickets.issue(principal(r.Context())),
			"expires_in": int(ticketTTL / time.Second),
		})
	})
}
