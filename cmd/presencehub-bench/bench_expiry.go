package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/api/client"
	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/store"
)

const benchExpiryHelp = `Expiry accuracy. --registrations registrations with short TTLs (whole
seconds from --min-ttl to --max-ttl, written evenly over one second) are left
to lapse, --runs times. For each, the delay from its expiryTime (the SBC's
epoch ms) to the "expired" change at a websocket subscriber is measured, next
to the delay until Redis itself publishes the key's "expired" keyspace
notification (the bench subscribes to __keyspace@<db>__:user:*@<realm>).
Redis expires keys lazily and in a 10 Hz sampling cycle, so its notification
can come late; presencehub runs its own clock from each key's TTL.

Short form: 300 registrations with TTLs of 2–6s. Long form (--long): 3,000
registrations with TTLs of 2–20s.`

func benchExpiry(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("expiry", benchExpiryHelp, getenv, stdout, stderr)
	n := fs.Int("registrations", 300, "registrations that lapse per run")
	minTTL := fs.Duration("min-ttl", 2*time.Second, "shortest TTL (whole seconds)")
	maxTTL := fs.Duration("max-ttl", 6*time.Second, "longest TTL (whole seconds)")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"registrations": "3000", "max-ttl": "20s"}); err != nil {
		return err
	}
	if *n < 1 || *minTTL < time.Second || *maxTTL < *minTTL {
		return errors.New("--registrations must be positive and 1s ≤ --min-ttl ≤ --max-ttl")
	}
	defer b.finish()
	srv, acct, err := b.serverWithAccount(ctx)
	if err != nil {
		return err
	}

	ev := &expiryEvents{hub: map[string]time.Time{}, redis: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Redis's own notifications.
	opts, _ := redis.ParseURL(*b.c.RedisURL)
	pattern := fmt.Sprintf("__keyspace@%d__:%s*@%s", opts.DB, store.RedisUserPrefix, acct.realm)
	ps := b.rdb.PSubscribe(ctx, pattern)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return fmt.Errorf("redis psubscribe: %w", err)
	}
	go func() {
		for {
			msg, err := ps.Receive(ctx)
			if err != nil {
				return
			}
			if m, ok := msg.(*redis.Message); ok && m.Payload == "expired" {
				now := time.Now()
				_, aor, _ := strings.Cut(m.Channel, store.RedisUserPrefix)
				user, _, _ := strings.Cut(aor, "@")
				ev.record(ev.redis, user, now)
			}
		}
	}()

	// The subscriber.
	c := client.New(client.Options{
		URL:    "ws" + strings.TrimPrefix(srv.url, "http") + "/v1/stream",
		Token:  b.key,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnFrame: func(f *client.Frame, received time.Time) {
			if f.Type == "change" && f.User != nil {
				switch f.Event {
				case "expired":
					ev.record(ev.hub, f.User.Name, received)
				case "unregistered":
					ev.mu.Lock()
					ev.unregistered++
					ev.mu.Unlock()
				}
			}
		},
	})
	sub := c.Subscribe("expiry", acct.sid)
	go func() { _ = c.Run(ctx) }()
	select {
	case <-sub.Synced():
	case <-time.After(30 * time.Second):
		return errors.New("the subscriber got no snapshot within 30s")
	}

	// The keys lapse by themselves; their active-user entries are removed
	// at the end, as the SBC's pruning would.
	var written []benchAOR
	b.onCleanup(func(ctx context.Context) { _ = b.unregisterAll(ctx, written) })

	var hub50, hub99, hubMax, red50, red99, redMax benchkit.Spread
	missing, unregistered := 0, 0
	for run := 1; run <= *b.runs; run++ {
		expiry := make(map[string]int64, *n)
		lo, hi := int64(*minTTL/time.Second), int64(*maxTTL/time.Second)
		start := time.Now()
		for i := range *n {
			user := fmt.Sprintf("x%d-%05d", run, i)
			secs := lo + int64(i)*(hi-lo+1)/int64(*n)
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(*n))); d > 0 {
				time.Sleep(d)
			}
			exp, err := store.RegisterAsSBC(ctx, b.rdb, user, acct.realm, benchRecord(user, i, ""), time.Duration(secs)*time.Second)
			if err != nil {
				return fmt.Errorf("register in redis: %w", err)
			}
			expiry[user] = exp
			written = append(written, benchAOR{user, acct.realm})
		}
		deadline := start.Add(*maxTTL + 30*time.Second)
		for !ev.all(expiry) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		hubD, redD, miss, unreg := ev.take(expiry)
		missing += miss
		unregistered += unreg
		slices.Sort(hubD)
		slices.Sort(redD)
		if len(hubD) > 0 {
			hub50, hub99, hubMax = append(hub50, benchkit.Percentile(hubD, 50)), append(hub99, benchkit.Percentile(hubD, 99)), append(hubMax, hubD[len(hubD)-1])
		}
		if len(redD) > 0 {
			red50, red99, redMax = append(red50, benchkit.Percentile(redD, 50)), append(red99, benchkit.Percentile(redD, 99)), append(redMax, redD[len(redD)-1])
		}
		b.logf("run %d: %d expired events (%d missing); hub p50 %.1f ms p99 %.1f ms; redis p50 %.1f ms p99 %.1f ms",
			run, len(hubD), miss, benchkit.Percentile(hubD, 50), benchkit.Percentile(hubD, 99), benchkit.Percentile(redD, 50), benchkit.Percentile(redD, 99))
	}
	b.add("hub \"expired\" after expiryTime: p50", hub50.Format(benchkit.FmtMs), "", nil)
	b.add("hub \"expired\" after expiryTime: p99", hub99.Format(benchkit.FmtMs), "", nil)
	b.add("hub \"expired\" after expiryTime: max", hubMax.Format(benchkit.FmtMs), "", nil)
	b.add("redis expired notification after expiryTime: p50", red50.Format(benchkit.FmtMs), "", nil)
	b.add("redis expired notification after expiryTime: p99", red99.Format(benchkit.FmtMs), "", nil)
	b.add("redis expired notification after expiryTime: max", redMax.Format(benchkit.FmtMs), "", nil)
	b.add("lapses without an \"expired\" event", fmt.Sprintf("%d (%d reported as unregistered)", missing, unregistered), "0", benchkit.BoolPtr(missing == 0))
	b.add(fmt.Sprintf("setup: %d registrations per run, TTL %v–%v", *n, *minTTL, *maxTTL), fmt.Sprintf("%d runs", *b.runs), "", nil)
	return nil
}

