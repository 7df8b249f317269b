package store

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
)

// ErrNotifications is wrapped by the errors of Check when Redis does not
// publish the keyspace notifications presencehub needs and they could not be
// turned on. It is a configuration problem: Watch keeps retrying (someone may
// fix it) and reports it through Health.
var ErrNotifications = errors.New("redis keyspace notifications are not enabled")

// RedisOptions configure a RedisSource.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port/db (rediss:// for TLS), as
	// redis.ParseURL reads it.
	URL string
	// ConfigureNotifications lets Check run CONFIG SET notify-keyspace-events
	// when the server does not publish what is needed.
	ConfigureNotifications bool
	// ReconcileEvery is how often the whole keyspace is read again and handed
	// to the sink (default 5 minutes; negative disables).
	ReconcileEvery time.Duration
	// Logger receives the source's logs (default slog.Default()).
	Logger *slog.Logger

	// Sentinels, when set, are Redis Sentinel addresses (host:port) to ask
	// for the current master of SentinelMaster; the client follows a
	// failover by itself. URL then gives only the database number, the
	// credentials and whether to use TLS (rediss://); its host is ignored.
	Sentinels        []string
	SentinelMaster   string
	SentinelUsername string
	SentinelPassword string
	// Username and Password, when set, replace those of URL (Redis ACL).
	Username, Password string
	// CAFile is a PEM file of the certificate authorities that verify a
	// rediss:// server (default: the system's).
	CAFile string
}

// newRedisClient builds the client RedisOptions describe, and a name of
// the server for logs and errors.
func newRedisClient(opts RedisOptions) (*redis.Client, string, int, error) {
	if opts.URL == "" {
		return nil, "", 0, fmt.Errorf("%w: redis url is empty", ErrInvalid)
	}
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		// A *url.Error quotes the URL, password included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "", 0, fmt.Errorf("%w: redis url: %v", ErrInvalid, err)
	}
	if ro.ClientName == "" {
		ro.ClientName = "presencehub"
	}
	if opts.Username != "" {
		ro.Username = opts.Username
	}
	if opts.Password != "" {
		ro.Password = opts.Password
	}
	if opts.CAFile != "" {
		if ro.TLSConfig == nil {
			return nil, "", 0, fmt.Errorf("%w: a redis CA file is given but the redis url is not rediss://", ErrInvalid)
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, "", 0, fmt.Errorf("%w: redis CA file: %v", ErrInvalid, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", 0, fmt.Errorf("%w: redis CA file %s holds no PEM certificate", ErrInvalid, opts.CAFile)
		}
		ro.TLSConfig.RootCAs = pool
	}
	if len(opts.Sentinels) == 0 {
		return redis.NewClient(ro), ro.Addr, ro.DB, nil
	}
	if opts.SentinelMaster == "" {
		return nil, "", 0, fmt.Errorf("%w: redis sentinels need the master's name", ErrInvalid)
	}
	fo := &redis.FailoverOptions{
		MasterName:       opts.SentinelMaster,
		SentinelAddrs:    opts.Sentinels,
		SentinelUsername: opts.SentinelUsername,
		SentinelPassword: opts.SentinelPassword,
		ClientName:       ro.ClientName,
		Username:         ro.Username,
		Password:         ro.Password,
		DB:               ro.DB,
		TLSConfig:        ro.TLSConfig,
		DialTimeout:      ro.DialTimeout,
		ReadTimeout:      ro.ReadTimeout,
		WriteTimeout:     ro.WriteTimeout,
		PoolSize:         ro.PoolSize,
	}
	name := "sentinel master " + opts.SentinelMaster + " via " + strings.Join(opts.Sentinels, ",")
	return redis.NewFailoverClient(fo), name, ro.DB, nil
}

// RedisMetrics are the counters of a RedisSource.
type RedisMetrics struct {
	Notifications      uint64        // keyspace notifications received
	Reads              uint64        // keys read (value and PTTL), in resyncs and after notifications
	Malformed          uint64        // reads skipped because the key or its value was malformed
	MalformedKeys      int           // keys currently skipped as malformed
	Resyncs            uint64        // full loads handed to the sink
	Reconnects         uint64        // times the watch was torn down and started again
	LastResyncDuration time.Duration // duration of the last full load, sink included
}

