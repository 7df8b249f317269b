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
	const chunk = 1000
	for start := 0; start < len(aors); start += chunk {
		part := aors[start:min(start+chunk, len(aors))]
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range part {
				if _, err := store.RegisterAsSBC(ctx, p, a.user, a.realm, benchRecord(a.user, start+i, ""), expires); err != nil {
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
