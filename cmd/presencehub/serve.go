package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/presencehub/presencehub/api"
	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/web"
)

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("presencehub serve", "Serve the REST API, the websocket stream (/v1/stream) and the dashboard (/).", getenv, stderr)
	c := cli.AddCommon(fs, true, true)
	listen := fs.EnvString("listen", "PRESENCEHUB_LISTEN", "127.0.0.1:8080", "address to listen on")
	migrate := fs.EnvBool("migrate", "PRESENCEHUB_MIGRATE", false, "apply database migrations before serving")
	configure := fs.EnvBool("redis-configure-notifications", "PRESENCEHUB_REDIS_CONFIGURE_NOTIFICATIONS", false, "set notify-keyspace-events on the Redis server if it lacks what presencehub needs")
	maxSyncAge := fs.EnvDuration("max-sync-age", "PRESENCEHUB_MAX_SYNC_AGE", 0, "/readyz is 503 when the last full sync from Redis is older than this (0: three reconcile intervals; off when reconciling is off)")
	reconcile := fs.EnvDuration("reconcile-interval", "PRESENCEHUB_RECONCILE_INTERVAL", 5*time.Minute, "how often to re-read every registration from Redis as a safety net (0 disables)")
	history := fs.EnvInt("history", "PRESENCEHUB_HISTORY", 1024, "changes kept per account for websocket resume")
	queueLen := fs.EnvInt("queue-len", "PRESENCEHUB_QUEUE_LEN", 1024, "bound of each websocket subscription's queue before conflation")
	sessionTTL := fs.EnvDuration("session-ttl", "PRESENCEHUB_SESSION_TTL", 12*time.Hour, "lifetime of a dashboard session")
	tlsCert := fs.EnvString("tls-cert", "PRESENCEHUB_TLS_CERT", "", "serve HTTPS with this certificate file (with --tls-key)")
	tlsKey := fs.EnvString("tls-key", "PRESENCEHUB_TLS_KEY", "", "private key file for --tls-cert")
	logLevel := fs.EnvString("log-level", "PRESENCEHUB_LOG_LEVEL", "info", "debug, info, warn or error")
	logFormat := fs.EnvString("log-format", "PRESENCEHUB_LOG_FORMAT", "text", "text or json")
	streamMaxSubs := fs.EnvInt("stream-max-subscriptions", "PRESENCEHUB_STREAM_MAX_SUBSCRIPTIONS", 128, "subscriptions per websocket connection")
	streamMaxNames := fs.EnvInt("stream-max-watched", "PRESENCEHUB_STREAM_MAX_WATCHED", 10_000, "watched users per websocket connection, over all its subscriptions")
	streamBudget := fs.EnvInt("stream-output-budget", "PRESENCEHUB_STREAM_OUTPUT_BUDGET", 16<<20, "bytes that may wait unwritten for one websocket connection (first snapshots counted at their estimated size); beyond it a subscribe is refused, other frames close the connection (4008)")
	streamPerKey := fs.EnvInt("stream-max-conns-per-key", "PRESENCEHUB_STREAM_MAX_CONNS_PER_KEY", 1000, "open websocket connections per API key (tickets and dashboard sessions count for their key)")
	streamPerIP := fs.EnvInt("stream-max-upgrades-per-ip", "PRESENCEHUB_STREAM_MAX_UPGRADES_PER_IP", 64, "websocket upgrades per client address in progress and not yet authenticated")
	subRate := fs.EnvInt("stream-subscribe-rate", "PRESENCEHUB_STREAM_SUBSCRIBE_RATE", 10, "subscribe frames per second per websocket connection (token bucket rate)")
	subBurst := fs.EnvInt("stream-subscribe-burst", "PRESENCEHUB_STREAM_SUBSCRIBE_BURST", 100, "burst of subscribe frames per websocket connection")
	keySubRate := fs.EnvInt("stream-key-subscribe-rate", "PRESENCEHUB_STREAM_KEY_SUBSCRIBE_RATE", 1000, "subscribe frames per second per API key over all its connections")
	keySubBurst := fs.EnvInt("stream-key-subscribe-burst", "PRESENCEHUB_STREAM_KEY_SUBSCRIBE_BURST", 20_000, "burst of subscribe frames per API key")
	pingInterval := fs.EnvDuration("stream-ping-interval", "PRESENCEHUB_STREAM_PING_INTERVAL", 30*time.Second, "how often each websocket connection is pinged (the first ping comes after a random half to whole interval); a peer that neither answers nor takes any byte written to it for --stream-write-timeout is closed")
	writeTimeout := fs.EnvDuration("stream-write-timeout", "PRESENCEHUB_STREAM_WRITE_TIMEOUT", 10*time.Second, "how long a websocket client may take none of the bytes written to it, or leave a ping unanswered while taking nothing, before the connection is closed as dead (a client that keeps reading, however slowly, is not closed)")
	regHistory := fs.EnvBool("registration-history", "PRESENCEHUB_REGISTRATION_HISTORY", true, "record registration sessions in PostgreSQL (RegistrationHistory, Presence, the dashboard's charts and user pages)")
	retention := fs.EnvDuration("history-retention", "PRESENCEHUB_HISTORY_RETENTION", 30*24*time.Hour, "how long ended registration sessions are kept (whole days are dropped)")
	histBuffer := fs.EnvInt("registration-history-buffer", "PRESENCEHUB_REGISTRATION_HISTORY_BUFFER", 65536, "changes waiting for PostgreSQL before they are dropped and recorded as a gap")
	histPageMax := fs.EnvInt("registration-history-page-max", "PRESENCEHUB_REGISTRATION_HISTORY_PAGE_MAX", 1000, "largest ?limit= of RegistrationHistory")
	flapSessions := fs.EnvInt("flap-sessions", "PRESENCEHUB_FLAP_SESSIONS", 6, "a user is flapping with more than this many sessions or NAT binding changes in an hour")
	pprofAddr := fs.EnvString("pprof", "PRESENCEHUB_PPROF", "", "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060")
	secureCookies := fs.EnvBool("secure-cookies", "PRESENCEHUB_SECURE_COOKIES", false, "mark cookies Secure (with the __Host- prefix) and send HSTS even without --tls-cert: set it behind a TLS-terminating proxy")
	lim := addHTTPLimitFlags(fs)
	rl := rateFlags{
		proxies:    fs.EnvString("trusted-proxies", "PRESENCEHUB_TRUSTED_PROXIES", "", "comma-separated CIDRs of proxies whose X-Forwarded-For names the client (default: none, the TCP peer is the client)"),
		ip:         fs.EnvString("rate-ip", "PRESENCEHUB_RATE_IP", "200:400", "REST requests per second per client IP, RATE:BURST (0 disables)"),
		key:        fs.EnvString("rate-key", "PRESENCEHUB_RATE_KEY", "100:200", "REST requests per second per API key, RATE:BURST (0 disables)"),
		authFails:  fs.EnvString("rate-auth-failures", "PRESENCEHUB_RATE_AUTH_FAILURES", "20:20", "failed authentications per second per client IP before its requests are refused unchecked, RATE:BURST (0 disables)"),
		tickets:    fs.EnvString("rate-tickets", "PRESENCEHUB_RATE_TICKETS", "2:10", "stream tickets per second per API key, RATE:BURST (0 disables)"),
		signIns:    fs.EnvString("rate-signin", "PRESENCEHUB_RATE_SIGNIN", "1:10", "dashboard sign-in attempts per second per client IP, RATE:BURST (0 disables)"),
		ticketsCap: fs.EnvInt("tickets-per-key", "PRESENCEHUB_TICKETS_PER_KEY", 100, "unused, unexpired stream tickets one API key may hold"),
		maxKeys:    fs.EnvInt("rate-limit-keys", "PRESENCEHUB_RATE_LIMIT_KEYS", 100_000, "keys (IPs, API keys) each rate limiter tracks; idle ones are forgotten first"),
	}
	jz := addJambonzFlags(fs)
	rt := addRedisTopologyFlags(fs)
	cl := addClusterFlags(fs)
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if *maxSyncAge < 0 {
		return errors.New("--max-sync-age must not be negative")
	}
	if err := lim.check(); err != nil {
		return err
	}
	if err := jz.check(); err != nil {
		return err
	}
	if err := cl.check(); err != nil {
		return err
	}
	limits, signIns, err := rl.parse()
	if err != nil {
		return err
	}
	rt.resolve(getenv)
	sentinels, err := sentinelAddrs(*rt.sentinels)
	if err != nil {
		return err
	}
	if len(sentinels) > 0 && *rt.master == "" {
		return errors.New("--redis-sentinels needs --redis-sentinel-master (or JAMBONES_REDIS_SENTINEL_MASTER_NAME)")
	}
	for _, v := range []struct {
		name string
		n    int
	}{
		{"--stream-max-subscriptions", *streamMaxSubs}, {"--stream-max-watched", *streamMaxNames},
		{"--stream-output-budget", *streamBudget}, {"--stream-max-conns-per-key", *streamPerKey},
		{"--stream-max-upgrades-per-ip", *streamPerIP}, {"--stream-subscribe-rate", *subRate},
		{"--stream-subscribe-burst", *subBurst}, {"--stream-key-subscribe-rate", *keySubRate},
		{"--stream-key-subscribe-burst", *keySubBurst},
	} {
		if v.n < 1 {
			return fmt.Errorf("%s %d: want at least 1", v.name, v.n)
		}
	}
	if *reconcile == 0 {
		*reconcile = -1
	}
	switch {
	case *retention < 24*time.Hour:
		return fmt.Errorf("--history-retention %v: want at least 24h (history is kept in whole days)", *retention)
	case *histBuffer < 1 || *histBuffer > 10_000_000:
		return fmt.Errorf("--registration-history-buffer %d: want 1 to 10000000", *histBuffer)
	case *histPageMax < 1 || *histPageMax > 100_000:
		return fmt.Errorf("--registration-history-page-max %d: want 1 to 100000", *histPageMax)
	case *flapSessions < 1:
		return fmt.Errorf("--flap-sessions %d: want 1 or more", *flapSessions)
	}

	db, err := cli.OpenDB(ctx, c, true, log)
	if err != nil {
		return err
	}
	defer db.Close()
	if *migrate {
		applied, err := db.Migrate(ctx)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		log.Info("migrations applied", "new", len(applied))
	}
	var jambonz *store.Jambonz
	if u := jambonzURL(*jz.databaseURL, getenv); u != "" {
		jambonz, err = store.OpenJambonz(db, store.JambonzOptions{
			URL: u, SyncInterval: *jz.syncInterval, LookupRate: float64(*jz.lookupRate), Logger: log,
		})
		if err != nil {
			return fmt.Errorf("jambonz: %w", err)
		}
		defer jambonz.Close()
	}
	redisOpts := store.RedisOptions{
		URL: *c.RedisURL, ConfigureNotifications: *configure, ReconcileEvery: *reconcile, Logger: log,
		Sentinels: sentinels, SentinelMaster: *rt.master, SentinelPassword: *rt.sentinelPassword,
		Username: *rt.username, Password: *rt.password, CAFile: *rt.caFile,
	}
	src, err := store.NewRedisSource(redisOpts)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer src.Close()
	// Redis down or without keyspace notifications at start is not a
	// reason to exit (a supervisor would only restart us into the same
	// state): serve starts not ready, and the watch retries, logging the
	// fix, until Redis is there and publishes the notifications.
	if err := src.Check(ctx); err != nil {
		if errors.Is(err, store.ErrNotifications) {
			log.Error("redis does not publish keyspace notifications; serving, but not ready until they are on", "fix", err)
		} else {
			log.Warn("redis is not reachable at start; serving, but not ready until it is", "err", err)
		}
	}
	var cluster *store.Cluster
	if *cl.on {
		if cluster, err = cl.open(redisOpts, *c.EncryptionKey); err != nil {
			return fmt.Errorf("cluster redis: %w", err)
		}
		defer cluster.Close()
	}

	hubOpts := hub.Options{History: *history, QueueLen: *queueLen, Logger: log}
	var hist *store.History
	if *regHistory {
		ho := store.HistoryOptions{Retention: *retention, Buffer: *histBuffer, Logger: log}
		if cluster != nil {
			// Every replica applies every change; the sequencer writes them
			// (idempotently, so a handover that writes one twice is harmless).
			ho.Active = cluster.Metrics.Holder.Load
		}
		hist = store.NewHistory(db, ho)
		hubOpts.Observe = hist.Observe
	}
	h := hub.New(hubOpts)
	var jambonzStatus func() store.JambonzStatus
	if jambonz != nil {
		jambonzStatus = jambonz.Status
	}
	metrics := metricsRegistry(h, src, db, hist, jambonz)
	if cluster != nil {
		metrics.MustRegister(clusterCollectors(cluster)...)
	}
	apiOpts := api.Options{
		Presence: h, Logger: log,
		Auth: db, Providers: db, Accounts: db, Keys: db, Clients: db, Ping: db.Ping,
		Metrics: metrics,
		Limits:  limits,
		Jambonz: jambonzStatus,
		Ready: func() []string {
			if cluster != nil {
				return clusterReadiness(cluster, src.Health())
			}
			return redisReadiness(src.Health(), *maxSyncAge, *reconcile, time.Now())
		},
		Stream: api.StreamOptions{
			MaxSubs: *streamMaxSubs, MaxNames: *streamMaxNames, OutputBudget: *streamBudget,
			MaxConnsPerKey: *streamPerKey, MaxUpgradesPerIP: *streamPerIP,
			SubscribeRate: float64(*subRate), SubscribeBurst: *subBurst,
			KeySubscribeRate: float64(*keySubRate), KeySubscribeBurst: *keySubBurst,
			PingInterval: *pingInterval, WriteTimeout: *writeTimeout,
		},
		HistoryOpts: api.HistoryOptions{MaxLimit: *histPageMax, FlapSessions: *flapSessions},
	}
	if hist != nil {
		apiOpts.History = db
	}
	if cluster != nil {
		apiOpts.SharedTickets = cluster
	}
	apiHandler := api.New(apiOpts)
	webOpts := web.Options{Presence: h, Sessions: db, Accounts: db, Clients: db, Logger: log, SessionTTL: *sessionTTL, Secure: *tlsCert != "" || *secureCookies,
		SignIns: signIns, Proxies: limits.Proxies, ManagedInJambonz: jambonz != nil, FlapSessions: *flapSessions}
	if hist != nil {
		webOpts.History = db
	}
	webHandler := web.New(webOpts)
	mux := http.NewServeMux()
	mux.Handle("/v1/", apiHandler)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		mux.Handle(p, apiHandler)
	}
	mux.Handle("/", webHandler)

	// Listen before any goroutine starts, so that a failure here has
	// nothing to stop.
	var pprofLn net.Listener
	if *pprofAddr != "" {
		if pprofLn, err = listenPprof(*pprofAddr); err != nil {
			return err
		}
		defer pprofLn.Close()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln = api.LimitListener(ln, lim.connections())
	srv := lim.server(hsts(*tlsCert != "" || *secureCookies, mux), log)
	// Shutdown does not see hijacked connections: every websocket gets its
	// 1001 from the API, subscribed or not.
	srv.RegisterOnShutdown(apiHandler.Shutdown)
	scheme := "http"
	if *tlsCert != "" {
		scheme = "https"
	}
	url := scheme + "://" + displayAddr(ln.Addr().String())

	// serve waits for every goroutine it starts, stopping them one after
	// the other in this order: the hub (whose Run returns only after the
	// Redis source's Watch returned: cancelling it closes every websocket
	// subscription), the registration history writer, the PostgreSQL watcher, the profiler, the HTTP server.
	// Only then do the deferred src.Close and db.Close run.
	ts := newTasks()
	if cluster != nil {
		// Cluster mode: the sequencer stops first and gives its lease up,
		// so that another replica takes over at once; then the reader of
		// the log, then the hub, which follows nothing else.
		ts.start(ctx, "cluster sequencer", func(ctx context.Context) error {
			return cluster.Sequence(ctx, src, hub.Options{QueueLen: *queueLen, Logger: log})
		})
		ts.start(ctx, "cluster log", func(ctx context.Context) error { return cluster.Follow(ctx, h) })
		ts.start(ctx, "hub", func(ctx context.Context) error { return h.Run(ctx, nil) })
	} else {
		ts.start(ctx, "redis", func(ctx context.Context) error { return h.Run(ctx, src) })
	}
	if hist != nil {
		ts.start(ctx, "registration history", func(ctx context.Context) error { return hist.Run(ctx, h) })
	}
	ts.start(ctx, "postgres watcher", func(ctx context.Context) error {
		// The account that holds a realm owns its presence: a new holder
		// (or none) ends the old one's subscriptions and history first.
		err := db.WatchAccounts(ctx, func(realm, accountSID string, clients map[string]hub.Flags) {
			h.Claim(realm, accountSID)
			h.SetClients(realm, clients)
		})
		if err != nil && ctx.Err() == nil {
			// The dashboard's flags of unregistered users go stale; the
			// rest keeps working, so serve does not stop.
			log.Error("watching SIP clients in postgres stopped", "err", err)
		}
		return nil
	})
	if jambonz != nil {
		ts.start(ctx, "jambonz mirror", func(ctx context.Context) error {
			_ = jambonz.Run(ctx) // returns only ctx.Err(): an outage keeps the last mirror
			return nil
		})
	}
	if pprofLn != nil {
		ts.start(ctx, "pprof", func(ctx context.Context) error {
			return lim.serveUntil(ctx, &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}, pprofLn, nil)
		})
		log.Info("profiler", "url", "http://"+pprofLn.Addr().String()+"/debug/pprof/")
	}
	ts.start(ctx, "http server", func(ctx context.Context) error {
		var tlsFiles []string
		if *tlsCert != "" {
			tlsFiles = []string{*tlsCert, *tlsKey}
		}
		return lim.serveUntil(ctx, srv, ln, tlsFiles)
	})
	fmt.Fprintf(stdout, "presencehub %s serving on %s\n", version, url)
	log.Info("serving", "url", url, "redis", redactURL(*c.RedisURL), "postgres", redactURL(*c.DatabaseURL), "encryption_key_id", db.EncryptionKeyID())

	select {
	case <-ctx.Done():
	case <-ts.failed:
	}
	log.Info("shutting down")
	return ts.stop()
}