// Tuning of the watch.
const (
	redisReadBatch       = 500              // keys per MGET (a load) or GET+PTTL pipeline (a load's retries)
	redisNotifiedBatch   = 4096             // notified keys per GET+PTTL pipeline, at most
	redisScanCount       = 250              // SCAN COUNT
	redisFreeAfter       = 10000            // keys read by a load after which memory is returned to the OS
	redisHealthEvery     = 30 * time.Second // pub/sub silence before a PING
	redisSubscribeWait   = 10 * time.Second // wait for the subscription to be confirmed
	redisProbeWait       = 2 * time.Second  // wait for the events of the probe key
	redisBackoffMin      = 200 * time.Millisecond
	redisBackoffMax      = 10 * time.Second
	defaultReconcileTime = 5 * time.Minute
)

// RedisSource reads the registrations a jambonz SBC keeps in Redis and feeds
// them to a hub.Sink: it implements hub.Source.
//
// Keyspace notifications are fire-and-forget and carry no value, so the
// source subscribes first, then loads every key and hands the whole set to
// Sink.Resync, and after that re-reads every key it is notified about. After
// any trouble with the subscription it starts over (with a full resync), and
// it resyncs periodically as well. The registration's Deadline is computed
// from the key's PTTL on this machine's clock, never from the SBC's
// expiryTime.
type RedisSource struct {
	opts   RedisOptions
	log    *slog.Logger
	rdb    *redis.Client
	addr   string
	prefix string // "__keyspace@<db>__:"
	// sentinels, with Sentinel, are asked which node is the master, so
	// that a session ends when it moves (see followMaster).
	sentinels []*redis.SentinelClient

	// warned holds the malformed keys already logged; only the goroutine
	// running Watch touches it.
	warned map[string]struct{}
	// reader is what readKeys reuses from one batch to the next.
	reader keyReader

	m struct {
		notifications, reads, malformed, resyncs, reconnects atomic.Uint64
		malformedKeys, lastResync                            atomic.Int64
	}

	// Health: connected after a session's first resync until it ends;
	// lastSync the unix nanoseconds of the last resync; problem why not.
	connected atomic.Bool
	lastSync  atomic.Int64
	problem   atomic.Pointer[string]

	closeOnce sync.Once
	closeErr  error
}

