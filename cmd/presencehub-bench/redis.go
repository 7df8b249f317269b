package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
)

// benchRecord is what the benchmarks register: a WSS client behind NAT.
func benchRecord(user string, i int, contactParams string) store.SBCRecord {
	return store.SBCRecord{
		Contact:           fmt.Sprintf("sip:%s@10.%d.%d.%d:%d;transport=ws%s", user, i>>16&255, i>>8&255, i&255, 40000+i%20000, contactParams),
		SBCAddress:        "192.0.2.10:8443",
		PrivateSBCAddress: "10.0.0.10:5060",
		Protocol:          "wss",
		Proxy:             fmt.Sprintf("sip:203.0.113.%d:%d", 1+i%254, 1024+i%60000),
		AllowDirectApp:    true,
		AllowDirectUser:   true,
	}
}

type benchAOR struct{ user, realm string }

// registerAll writes registrations as an SBC does, pipelined, and removes
// them at the end of the benchmark.
func (b *bench) registerAll(ctx context.Context, aors []benchAOR, expires time.Duration) error {
	b.onCleanup(func(ctx context.Context) { _ = b.unregisterAll(ctx, aors) })
	return b.writeAll(ctx, aors, expires, 0)
}

// writeAll writes every registration of aors as an SBC does; the i-th gets
// the binding of benchRecord(…, offset+i, …).
func (b *bench) writeAll(ctx context.Context, aors []benchAOR, expires time.Duration, offset int) error {
	const chunk = 1000
	for start := 0; start < len(aors); start += chunk {
		part := aors[start:min(start+chunk, len(aors))]
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range part {
				if _, err := store.RegisterAsSBC(ctx, p, a.user, a.realm, benchRecord(a.user, offset+start+i, ""), expires); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("register in redis: %w", err)
		}
	}
	return nil
}

// unregisterAll deletes registrations as an SBC does.
func (b *bench) unregisterAll(ctx context.Context, aors []benchAOR) error {
	const chunk = 1000
	for start := 0; start < len(aors); start += chunk {
		part := aors[start:min(start+chunk, len(aors))]
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, a := range part {
				_ = store.UnregisterAsSBC(ctx, p, a.user, a.realm)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// writePool writes the next n registrations of pool (round robin from
// next's position) as an SBC writes them, in one pipeline, each stamped
// with this clock (";ts=<unix ns>") just before it is sent; when that is
// at or after from (unix ns), each counts for its account (poolAcct) in
// perAcct.
func (b *bench) writePool(ctx context.Context, pool []benchAOR, poolAcct []int, perAcct []atomic.Int64, next *atomic.Int64, from int64, n int) error {
	first := int(next.Add(int64(n)) - int64(n))
	sent := time.Now().UnixNano()
	param := ";ts=" + strconv.FormatInt(sent, 10)
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			k := (first + i) % len(pool)
			if _, err := store.RegisterAsSBC(ctx, p, pool[k].user, pool[k].realm, benchRecord(pool[k].user, k, param), 10*time.Minute); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if sent >= from {
		for i := range n {
			perAcct[poolAcct[(first+i)%len(pool)]].Add(1)
		}
	}
	return nil
}

// fillHistory rewrites every registration of pool with a new binding until
// each account has had at least perAccount changes (usersPerAccount per
// round), keeping the server within one round of the writes, and waits until
// it has seen them: afterwards its per-account resume history is full, as on
// a server that has run for a while, and does not grow in what is measured
// next.
func (b *bench) fillHistory(ctx context.Context, srv *benchServer, pool []benchAOR, usersPerAccount, perAccount int, expires time.Duration) error {
	rounds := (perAccount + usersPerAccount - 1) / usersPerAccount
	b.logf("filling the server's resume history: %d rounds of %d writes (%d changes per account)", rounds, len(pool), rounds*usersPerAccount)
	start := time.Now()
	changes0, err := b.metric(ctx, srv, "presencehub_changes_total")
	if err != nil {
		return fmt.Errorf("fill the resume history: %w", err)
	}
	// seen waits until the server has emitted want changes since the
	// start, or has emitted none for 3 s (a key rewritten before the server
	// read it counts once).
	seen := func(want float64) error {
		last, lastAt := -1.0, time.Now()
		for {
			n, err := b.metric(ctx, srv, "presencehub_changes_total")
			if err != nil {
				return fmt.Errorf("fill the resume history: %w", err)
			}
			if n-changes0 >= want {
				return nil
			}
			if n != last {
				last, lastAt = n, time.Now()
			} else if time.Since(lastAt) > 3*time.Second {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for r := 1; r <= rounds; r++ {
		if err := b.writeAll(ctx, pool, expires, r*len(pool)); err != nil {
			return fmt.Errorf("fill the resume history: %w", err)
		}
		if err := seen(float64((r - 1) * len(pool))); err != nil {
			return err
		}
	}
	if err := seen(float64(rounds * len(pool))); err != nil {
		return err
	}
	n, _ := b.metric(ctx, srv, "presencehub_changes_total")
	b.logf("filled the resume history in %.1f s: %d writes, %.0f changes seen by the server; server RSS now %.0f MiB",
		time.Since(start).Seconds(), rounds*len(pool), n-changes0, float64(srv.rss())/(1<<20))
	return nil
}