// serveUntil serves HTTP on ln (HTTPS with tlsFiles: certificate and key)
// until ctx is done, then shuts the server down (closing what is still open
// after --shutdown-drain-timeout) and returns once Serve has returned.
func (l httpLimits) serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, tlsFiles []string) error {
	errc := make(chan error, 1)
	go func() {
		if tlsFiles != nil {
			errc <- srv.ServeTLS(ln, tlsFiles[0], tlsFiles[1])
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), *l.drain)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	return nil
}

// redisReadiness is what the Redis watch adds to /readyz: the watch must be
// connected and its last full sync younger than maxAge (by default three
// reconcile intervals, since a healthy watch resyncs at every one).
func redisReadiness(h store.RedisHealth, maxAge, reconcile time.Duration, now time.Time) []string {
	if !h.Connected {
		return []string{h.Problem}
	}
	if maxAge == 0 && reconcile > 0 {
		maxAge = 3 * reconcile
	}
	if maxAge > 0 && !h.LastSync.IsZero() && now.Sub(h.LastSync) > maxAge {
		return []string{fmt.Sprintf("last full sync from redis is older than %v", maxAge)}
	}
	return nil
}

// rateFlags are the rate-limit flags.
type rateFlags struct {
	proxies, ip, key, authFails, tickets, signIns *string
	ticketsCap, maxKeys                           *int
}