// NewRedisSource returns a source for the Redis at opts.URL. It does not
// connect yet. A URL that cannot be parsed gives an error wrapping ErrInvalid.
func NewRedisSource(opts RedisOptions) (*RedisSource, error) {
	rdb, addr, db, err := newRedisClient(opts)
	if err != nil {
		return nil, err
	}
	if opts.ReconcileEvery == 0 {
		opts.ReconcileEvery = defaultReconcileTime
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &RedisSource{
		opts:   opts,
		log:    opts.Logger,
		rdb:    rdb,
		addr:   addr,
		prefix: "__keyspace@" + strconv.Itoa(db) + "__:",
		warned: make(map[string]struct{}),
	}
	for _, a := range opts.Sentinels {
		s.sentinels = append(s.sentinels, redis.NewSentinelClient(&redis.Options{
			Addr: a, Username: opts.SentinelUsername, Password: opts.SentinelPassword,
			TLSConfig: rdb.Options().TLSConfig, DialTimeout: time.Second, ReadTimeout: time.Second,
		}))
	}
	return s, nil
}

// redisSentinelPoll is how often a session asks the Sentinels where the
// master is.
const redisSentinelPoll = 500 * time.Millisecond

// redisMasterRetry is the pause before a session starts again when the node
// reached was not the master yet.
const redisMasterRetry = 20 * time.Millisecond

// masterAddr asks the Sentinels, in turn, for the master's address.
func (s *RedisSource) masterAddr(ctx context.Context) (string, error) {
	var last error = errors.New("no sentinel")
	for _, sc := range s.sentinels {
		c, cancel := context.WithTimeout(ctx, time.Second)
		a, err := sc.GetMasterAddrByName(c, s.opts.SentinelMaster).Result()
		cancel()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		last = err
	}
	return "", last
}

// errMasterMoved ends a session whose Sentinels name another master. It is
// no trouble with the connection, so Watch starts the next session at once,
// without the reconnect backoff: every millisecond of it would be a pause in
// the stream (presencehub-bench failover measures that pause).
var errMasterMoved = errors.New("redis sentinel: the master moved")

// useNode makes the data client a plain one of addr, with the Sentinel
// client's settings (credentials, database, TLS, timeouts), and returns the
// function that closes it and restores the Sentinel client. Only the
// goroutine running Watch calls it, between sessions' uses of s.rdb.
func (s *RedisSource) useNode(addr string) (restore func()) {
	failover := s.rdb
	o := *failover.Options()
	o.Addr, o.Dialer = addr, nil
	s.rdb = redis.NewClient(&o)
	return func() {
		_ = s.rdb.Close()
		s.rdb = failover
	}
}

// checkMaster makes sure that, with Sentinel, the data connection reaches
// the master: right after a failover the client's own Sentinel may still
// name the demoted node, which resynchronises from the new master without
// keyspace events. A session must not subscribe there; it starts again
// shortly (errMasterMoved).
func (s *RedisSource) checkMaster(ctx context.Context) error {
	if len(s.sentinels) == 0 {
		return nil
	}
	role, err := s.rdb.Do(ctx, "ROLE").Slice()
	if err != nil {
		return fmt.Errorf("redis %s: role: %w", s.addr, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%w: the node reached is a %v, not the master yet", errMasterMoved, role[0])
	}
	return nil
}

// followMaster ends the session when the Sentinels name another master
// than the one it started on. After a failover the old master may live on
// as a replica, still publishing the replicated writes' events, so the
// subscription would not break by itself; a new session subscribes on the
// new master, checks its notify-keyspace-events as at start (configuration
// is not replicated) and resyncs, which emits only the differences.
//
// The Sentinels announce a finished failover on their +switch-master
// channel, which followMaster listens to, so the switch starts at once: the
// demoted master stops relaying events while it resynchronises with the
// new one, and until the switch the stream would pause. Asking the
// Sentinels every redisSentinelPoll is the safety net for a missed
// announcement.
func (s *RedisSource) followMaster(ctx context.Context, fail context.CancelCauseFunc, master string) {
	moved := func(to string) {
		s.log.Info("redis sentinel: the master moved; following it", "from", master, "to", to)
		fail(fmt.Errorf("%w from %s to %s", errMasterMoved, master, to))
	}
	announced := make(chan string, len(s.sentinels))
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, sc := range s.sentinels {
		ps := sc.Subscribe(ctx, "+switch-master")
		stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			defer ps.Close()
			for ctx.Err() == nil {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					// This Sentinel is away (the client resubscribes on
					// the next receive) or the session is over.
					select {
					case <-ctx.Done():
					case <-time.After(redisSentinelPoll):
					}
					continue
				}
				// "<name> <old ip> <old port> <new ip> <new port>"
				f := strings.Fields(msg.Payload)
				if len(f) == 5 && f[0] == s.opts.SentinelMaster {
					select {
					case announced <- net.JoinHostPort(f[3], f[4]):
					default:
					}
				}
			}
		}()
	}
	t := time.NewTicker(redisSentinelPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-announced:
			if master != "" && a != master {
				moved(a)
				return
			}
			continue
		case <-t.C:
		}
		a, err := s.masterAddr(ctx)
		switch {
		case err != nil:
			continue // the Sentinels are away; the data connection decides
		case master == "":
			master = a
		case a != master:
			moved(a)
			return
		}
	}
}

// Close releases the connections. Call it after Watch has returned.
func (s *RedisSource) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.rdb.Close()
		for _, sc := range s.sentinels {
			_ = sc.Close()
		}
	})
	return s.closeErr
}

