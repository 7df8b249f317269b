package web

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

const (
	spA   = "5a000000-0000-4000-8000-00000000000a"
	spB   = "5b000000-0000-4000-8000-00000000000b"
	acctA = "aa000000-0000-4000-8000-0000000000a1"
	acctB = "bb000000-0000-4000-8000-0000000000b1"
	acctC = "cc000000-0000-4000-8000-0000000000c1"
)

// fakePresence is an in-memory Presence.
type fakePresence struct {
	users  map[string][]hub.UserView
	stats  map[string]hub.Stats
	recent map[string][]*hub.Change
}

func (p *fakePresence) Users(realm string) []hub.UserView { return p.users[realm] }
func (p *fakePresence) Stats(realm string) hub.Stats {
	if st, ok := p.stats[realm]; ok {
		if st.Epoch == "" {
			st.Epoch = "e1"
		}
		return st
	}
	return hub.Stats{Epoch: "e1", Protocols: map[string]int{}, Series: make([]int, 60)}
}
func (p *fakePresence) Recent(realm string, n int) []*hub.Change {
	r := p.recent[realm]
	return r[:min(n, len(r))]
}
func (p *fakePresence) Claim(realm, owner string) {}

type createCall struct {
	Client   store.Client
	Password string
}

type updateCall struct {
	SID    string
	Update store.ClientUpdate
}

// fakeDB is an in-memory Sessions, Accounts and Clients that records the writes.
type fakeDB struct {
	mu       sync.Mutex
	keys     map[string]store.Principal // API key token → principal
	sessions map[string]store.Principal
	ttls     map[string]time.Duration
	accounts map[string]store.Account
	clients  map[string]store.Client
	nextID   int

	created []createCall
	updated []updateCall
	deleted []string

	createErr, updateErr, failAll error
}

func newFakeDB() *fakeDB {
	d := &fakeDB{
		keys: map[string]store.Principal{
			"admin-key": {KeySID: "k-admin", Scope: store.ScopeAdmin},
			"sp-key":    {KeySID: "k-sp", Scope: store.ScopeServiceProvider, ServiceProviderSID: spA},
			"acct-key":  {KeySID: "k-acct", Scope: store.ScopeAccount, ServiceProviderSID: spA, AccountSID: acctA},
		},
		sessions: map[string]store.Principal{},
		ttls:     map[string]time.Duration{},
		accounts: map[string]store.Account{
			acctA: {SID: acctA, Name: "Alpha", ServiceProviderSID: spA, SIPRealm: "a.example"},
			acctB: {SID: acctB, Name: "Beta", ServiceProviderSID: spB, SIPRealm: "b.example"},
			acctC: {SID: acctC, Name: "Gamma", ServiceProviderSID: spA},
		},
		clients: map[string]store.Client{},
	}
	for _, c := range fixtureClients() {
		d.clients[c.SID] = c
	}
	other := store.Client{SID: "c0000000-0000-4000-8000-0000000000b1", AccountSID: acctB, Username: "mallory", Password: "mXXXX"}
	d.clients[other.SID] = other
	return d
}

func (d *fakeDB) Authenticate(_ context.Context, token string) (store.Principal, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failAll != nil {
		return store.Principal{}, d.failAll
	}
	p, ok := d.keys[token]
	if !ok {
		return store.Principal{}, fmt.Errorf("bad key: %w", store.ErrUnauthorized)
	}
	return p, nil
}

func (d *fakeDB) CreateSession(_ context.Context, p store.Principal, ttl time.Duration) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextID++
	tok := fmt.Sprintf("session-%d", d.nextID)
	d.sessions[tok] = p
	d.ttls[tok] = ttl
	return tok, nil
}

func (d *fakeDB) Session(_ context.Context, token string) (store.Principal, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failAll != nil {
		return store.Principal{}, d.failAll
	}
	p, ok := d.sessions[token]
	if !ok {
		return store.Principal{}, store.ErrUnauthorized
	}
	return p, nil
}

func (d *fakeDB) DeleteSession(_ context.Context, token string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sessions, token)
	return nil
}

func (d *fakeDB) Account(_ context.Context, sid string) (store.Account, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failAll != nil {
		return store.Account{}, d.failAll
	}
	if !store.ValidSID(sid) {
		return store.Account{}, store.ErrInvalid
	}
	a, ok := d.accounts[sid]
	if !ok {
		return store.Account{}, store.ErrNotFound
	}
	return a, nil
}

func (d *fakeDB) Accounts(_ context.Context, sp string) ([]store.Account, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []store.Account
	for _, a := range d.accounts {
		if sp == "" || a.ServiceProviderSID == sp {
			out = append(out, a)
		}
	}
	return out, nil
}

func (d *fakeDB) Clients(_ context.Context, f store.ClientFilter) ([]store.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []store.Client
	for _, c := range d.clients {
		if f.AccountSID != "" && c.AccountSID != f.AccountSID {
			continue
		}
		if f.ServiceProviderSID != "" && d.accounts[c.AccountSID].ServiceProviderSID != f.ServiceProviderSID {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

func (d *fakeDB) Client(_ context.Context, sid string) (store.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.clients[sid]
	if !ok {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

func (d *fakeDB) CreateClient(_ context.Context, c store.Client, password string) (store.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.created = append(d.created, createCall{c, password})
	if d.createErr != nil {
		return store.Client{}, d.createErr
	}
	d.nextID++
	c.SID = fmt.Sprintf("c0000000-0000-4000-8000-%012d", 1000+d.nextID)
	d.clients[c.SID] = c
	return c, nil
}

func (d *fakeDB) UpdateClient(_ context.Context, sid string, u store.ClientUpdate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.updated = append(d.updated, updateCall{sid, u})
	return d.updateErr
}

func (d *fakeDB) DeleteClient(_ context.Context, sid string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.clients[sid]; !ok {
		return store.ErrNotFound
	}
	delete(d.clients, sid)
	d.deleted = append(d.deleted, sid)
	return nil
}

// Both fakes satisfy the interfaces the real types must satisfy.
var (
	_ Presence = (*fakePresence)(nil)
	_ Sessions = (*fakeDB)(nil)
	_ Accounts = (*fakeDB)(nil)
	_ Clients  = (*fakeDB)(nil)
)
