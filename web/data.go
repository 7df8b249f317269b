package web

import (
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/hub/wire"
	"github.com/presencehub/presencehub/store"
)

// pageData is the account page's JSON data block (id "account-data"): the
// same snapshot the server rendered, so dashboard.js starts from it and
// resumes the stream from Epoch/Seq instead of asking for a full snapshot.
type pageData struct {
	AccountSID string `json:"account_sid"`
	Realm      string `json:"realm"`
	// Now is the server's clock in epoch ms; the browser corrects countdowns
	// for its own clock's offset.
	Now            int64        `json:"now"`
	Epoch          string       `json:"epoch"`
	Seq            uint64       `json:"seq"`
	PageSize       int          `json:"page_size"`
	ExpiringWithin int64        `json:"expiring_within_ms"`
	FeedSize       int          `json:"feed_size"`
	Query          queryData    `json:"query"`
	Users          []streamUser `json:"users"`
	Clients        []clientData `json:"clients"`
	// Flapping names the users flapping at page load (the filter and tag;
	// not kept live).
	Flapping []string `json:"flapping"`
}

type queryData struct {
	Q        string `json:"q"`
	Status   string `json:"status"`
	Protocol string `json:"protocol"`
	Sort     string `json:"sort"`
	Dir      string `json:"dir"`
	Page     int    `json:"page"`
	Flapping bool   `json:"flapping"`
	Range    string `json:"range"`
}

// streamUser is a registered user as the stream carries it (wire.User), plus
// what the stream does not carry but the table shows.
type streamUser struct {
	wire.User
	Since     *int64 `json:"since"`
	LastEvent string `json:"last_event"`
}

// clientData is a SIP client as the page logic needs it (never the password).
type clientData struct {
	Name   string `json:"name"`
	SID    string `json:"sid"`
	Active bool   `json:"active"`
	App    bool   `json:"app"`
	Queue  bool   `json:"queue"`
	User   bool   `json:"user"`
}

func buildPageData(a store.Account, clients []store.Client, users []hub.UserView, st hub.Stats, q TableQuery, now time.Time) pageData {
	d := pageData{
		AccountSID: a.SID, Realm: a.SIPRealm, Now: now.UnixMilli(), Epoch: st.Epoch, Seq: st.Seq,
		PageSize: PageSize, ExpiringWithin: ExpiringWithin.Milliseconds(), FeedSize: FeedSize,
		Query: queryData{q.Q, q.Status, q.Protocol, q.Sort, q.Dir(), q.Page, q.Flapping, q.Range},
		Users: make([]streamUser, 0, len(users)), Clients: make([]clientData, 0, len(clients)), Flapping: []string{},
	}
	for _, u := range users {
		su := streamUser{
			User: wire.User{
				Name: u.Name, Contact: nullable(u.Contact), ExpiryTime: userExpiry(u).UnixMilli(),
				Protocol: nullable(u.Protocol), RegisteredStatus: hub.StatusActive, Proxy: nullable(u.Proxy),
				AllowDirectAppCalling: bit(u.Flags.App), AllowDirectQueueCalling: bit(u.Flags.Queue), AllowDirectUserCalling: bit(u.Flags.User),
				EventTime: msOrNil(u.EventTime),
			},
			Since: msOrNil(u.Since), LastEvent: u.LastEvent,
		}
		if userExpiry(u).IsZero() {
			su.ExpiryTime = 0
		}
		d.Users = append(d.Users, su)
	}
	for _, c := range clients {
		d.Clients = append(d.Clients, clientData{
			Name: c.Username, SID: c.SID, Active: c.IsActive,
			App: c.AllowDirectAppCalling, Queue: c.AllowDirectQueueCalling, User: c.AllowDirectUserCalling,
		})
	}
	return d
}

func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func msOrNil(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

// clientForm is the create or edit form of a SIP client, with the values to
// show again after an error. It never holds a password.
type clientForm struct {
	AccountSID string
	ClientSID  string // "" when creating
	Username   string
	IsActive   bool
	App        bool
	Queue      bool
	User       bool
	// Errors by field name ("username", "password"); "" is the whole form.
	Errors map[string]string
}

func (f clientForm) editing() bool { return f.ClientSID != "" }

func (f clientForm) err(field string) string { return f.Errors[field] }

func (f clientForm) hasErrors() bool { return len(f.Errors) > 0 }

// newClientForm is an empty create form with jambonz's defaults (active,
// every flag on), as the REST API uses when a field is absent.
func newClientForm(accountSID string) clientForm {
	return clientForm{AccountSID: accountSID, IsActive: true, App: true, Queue: true, User: true}
}

func editClientForm(c store.Client) clientForm {
	return clientForm{
		AccountSID: c.AccountSID, ClientSID: c.SID, Username: c.Username, IsActive: c.IsActive,
		App: c.AllowDirectAppCalling, Queue: c.AllowDirectQueueCalling, User: c.AllowDirectUserCalling,
	}
}

// action is where the form posts.
func (f clientForm) action() string {
	if f.editing() {
		return clientURL(f.AccountSID, f.ClientSID)
	}
	return accountURL(f.AccountSID) + "/clients"
}

// id is an element id unique to this form (create and edit forms never
// share a page, but the filter form does).
func (f clientForm) id(name string) string {
	if f.editing() {
		return "edit-" + name
	}
	return "new-" + name
}