// Metrics returns the current counters.
func (s *RedisSource) Metrics() RedisMetrics {
	return RedisMetrics{
		Notifications:      s.m.notifications.Load(),
		Reads:              s.m.reads.Load(),
		Malformed:          s.m.malformed.Load(),
		MalformedKeys:      int(s.m.malformedKeys.Load()),
		Resyncs:            s.m.resyncs.Load(),
		Reconnects:         s.m.reconnects.Load(),
		LastResyncDuration: time.Duration(s.m.lastResync.Load()),
	}
}

// Check pings Redis and makes sure it publishes the keyspace notifications
// the source needs: K plus A, or K plus g, $ and x. When they are missing it
// turns them on if ConfigureNotifications is set, and otherwise returns an
// error (wrapping ErrNotifications) that gives the command to run. Where
// CONFIG is not allowed (managed Redis), it writes a short-lived probe key
// and watches for its events instead.
func (s *RedisSource) Check(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: ping: %w", s.addr, err)
	}
	res, err := s.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		if !isReplyError(err) || isTransientReply(err) {
			return fmt.Errorf("redis %s: config get: %w", s.addr, err)
		}
		// CONFIG is renamed, refused by an ACL, or absent (managed Redis):
		// see whether the events arrive.
		return s.probeNotifications(ctx, err)
	}
	cur := res["notify-keyspace-events"]
	if notifyFlagsOK(cur) {
		return nil
	}
	want := notifyFlagsWith(cur)
	if !s.opts.ConfigureNotifications {
		return fmt.Errorf("%w: notify-keyspace-events is %q, presencehub needs K and g$x (or A): "+
			"run  redis-cli CONFIG SET notify-keyspace-events '%s'  (and put notify-keyspace-events %s in redis.conf "+
			"so it survives a restart), or let presencehub set it by enabling its configure-notifications option",
			ErrNotifications, cur, want, want)
	}
	if err := s.rdb.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		if isReplyError(err) {
			return fmt.Errorf("%w: notify-keyspace-events is %q and CONFIG SET was refused (%v): "+
				"set notify-keyspace-events %s in the Redis server configuration", ErrNotifications, cur, err, want)
		}
		return fmt.Errorf("redis %s: config set: %w", s.addr, err)
	}
	s.log.Info("enabled redis keyspace notifications", "addr", s.addr, "was", cur, "now", want)
	return nil
}

// notifyFlagsOK reports whether notify-keyspace-events flags publish the
// keyspace events of SETEX (set, expire), DEL (del) and lapses (expired).
func notifyFlagsOK(f string) bool {
	has := func(c byte) bool { return strings.IndexByte(f, c) >= 0 }
	return has('K') && (has('A') || has('g') && has('$') && has('x'))
}

// notifyFlagsWith returns flags with K, g, $ and x added (A already covers
// g$x), keeping everything that was set: "" gives "Kg$x", "Ex" gives "KEg$x".
func notifyFlagsWith(f string) string {
	set := make(map[byte]bool)
	for i := 0; i < len(f); i++ {
		set[f[i]] = true
	}
	set['K'] = true
	if !set['A'] {
		set['g'], set['$'], set['x'] = true, true, true
	}
	var b strings.Builder
	for _, c := range []byte("KEAg$lshzxetmdn") {
		if set[c] {
			b.WriteByte(c)
			delete(set, c)
		}
	}
	for i := 0; i < len(f); i++ { // flags this version does not know
		if set[f[i]] {
			b.WriteByte(f[i])
			delete(set, f[i])
		}
	}
	return b.String()
}