func (f rateFlags) parse() (api.Limits, *ratelimit.Limiter, error) {
	var l api.Limits
	var err error
	if l.Proxies, err = ratelimit.ParseProxies(*f.proxies); err != nil {
		return l, nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	var signIns ratelimit.Spec
	for _, s := range []struct {
		name string
		v    *string
		dst  *ratelimit.Spec
	}{
		{"--rate-ip", f.ip, &l.PerIP}, {"--rate-key", f.key, &l.PerKey}, {"--rate-auth-failures", f.authFails, &l.AuthFailures},
		{"--rate-tickets", f.tickets, &l.Tickets}, {"--rate-signin", f.signIns, &signIns},
	} {
		if *s.dst, err = ratelimit.ParseSpec(*s.v); err != nil {
			return l, nil, fmt.Errorf("%s %w", s.name, err)
		}
	}
	if *f.ticketsCap < 1 || *f.maxKeys < 1 {
		return l, nil, errors.New("--tickets-per-key and --rate-limit-keys must be at least 1")
	}
	l.TicketsPerKey, l.MaxKeys = *f.ticketsCap, *f.maxKeys
	return l, ratelimit.New(signIns, l.MaxKeys), nil
}

// addHTTPLimitFlags defines the flags of httpLimits.
func addHTTPLimitFlags(fs *cli.FlagSet) httpLimits {
	var l httpLimits
	l.readHeader = fs.EnvDuration("read-header-timeout", "PRESENCEHUB_READ_HEADER_TIMEOUT", 10*time.Second, "time a client has to send a request's headers")
	l.read = fs.EnvDuration("read-timeout", "PRESENCEHUB_READ_TIMEOUT", 30*time.Second, "time a client has to send a whole request, body included (a websocket is exempt once upgraded)")
	l.idle = fs.EnvDuration("idle-timeout", "PRESENCEHUB_IDLE_TIMEOUT", 120*time.Second, "how long an idle keep-alive connection stays open")
	l.maxHeader = fs.EnvInt("max-header-bytes", "PRESENCEHUB_MAX_HEADER_BYTES", 32<<10, "largest request header block, in bytes")
	l.drain = fs.EnvDuration("shutdown-drain-timeout", "PRESENCEHUB_SHUTDOWN_DRAIN_TIMEOUT", 10*time.Second, "on SIGTERM, how long in-flight HTTP requests may take to finish before their connections are closed")
	l.maxConns = fs.EnvInt("max-connections", "PRESENCEHUB_MAX_CONNECTIONS", 0, "open client connections (HTTP and websocket) at most; more wait in the kernel's backlog (0: the open-file limit less 256)")
	return l
}

// httpLimits bound what one client can hold open on the public listener,
// and how long a shutdown waits for requests in flight.
type httpLimits struct {
	readHeader, read, idle, drain *time.Duration
	maxHeader, maxConns           *int
}

func (l httpLimits) check() error {
	switch {
	case *l.readHeader <= 0:
		return errors.New("--read-header-timeout must be positive")
	case *l.read <= 0:
		return errors.New("--read-timeout must be positive")
	case *l.idle <= 0:
		return errors.New("--idle-timeout must be positive")
	case *l.drain <= 0:
		return errors.New("--shutdown-drain-timeout must be positive")
	case *l.maxHeader < 1024:
		return errors.New("--max-header-bytes must be at least 1024")
	case *l.maxConns < 0:
		return errors.New("--max-connections must not be negative")
	}
	return nil
}

// connections is --max-connections, or when 0 the process's open-file limit
// less room for Redis, PostgreSQL and log files.
func (l httpLimits) connections() int {
	if *l.maxConns > 0 {
		return *l.maxConns
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 16
	}
	return max(int(rl.Cur)-256, 64)
}

// server is the public HTTP server. ReadTimeout covers the headers and the
// body of every request, so a trickled body cannot hold a connection open;
// net/http clears the deadline when a websocket hijacks the connection, so
// streams are not cut by it (their liveness is the ping/pong's job).
func (l httpLimits) server(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: *l.readHeader,
		ReadTimeout:       *l.read,
		IdleTimeout:       *l.idle,
		MaxHeaderBytes:    *l.maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// hsts sends Strict-Transport-Security when the site is reached over TLS
// (directly, or through a TLS-terminating proxy: --secure-cookies).
func hsts(secure bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if secure || r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// listenPprof listens for the Go profiler on a loopback address of its own,
// never on the public listener.
func listenPprof(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--pprof %q: want a loopback address such as 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	return ln, nil
}

// pprofMux serves the Go profiles (net/http/pprof).
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// redactURL hides a password in a connection URL for logs.
func redactURL(s string) string {
	at := strings.LastIndexByte(s, '@')
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	cred := s[scheme+3 : at]
	if i := strings.IndexByte(cred, ':'); i >= 0 {
		return s[:scheme+3] + cred[:i] + ":xxxxx" + s[at:]
	}
	return s
}
