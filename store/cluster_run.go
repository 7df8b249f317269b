package store

import (
	"context"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehub/presencehub/hub"
)

// ClusterMetrics are this replica's counters and gauges of the cluster.
type ClusterMetrics struct {
	Holder   atomic.Bool   // this replica holds the lease and sequences
	Terms    atomic.Uint64 // times this replica took the lease
	Appends  atomic.Uint64 // changes this replica appended to the log
	Position atomic.Uint64 // number of the last log entry applied to the hub
	Rebuilds atomic.Uint64 // snapshots loaded into the hub (the first included)
	Synced   atomic.Bool   // the hub holds a snapshot and the last read of the log succeeded
}

// Tuning of the replica loops.
const (
	clusterBlock      = time.Second // XREAD BLOCK; also how often the epoch is checked when idle
	clusterTapQueue   = 4096        // changes the sequencer's hub may queue before it waits for the log
	clusterBackoffMin = 100 * time.Millisecond
	clusterBackoffMax = 5 * time.Second
)

// errRebuild: the replica must load a snapshot again (it missed entries,
// or the log's epoch changed).
var errRebuild = errors.New("cluster: replica must rebuild")

// Follow applies the log to h until ctx is done, then returns nil. It loads
// a snapshot first (hub.RebuildWithHistory: every realm's seq and state and
// the log's recent changes for resume), then applies every entry with
// hub.Apply in order. When it finds it missed entries (trimmed past its
// position: a replica behind the log's retention), when the log's epoch
// changes or when Apply reports a gap, it loads a snapshot again; the hub
// then gives the subscribers of the realms that moved a fresh snapshot.
// Redis errors are retried with backoff.
func (c *Cluster) Follow(ctx context.Context, h *hub.Hub) error {
	delay := clusterBackoffMin
	for {
		err := c.follow(ctx, h)
		c.Metrics.Synced.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRebuild) {
			c.log.Warn("cluster: loading a snapshot of the log again", "reason", err)
			delay = clusterBackoffMin
			continue
		}
		c.log.Warn("cluster: reading the log failed; retrying", "err", err, "retry_in", delay)
		if !sleepCtx(ctx, delay) {
			return nil
		}
		delay = min(2*delay, clusterBackoffMax)
	}
}

func (c *Cluster) follow(ctx context.Context, h *hub.Hub) error {
	s, err := c.Snapshot(ctx)
	if err != nil {
		return err
	}
	h.RebuildWithHistory(s.Epoch, s.Seqs, s.States, s.Recent)
	c.Metrics.Rebuilds.Add(1)
	c.Metrics.Position.Store(s.N)
	c.Metrics.Synced.Store(true)
	pos, n := s.Last, s.N
	checked := time.Now()
	batch := make([]hub.Applied, 0, clusterReadCount)
	for {
		entries, last, err := c.Read(ctx, pos, clusterBlock)
		if err != nil {
			return err
		}
		c.Metrics.Synced.Store(true)
		if len(entries) > 0 {
			if entries[0].N != n+1 {
				return fmt.Errorf("%w: the next entry is number %d, the replica is at %d (trimmed past it, or a new log)", errRebuild, entries[0].N, n)
			}
			batch = batch[:0]
			for _, e := range entries {
				batch = append(batch, e.Applied)
			}
			if err := h.Apply(batch...); err != nil {
				return fmt.Errorf("%w: %v", errRebuild, err)
			}
			n = entries[len(entries)-1].N
			c.Metrics.Position.Store(n)
		}
		pos = last
		if len(entries) == 0 || time.Since(checked) > clusterBlock {
			checked = time.Now()
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			switch {
			case !st.Exists || st.Epoch != s.Epoch:
				return fmt.Errorf("%w: the log's epoch changed (or the log was lost)", errRebuild)
			case st.Missed(n):
				return fmt.Errorf("%w: the log was trimmed past this replica's position", errRebuild)
			}
		}
	}
}