// probeNotifications writes a key that lapses at once and waits for its
// set, expire and expired events on the keyspace channel.
func (s *RedisSource) probeNotifications(ctx context.Context, configErr error) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := "presencehub:probe:" + hex.EncodeToString(rnd[:])
	ps := s.rdb.Subscribe(ctx)
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	channel := s.prefix + key
	if err := ps.Subscribe(ctx, channel); err != nil {
		return fmt.Errorf("redis %s: subscribe: %w", s.addr, err)
	}
	if err := waitSubscribed(ctx, ps, "subscribe", channel); err != nil {
		return fmt.Errorf("redis %s: subscribe: %w", s.addr, err)
	}
	const ttl = 20 * time.Millisecond
	setAt := time.Now()
	if err := s.rdb.Set(ctx, key, "1", ttl).Err(); err != nil {
		return fmt.Errorf("redis %s: probe: %w", s.addr, err)
	}
	missing := map[string]bool{"set": true, "expire": true, "expired": true}
	deadline := setAt.Add(redisProbeWait)
	for len(missing) > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := time.Until(deadline)
		if left <= 0 {
			var names []string
			for _, e := range []string{"set", "expire", "expired"} {
				if missing[e] {
					names = append(names, e)
				}
			}
			return fmt.Errorf("%w: CONFIG is not available to check them (%v) and a probe key got no %s event: "+
				"set notify-keyspace-events Kg$x (or KA) in the Redis server configuration "+
				"(redis.conf, or the parameter group of a managed Redis)",
				ErrNotifications, configErr, strings.Join(names, ", "))
		}
		msg, err := ps.ReceiveTimeout(ctx, min(left, 50*time.Millisecond))
		if err != nil {
			if !isTimeout(err) {
				return fmt.Errorf("redis %s: probe: %w", s.addr, err)
			}
			if time.Since(setAt) > ttl {
				// Touching a lapsed key makes Redis expire it (and tell).
				if err := s.rdb.Exists(ctx, key).Err(); err != nil {
					return fmt.Errorf("redis %s: probe: %w", s.addr, err)
				}
			}
			continue
		}
		if m, ok := msg.(*redis.Message); ok {
			delete(missing, m.Payload)
		}
	}
	return nil
}

// Watch feeds sink until ctx is done, and then returns nil. Trouble with
// the connection is logged and retried with a capped, jittered backoff, each
// new attempt resubscribing and resyncing. Redis without the keyspace
// notifications (say, restarted without them) is retried too: that is a
// configuration problem, logged as an error with the command that fixes it,
// and Health reports it until it is fixed; the process does not exit, so
// open sockets keep their (frozen) snapshot and reconnect to nothing new.
// Watch implements hub.Source; do not run two at once on one RedisSource.
func (s *RedisSource) Watch(ctx context.Context, sink hub.Sink) error {
	delay := redisBackoffMin
	for {
		synced, err := s.session(ctx, sink)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			delay = redisBackoffMin
		}
		if errors.Is(err, errMasterMoved) {
			// Not trouble: at once, or after a moment while the client's
			// Sentinel catches up (checkMaster).
			s.setProblem("following the new redis master")
			s.m.reconnects.Add(1)
			if synced {
				continue
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(redisMasterRetry):
			}
			continue
		}
		wait := delay/2 + randv2.N(delay/2+1)
		delay = min(delay*2, redisBackoffMax)
		if errors.Is(err, ErrNotifications) {
			s.setProblem("redis keyspace notifications are off")
			s.log.Error("redis does not publish keyspace notifications; presencehub is not ready until they are on", "addr", s.addr, "fix", err, "retry_in", wait)
		} else {
			s.setProblem("redis unreachable")
			s.log.Warn("redis watch interrupted; resubscribing and resyncing", "addr", s.addr, "err", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		s.m.reconnects.Add(1)
	}
}

// RedisHealth is the state of the watch, for readiness.
type RedisHealth struct {
	// Connected: subscribed and the last full load handed to the sink.
	Connected bool
	// LastSync is when the last full load was handed to the sink (zero
	// before the first).
	LastSync time.Time
	// Problem says, without addresses or credentials, why the watch is
	// down ("" while connected).
	Problem string
}

// Health returns the watch's current state.
func (s *RedisSource) Health() RedisHealth {
	h := RedisHealth{Connected: s.connected.Load()}
	if n := s.lastSync.Load(); n != 0 {
		h.LastSync = time.Unix(0, n)
	}
	if !h.Connected {
		h.Problem = "redis watch not connected yet"
		if p := s.problem.Load(); p != nil {
			h.Problem = *p
		}
	}
	return h
}

func (s *RedisSource) setProblem(p string) { s.problem.Store(&p) }

// session subscribes, resyncs and then applies notifications until something
// fails. synced tells whether the first resync was handed to the sink.
func (s *RedisSource) session(ctx context.Context, sink hub.Sink) (synced bool, err error) {
	// With Sentinel, note the master first: if it moves while this session
	// starts, followMaster sees a difference and starts another.
	var master string
	if len(s.sentinels) > 0 {
		master, _ = s.masterAddr(ctx)
		if master != "" {
			// The session talks to the node the Sentinels name, and only to
			// it: the Sentinel-aware client's pool may still hold
			// connections to the demoted master for a moment after a
			// failover, and a read there is stale.
			defer s.useNode(master)()
		}
	}
	if err := s.checkMaster(ctx); err != nil {
		return false, err
	}
	if err := s.Check(ctx); err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	ps := s.rdb.PSubscribe(ctx)
	// Closing the subscription is what interrupts a blocked receive.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	readerDone := make(chan struct{})
	reading := false
	defer func() {
		cancel(nil)
		stop()
		_ = ps.Close()
		if reading {
			<-readerDone
		}
	}()

	pattern := s.prefix + RedisUserPrefix + "*"
	if err := ps.PSubscribe(ctx, pattern); err != nil {
		return false, fmt.Errorf("redis %s: psubscribe: %w", s.addr, err)
	}
	if err := waitSubscribed(ctx, ps, "psubscribe", pattern); err != nil {
		return false, fmt.Errorf("redis %s: psubscribe: %w", s.addr, err)
	}
	p := newPendingKeys()
	reading = true
	go s.receive(ctx, cancel, ps, p, readerDone)
	if len(s.sentinels) > 0 {
		go s.followMaster(ctx, cancel, master)
	}

	if err := s.resync(ctx, sink); err != nil {
		return false, err
	}
	// Still the master: a failover during the load starts over.
	if err := s.checkMaster(ctx); err != nil {
		return true, err
	}
	s.connected.Store(true)
	var tick <-chan time.Time
	if s.opts.ReconcileEvery > 0 {
		t := time.NewTicker(s.opts.ReconcileEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return true, context.Cause(ctx)
		case <-tick:
			if err := s.resync(ctx, sink); err != nil {
				return true, err
			}
		case <-p.wake:
			if err := s.drain(ctx, sink, p); err != nil {
				return true, err
			}
		}
	}
}

// waitSubscribed waits for Redis to confirm the subscription: only then are
// events published to us, so only then may the current state be read.
func waitSubscribed(ctx context.Context, ps *redis.PubSub, kind, channel string) error {
	deadline := time.Now().Add(redisSubscribeWait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("no confirmation")
		}
		msg, err := ps.ReceiveTimeout(ctx, left)
		if err != nil {
			return err
		}
		if m, ok := msg.(*redis.Subscription); ok && m.Kind == kind && m.Channel == channel {
			return nil
		}
	}
}

