// Package api is presencehub's HTTP face: the jambonz-compatible REST API,
// the management endpoints, the websocket stream and the health and metrics
// endpoints. routes.go lists every endpoint. Reads of registrations come from
// the hub's in-memory snapshot, never from Redis per request.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// presence is the part of *hub.Hub the API reads.
type presence interface {
	ListJSON(realm string) []byte
	AppendUsers(b []byte, realm string, names []string) []byte
	AppendAll(b []byte, realm string) []byte
	Get(realm, user string) []byte
	Subscribe(req hub.SubscribeRequest) (*hub.Subscription, hub.Start)
	Ready() bool
}

// The API's narrow views of *store.DB, one per group of handlers.

// authenticator turns a bearer token or a dashboard session into a
// principal; requireAuth and the stream use it.
type authenticator interface {
	Authenticate(ctx context.Context, token string) (store.Principal, error)
	Session(ctx context.Context, token string) (store.Principal, error)
	// AuthChanged is closed when keys or sessions may have changed: open
	// stream connections then re-check their credentials.
	AuthChanged() <-chan struct{}
}

// providerStore keeps service providers (the /v1/ServiceProviders handlers).
type providerStore interface {
	CreateServiceProvider(ctx context.Context, sp store.ServiceProvider) (store.ServiceProvider, error)
	ServiceProvider(ctx context.Context, sid string) (store.ServiceProvider, error)
	ServiceProviders(ctx context.Context) ([]store.ServiceProvider, error)
	UpdateServiceProvider(ctx context.Context, sp store.ServiceProvider) error
	DeleteServiceProvider(ctx context.Context, sid string) error
}

// accountStore keeps accounts (the /v1/Accounts handlers; the others read
// an account to check what a principal may see).
type accountStore interface {
	CreateAccount(ctx context.Context, a store.Account) (store.Account, error)
	Account(ctx context.Context, sid string) (store.Account, error)
	Accounts(ctx context.Context, serviceProviderSID string) ([]store.Account, error)
	UpdateAccount(ctx context.Context, a store.Account) error
	DeleteAccount(ctx context.Context, sid string) error
}

// keyStore keeps API keys (the /v1/ApiKeys handlers).
type keyStore interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) (store.APIKey, string, error)
	APIKey(ctx context.Context, sid string) (store.APIKey, error)
	APIKeys(ctx context.Context, p store.Principal) ([]store.APIKey, error)
	DeleteAPIKey(ctx context.Context, sid string) error
}

// clientStore keeps SIP clients (the /v1/Clients handlers).
type clientStore interface {
	CreateClient(ctx context.Context, c store.Client, password string) (store.Client, error)
	Client(ctx context.Context, sid string) (store.Client, error)
	Clients(ctx context.Context, f store.ClientFilter) ([]store.Client, error)
	UpdateClient(ctx context.Context, sid string, u store.ClientUpdate) error
	DeleteClient(ctx context.Context, sid string) error
}

// Options configure the API handler.
type Options struct {
	Presence presence
	// Auth, Providers, Accounts, Keys and Clients are where the tenants
	// live (serve passes its *store.DB for each); Ping tells /readyz
	// whether that database answers.
	Auth      authenticator
	Providers providerStore
	Accounts  accountStore
	Keys      keyStore
	Clients   clientStore
	Ping      func(context.Context) error
	Logger    *slog.Logger
	// Metrics is the registry GET /metrics serves. New registers the API's
	// own collectors (stream, rate limits) in it; the caller registers the
	// rest. Nil: a registry of the API's collectors alone.
	Metrics *prometheus.Registry
	// Stream tunes the websocket endpoint; zero values take defaults.
	Stream StreamOptions
	// Jambonz, when set, says that tenants are mirrored from jambonz's
	// database (serve --jambonz-database-url) and reports the mirror's
	// freshness: management writes of service providers, accounts, API
	// keys and clients answer 409 {"msg":"managed in jambonz"}, and
	// /readyz tells whether the mirror is stale.
	Jambonz func() store.JambonzStatus
	// Limits are the rate limits; zero values mean no limit.
	Limits Limits
	// Ready adds checks to GET /readyz: each string returned is a problem
	// that makes it 503, worded for anyone to read (no addresses).
	Ready func() []string
	// History answers RegistrationHistory and Presence; nil when the
	// registration history is off (they then answer 404).
	History     history
	HistoryOpts HistoryOptions
	// SharedTickets, when set, keeps stream tickets there (a cluster's
	// Redis) instead of in this process, so that any replica redeems them.
	SharedTickets TicketStore
}

// TicketStore keeps stream tickets where every replica of a cluster finds
// them (*store.Cluster): single use, with a TTL and a cap per key.
type TicketStore interface {
	IssueTicket(ctx context.Context, t store.Ticket, ttl time.Duration, perKey int) (id string, ok bool, err error)
	RedeemTicket(ctx context.Context, id string) (t store.Ticket, ok bool, err error)
}

// Limits are the API's rate limits (token buckets, 429 past them).
type Limits struct {
	// Proxies whose X-Forwarded-For names the client; none by default.
	Proxies ratelimit.Proxies
	// PerIP: requests per client IP to the authenticated REST endpoints.
	PerIP ratelimit.Spec
	// PerKey: requests per API key (or dashboard session's key).
	PerKey ratelimit.Spec
	// AuthFailures: failed authentications per client IP; past it, requests
	// from that IP are refused before their token is looked up.
	AuthFailures ratelimit.Spec
	// Tickets: stream tickets issued per key.
	Tickets ratelimit.Spec
	// TicketsPerKey caps the unused, unexpired tickets of one key (default 100).
	TicketsPerKey int
	// MaxKeys caps the keys each limiter tracks (default 100,000).
	MaxKeys int
}