// expiryEvents collects when each user's lapse was seen, by the hub (at the
// subscriber) and by Redis.
type expiryEvents struct {
	mu           sync.Mutex
	hub, redis   map[string]time.Time
	unregistered int
}

func (e *expiryEvents) record(m map[string]time.Time, user string, t time.Time) {
	e.mu.Lock()
	if _, ok := m[user]; !ok {
		m[user] = t
	}
	e.mu.Unlock()
}

// all reports whether both saw every user of expiry lapse.
func (e *expiryEvents) all(expiry map[string]int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for u := range expiry {
		if _, ok := e.hub[u]; !ok {
			return false
		}
		if _, ok := e.redis[u]; !ok {
			return false
		}
	}
	return true
}

// take returns the delays (ms after expiryTime) of the users of expiry, the
// number the hub never reported as expired, and the un-registrations seen,
// and forgets them.
func (e *expiryEvents) take(expiry map[string]int64) (hub, red []float64, missing, unregistered int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for u, exp := range expiry {
		if t, ok := e.hub[u]; ok {
			hub = append(hub, float64(t.UnixMicro()-exp*1000)/1000)
		} else {
			missing++
		}
		if t, ok := e.redis[u]; ok {
			red = append(red, float64(t.UnixMicro()-exp*1000)/1000)
		}
		delete(e.hub, u)
		delete(e.redis, u)
	}
	unregistered, e.unregistered = e.unregistered, 0
	return hub, red, missing, unregistered
}