// receive turns notifications into pending keys until the subscription
// fails; then it cancels the session with the reason. It never waits for
// Redis round trips, so a slow sink cannot make Redis drop the subscriber.
// go-redis's Channel is not used: it drops messages it cannot deliver in
// time.
func (s *RedisSource) receive(ctx context.Context, fail context.CancelCauseFunc, ps *redis.PubSub, p *pendingKeys, done chan<- struct{}) {
	defer close(done)
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, redisHealthEvery)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if isTimeout(err) && !pinged {
				// Quiet for a while: make sure the connection is alive.
				pinged = true
				if err := ps.Ping(ctx); err != nil {
					fail(fmt.Errorf("redis pubsub ping: %w", err))
					return
				}
				continue
			}
			if isTimeout(err) {
				err = errors.New("no answer to ping")
			}
			fail(fmt.Errorf("redis pubsub: %w", err))
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Message:
			key, ok := strings.CutPrefix(m.Channel, s.prefix)
			if !ok {
				continue
			}
			s.m.notifications.Add(1)
			p.add(key)
		case *redis.Subscription:
			// go-redis re-dials a broken subscription by itself;
			// whatever happened meanwhile was not published to us.
			fail(errors.New("redis pubsub connection was re-established"))
			return
		}
	}
}

// drain re-reads the pending keys and hands the updates to the sink, in
// order, until none is pending. Keys notified while the sink applies a batch
// are read from Redis meanwhile, up to redisNotifiedBatch of them, and the
// sink then gets them in one call: when the hub falls behind (a saturated
// machine, where each round trip also waits for the scheduler), the batches
// grow instead of the lag, and a key is read soon after its notification
// rather than after the hub has caught up (when a later write of the same
// user would have replaced it).
func (s *RedisSource) drain(ctx context.Context, sink hub.Sink, p *pendingKeys) error {
	type batch struct {
		states []keyState
		err    error
	}
	// At most one read is in flight, and it has ended before drain
	// returns: readKeys keeps the malformed-key log, which the session's
	// resync keeps too.
	var reading chan batch
	read := func(max int) {
		keys := p.take(max)
		if len(keys) == 0 {
			return
		}
		ch := make(chan batch, 1)
		reading = ch
		go func() {
			st, err := s.readKeys(ctx, keys)
			ch <- batch{st, err}
		}()
	}
	var ready []hub.Update // read, in order, not yet applied
	got := func(b batch) error {
		reading = nil
		if b.err != nil {
			return b.err
		}
		ready = slices.Grow(ready, len(b.states))
		for _, st := range b.states {
			if st.aor != "" {
				ready = append(ready, hub.Update{AOR: st.aor, Reg: st.reg})
			}
		}
		return nil
	}
	for {
		switch {
		case reading != nil:
			if err := got(<-reading); err != nil {
				return err
			}
		case len(ready) < redisNotifiedBatch:
			// Nothing is being applied, so nothing to read alongside:
			// read here, without a goroutine and its wake-ups (at 5,000
			// changes/s most batches are read this way, a few keys each).
			keys := p.take(redisNotifiedBatch - len(ready))
			if len(keys) == 0 && len(ready) == 0 {
				return nil
			}
			if len(keys) > 0 {
				st, err := s.readKeys(ctx, keys)
				if err := got(batch{st, err}); err != nil {
					return err
				}
			}
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if len(ready) == 0 {
			continue
		}
		applied := make(chan struct{})
		go func(updates []hub.Update) {
			defer close(applied)
			sink.Update(updates...)
		}(ready)
		ready = nil
		// Meanwhile, read what is notified.
	applying:
		for {
			if reading == nil && len(ready) < redisNotifiedBatch {
				read(redisNotifiedBatch - len(ready))
			}
			select {
			case <-applied:
				break applying
			case b := <-reading: // nil (blocks) when no read is in flight
				if err := got(b); err != nil {
					<-applied
					return err
				}
			case <-p.wake:
			}
		}
	}
}

// resync reads every registration (see loadAll) and hands them to
// sink.Resync.
func (s *RedisSource) resync(ctx context.Context, sink hub.Sink) error {
	start := time.Now()
	restoreGC := raiseGCPercent()
	defer restoreGC() // first thing at return; a no-op once done below
	regs, seen, err := s.loadAll(ctx)
	if err != nil {
		return err
	}
	for k := range s.warned { // forget the warnings of keys that are gone
		if _, ok := seen[k]; !ok {
			delete(s.warned, k)
		}
	}
	s.m.malformedKeys.Store(int64(len(s.warned)))
	loaded := time.Since(start)
	sink.Resync(regs)
	nregs, nkeys := len(regs), len(seen)
	if nkeys >= redisFreeAfter {
		// A big load leaves its garbage (the values as read, the parsed
		// records, the keys) in pages the process keeps: give them back
		// once, before ready, so that the memory the process holds is what
		// the snapshot needs (bench resync measures it).
		regs, seen = nil, nil
		debug.FreeOSMemory()
	}
	restoreGC()
	took := time.Since(start)
	s.m.resyncs.Add(1)
	s.m.lastResync.Store(int64(took))
	s.lastSync.Store(time.Now().UnixNano())
	s.log.Debug("redis resync", "registrations", nregs, "keys", nkeys, "read", loaded, "took", took)
	return nil
}

// redisLoadGCPercent is the GC percentage while a full load runs (GOGC
// otherwise, 100 by default). A cold load's heap grows from nothing to the
// whole snapshot with as much again in garbage (the values as read, the
// keys, the batches): at 100 it was collected five or six times on the way,
// each time marking everything loaded so far, about a sixth of the load's
// CPU. The load ends with a full collection anyway (debug.FreeOSMemory,
// for loads of redisFreeAfter keys or more), so the memory held when ready
// is the same; what grows is the peak during the load, by the garbage of
// that one load (about 1.3 KB per key read). A GOMEMLIMIT still caps it.
const redisLoadGCPercent = 400

// loadGC counts the loads running with redisLoadGCPercent (a process may
// watch more than one Redis) and keeps the percentage to go back to.
var loadGC struct {
	mu   sync.Mutex
	n    int
	prev int
}

// raiseGCPercent sets redisLoadGCPercent unless GOGC is already at least
// that (or off); the function returned puts it back when the last load
// running is done, and does nothing when called again.
func raiseGCPercent() (restore func()) {
	loadGC.mu.Lock()
	defer loadGC.mu.Unlock()
	if loadGC.n == 0 {
		loadGC.prev = debug.SetGCPercent(redisLoadGCPercent)
		if loadGC.prev < 0 || loadGC.prev >= redisLoadGCPercent {
			debug.SetGCPercent(loadGC.prev)
		}
	}
	loadGC.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			loadGC.mu.Lock()
			defer loadGC.mu.Unlock()
			if loadGC.n--; loadGC.n == 0 {
				debug.SetGCPercent(loadGC.prev)
			}
		})
	}
}

