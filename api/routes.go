package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routes lists every endpoint of the API.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(apiHeaders)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { encode(w, http.StatusNotFound, msg{"no such endpoint"}) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusMethodNotAllowed, msg{"method not allowed"})
	})

	r.Get("/healthz", s.handleHealthz())
	r.Get("/readyz", s.handleReadyz())
	r.Get("/metrics", s.handleMetrics().ServeHTTP)
	// The stream authenticates itself: bearer key, ticket or dashboard cookie.
	r.Get("/v1/stream", s.handleStream().ServeHTTP)

	r.Group(func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler { return requireAuth(s, next) })

		r.Get("/v1/Accounts/{AccountSid}/RegisteredSipUsers", s.handleRegisteredList().ServeHTTP)
		r.Post("/v1/Accounts/{AccountSid}/RegisteredSipUsers", s.handleRegisteredDetails().ServeHTTP)
		r.Get("/v1/Accounts/{AccountSid}/RegisteredSipUsers/{Client}", s.handleRegisteredOne().ServeHTTP)
		r.Get("/v1/Accounts/{AccountSid}/RegistrationHistory", s.handleRegistrationHistory().ServeHTTP)
		r.Get("/v1/Accounts/{AccountSid}/Presence/{Client}", s.handlePresence().ServeHTTP)

		r.Get("/v1/Clients", s.handleClientList().ServeHTTP)
		r.Post("/v1/Clients", s.tenantWrite(s.handleClientCreate()))
		r.Get("/v1/Clients/{ClientSid}", handleGet(s, s.visibleClient).ServeHTTP)
		r.Put("/v1/Clients/{ClientSid}", s.tenantWrite(s.handleClientUpdate()))
		r.Delete("/v1/Clients/{ClientSid}", s.tenantWrite(handleDelete(s, s.deletableClient, s.clients.DeleteClient)))

		r.Get("/v1/ServiceProviders", s.handleSPList().ServeHTTP)
		r.Post("/v1/ServiceProviders", s.tenantWrite(s.handleSPCreate()))
		r.Get("/v1/ServiceProviders/{ServiceProviderSid}", handleGet(s, s.visibleSP).ServeHTTP)
		r.Put("/v1/ServiceProviders/{ServiceProviderSid}", s.tenantWrite(s.handleSPUpdate()))
		r.Delete("/v1/ServiceProviders/{ServiceProviderSid}", s.tenantWrite(handleDelete(s, s.deletableSP, s.providers.DeleteServiceProvider)))

		r.Get("/v1/Accounts", s.handleAccountList().ServeHTTP)
		r.Post("/v1/Accounts", s.tenantWrite(s.handleAccountCreate()))
		r.Get("/v1/Accounts/{AccountSid}", handleGet(s, s.visibleAccount).ServeHTTP)
		r.Put("/v1/Accounts/{AccountSid}", s.tenantWrite(s.handleAccountUpdate()))
		r.Delete("/v1/Accounts/{AccountSid}", s.tenantWrite(handleDelete(s, s.deletableAccount, s.accounts.DeleteAccount)))

		r.Get("/v1/ApiKeys", s.handleKeyList().ServeHTTP)
		r.Post("/v1/ApiKeys", s.tenantWrite(s.handleKeyCreate()))
		r.Get("/v1/ApiKeys/{ApiKeySid}", handleGet(s, s.visibleKey).ServeHTTP)
		r.Delete("/v1/ApiKeys/{ApiKeySid}", s.tenantWrite(handleDelete(s, s.deletableKey, s.keys.DeleteAPIKey)))

		r.Post("/v1/StreamTickets", s.handleTicketCreate().ServeHTTP)
	})
	return r
}

// apiHeaders marks every answer as not to be sniffed into another type and
// keeps the URL out of Referer headers (a stream ticket travels in one).
func apiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// tenantWrite refuses a management write while tenants are mirrored from
// jambonz, whose database is then the source of truth: a change here would
// be overwritten by the next sync. Reads are unaffected.
func (s *server) tenantWrite(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.jambonz != nil {
			encode(w, http.StatusConflict, msg{"managed in jambonz"})
			return
		}
		h.ServeHTTP(w, r)
	}
}