// StreamOptions tune GET /v1/stream. Every client-controlled amount has a
// bound here; zero values take the defaults.
type StreamOptions struct {
	PingInterval time.Duration // default 30s
	WriteTimeout time.Duration // a client taking no byte for this long is closed; default 10s
	ReadLimit    int64         // bytes per client frame, default 64 KiB
	MaxSubs      int           // subscriptions per connection, default 128
	// MaxNames bounds the watched users over all of a connection's
	// subscriptions (default 10,000).
	MaxNames int
	// OutputBudget bounds the bytes waiting to be written to one
	// connection, counting each first snapshot at its estimated size until
	// it is built (default 16 MiB). A subscribe that would pass it is
	// refused; any other frame that would pass it closes the connection
	// (4008).
	OutputBudget int
	// MaxConnsPerKey bounds the open sockets of one API key (tickets and
	// dashboard sessions count for their key); default 1,000.
	MaxConnsPerKey int
	// MaxUpgradesPerIP bounds the upgrades from one client address that
	// are in progress and not yet authenticated (default 64).
	MaxUpgradesPerIP int
	// SubscribeRate and SubscribeBurst are the token bucket of subscribe
	// frames per connection (default 10/s, bursts of 100);
	// KeySubscribeRate and KeySubscribeBurst the one per key over all its
	// connections (default 1,000/s, bursts of 20,000).
	SubscribeRate     float64
	SubscribeBurst    int
	KeySubscribeRate  float64
	KeySubscribeBurst int
}

// withDefaults fills in the zero values.
func (o StreamOptions) withDefaults() StreamOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defF := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 64 << 10
	}
	def(&o.MaxSubs, 128)
	def(&o.MaxNames, 10_000)
	def(&o.OutputBudget, 16<<20)
	def(&o.MaxConnsPerKey, 1000)
	def(&o.MaxUpgradesPerIP, 64)
	defF(&o.SubscribeRate, 10)
	def(&o.SubscribeBurst, 100)
	defF(&o.KeySubscribeRate, 1000)
	def(&o.KeySubscribeBurst, 20_000)
	return o
}

type server struct {
	pres      presence
	auth      authenticator
	providers providerStore
	accounts  accountStore
	keys      keyStore
	clients   clientStore
	ping      func(context.Context) error
	log       *slog.Logger
	metrics   *prometheus.Registry
	stream    StreamOptions
	tickets   *tickets
	stats     streamStats
	jambonz   func() store.JambonzStatus
	lim       limiters
	ready     func() []string
	conns     *streamConns
	shared    TicketStore // tickets of a cluster, instead of tickets
	perKey    int         // Limits.TicketsPerKey for shared

	hist     history
	histOpts HistoryOptions

	flushq flushQueue // runs stream connections' flushes (see flushQueue)
}

// limiters are the buckets of Limits.
type limiters struct {
	proxies                     ratelimit.Proxies
	ip, key, authFails, tickets *ratelimit.Limiter
	limited                     atomic.Uint64 // requests answered 429
}

// Handler is the API. Shutdown closes its websocket connections, which
// http.Server.Shutdown does not see (they are hijacked): register it with
// RegisterOnShutdown.
type Handler struct {
	http.Handler
	s *server
}

// Shutdown refuses new stream connections and closes every open one with
// 1001 (going away), subscribed or not. It returns when they are closed
// (at most about 5 s, the close handshake's bound).
func (h *Handler) Shutdown() { h.s.shutdown() }

// New returns the API as one http.Handler. Paths it does not serve answer
// 404 with a JSON body, so it can be mounted alongside the dashboard.
func New(opts Options) *Handler {
	s := &server{
		pres:      opts.Presence,
		auth:      opts.Auth,
		providers: opts.Providers,
		accounts:  opts.Accounts,
		keys:      opts.Keys,
		clients:   opts.Clients,
		ping:      opts.Ping,
		log:       opts.Logger,
		metrics:   opts.Metrics,
		stream:    opts.Stream.withDefaults(),
		tickets:   newTickets(opts.Limits.TicketsPerKey),
		jambonz:   opts.Jambonz,
		ready:     opts.Ready,
		conns:     newStreamConns(),
		hist:      opts.History,
		shared:    opts.SharedTickets,
		perKey:    max(opts.Limits.TicketsPerKey, 1),

		histOpts: opts.HistoryOpts,
	}
	if s.histOpts.MaxLimit <= 0 {
		s.histOpts.MaxLimit = 1000
	}
	if s.histOpts.FlapSessions <= 0 {
		s.histOpts.FlapSessions = 6
	}
	lm := opts.Limits
	s.lim.proxies = lm.Proxies
	s.lim.ip = ratelimit.New(lm.PerIP, lm.MaxKeys)
	s.lim.key = ratelimit.New(lm.PerKey, lm.MaxKeys)
	s.lim.authFails = ratelimit.New(lm.AuthFailures, lm.MaxKeys)
	s.lim.tickets = ratelimit.New(lm.Tickets, lm.MaxKeys)
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = prometheus.NewRegistry()
	}
	s.metrics.MustRegister(s.collectors()...)
	return &Handler{Handler: s.routes(), s: s}
}