// Sequence competes for the sequencer lease until ctx is done, then gives
// the lease up and returns nil. While this replica holds it, a private hub
// seeded with the log's state follows src (the SBC's Redis) and its own
// expiry clock, and every change it makes is appended to the log (fenced by
// the lease). On taking the lease the private hub re-reads every
// registration, so only the differences from the log's state are
// appended. Any failure to append or renew ends the term; the replica then
// competes again.
func (c *Cluster) Sequence(ctx context.Context, src hub.Source, hubOpts hub.Options) error {
	token := NewLeaseToken()
	every := c.opts.LeaseTTL / 4
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.ReleaseLease(rctx, token); err != nil {
			c.log.Warn("cluster: releasing the lease failed; another replica takes over when it expires", "err", err)
		}
	}()
	for {
		ok, err := c.AcquireLease(ctx, token)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.log.Warn("cluster: competing for the sequencer lease failed", "err", err)
		}
		if ok {
			c.Metrics.Terms.Add(1)
			c.log.Info("cluster: this replica took the sequencer lease", "writer", WriterTag(token))
			err := c.term(ctx, token, src, hubOpts)
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("cluster: this replica stopped sequencing", "reason", err)
		}
		// Jittered, so that replicas do not ask in step.
		if !sleepCtx(ctx, every/2+randv2.N(every/2+1)) {
			return nil
		}
	}
}

// term sequences while token holds the lease.
func (c *Cluster) term(ctx context.Context, token string, src hub.Source, hubOpts hub.Options) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.Metrics.Holder.Store(true)
	defer c.Metrics.Holder.Store(false)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.renew(ctx, cancel, token)
	}()

	epoch, err := c.Epoch(ctx)
	if err != nil {
		return err
	}
	states, err := c.States(ctx)
	if err != nil {
		return err
	}
	queue := make(chan LogChange, clusterTapQueue)
	hubOpts.Epoch = epoch
	hubOpts.Observe = nil
	hubOpts.History = 100 // nobody resumes from the private hub
	hubOpts.Tap = func(ch *hub.Change, st *hub.State) {
		select {
		case queue <- LogChange{Realm: ch.Realm, User: ch.User, Event: ch.Event, Time: ch.Time, State: st}:
		case <-ctx.Done():
		}
	}
	private := hub.New(hubOpts)
	if err := private.Seed(states); err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.appendLoop(ctx, cancel, token, epoch, queue)
	}()
	if err := private.Run(ctx, src); err != nil && ctx.Err() == nil {
		cancel(err)
	}
	<-ctx.Done()
	return context.Cause(ctx)
}

// renew renews token's lease every third of its TTL until ctx is done; it
// cancels the term when the lease is lost, or when renewals failed for
// longer than the lease lasts (it may have passed to another replica).
func (c *Cluster) renew(ctx context.Context, cancel context.CancelCauseFunc, token string) {
	ttl := c.opts.LeaseTTL
	renewed := time.Now()
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.RenewLease(ctx, token)
		switch {
		case err == nil:
			renewed = time.Now()
		case errors.Is(err, ErrDeposed):
			cancel(err)
			return
		case time.Since(renewed) >= ttl:
			cancel(fmt.Errorf("lease not renewed for %v: %w", ttl, err))
			return
		}
	}
}

// appendLoop appends what the private hub queues, in batches, until ctx is
// done; any error ends the term (the next term starts from the log's
// state, so a batch whose outcome is unknown is never appended twice).
func (c *Cluster) appendLoop(ctx context.Context, cancel context.CancelCauseFunc, token, epoch string, queue <-chan LogChange) {
	batch := make([]LogChange, 0, clusterMaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case ch := <-queue:
			batch = append(batch, ch)
		}
	more:
		for len(batch) < clusterMaxBatch {
			select {
			case ch := <-queue:
				batch = append(batch, ch)
			default:
				break more
			}
		}
		if _, err := c.Append(ctx, token, epoch, batch); err != nil {
			cancel(err)
			return
		}
		c.Metrics.Appends.Add(uint64(len(batch)))
	}
}

// sleepCtx waits d or until ctx is done; false when ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