// keyState is what one key holds now: reg is nil when the key is absent,
// lapsed or malformed; aor is "" when the key's name is not a valid AOR.
type keyState struct {
	aor string
	reg *hub.Registration
}

// aorIn is user@realm: the key's own tail when its realm is already folded
// (an SBC's usual key), which saves a string per change, else a new string.
func aorIn(key, user, realm string) string {
	if tail := key[len(RedisUserPrefix):]; len(tail) == len(user)+1+len(realm) && tail[len(user)+1:] == realm {
		return tail
	}
	return user + "@" + realm
}

// malformed counts a skipped key and logs it, once until it becomes valid
// (or absent) again.
func (s *RedisSource) malformed(key, reason string) {
	s.m.malformed.Add(1)
	if _, done := s.warned[key]; done {
		return
	}
	s.warned[key] = struct{}{}
	s.m.malformedKeys.Store(int64(len(s.warned)))
	s.log.Warn("skipping malformed registration in redis", "key", key, "reason", reason)
}

func (s *RedisSource) notMalformed(key string) {
	if _, ok := s.warned[key]; ok {
		delete(s.warned, key)
		s.m.malformedKeys.Store(int64(len(s.warned)))
	}
}

// pendingKeys is the de-duplicated, ordered set of keys notified but not yet
// read. The receiver adds, the worker takes.
type pendingKeys struct {
	mu    sync.Mutex
	set   map[string]struct{}
	queue []string
	taken []string // what take returned last
	wake  chan struct{}
}

func newPendingKeys() *pendingKeys {
	return &pendingKeys{set: make(map[string]struct{}), wake: make(chan struct{}, 1)}
}

func (p *pendingKeys) add(key string) {
	p.mu.Lock()
	if _, ok := p.set[key]; !ok {
		p.set[key] = struct{}{}
		p.queue = append(p.queue, key)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take removes and returns up to limit keys, oldest first. A key notified
// again after being taken is added again, and so read again. The slice is
// valid until the next take (drain reads one batch at a time).
func (p *pendingKeys) take(limit int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(limit, len(p.queue))
	if n == 0 {
		return nil
	}
	out := p.taken
	if cap(out) < n {
		out = make([]string, n, max(n, min(2*cap(out), redisNotifiedBatch)))
	}
	if n < len(out) {
		clear(out[n:]) // no keys of the last batch kept alive
	}
	out = out[:n]
	p.taken = out
	copy(out, p.queue)
	for _, k := range out {
		delete(p.set, k)
	}
	if n == len(p.queue) {
		p.queue = p.queue[:0]
	} else {
		p.queue = p.queue[n:]
	}
	return out
}

func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// isTransientReply reports whether a reply error says "not now" rather than
// "not allowed".
func isTransientReply(err error) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
