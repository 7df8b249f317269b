package sbcsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
)

// RunOptions tune Run.
type RunOptions struct {
	// Report is how often a one-line summary goes to Log (0: never).
	Report time.Duration
	// Log receives the periodic summaries (nil: none).
	Log io.Writer
}

// maxCatchUp bounds how far behind the schedule Run may fall (after a slow
// Redis answer, say) before it skips ahead instead of writing a burst.
const maxCatchUp = time.Second

// Run paces a Sim of cfg at cfg.Rate changes per second and writes every
// action into rdb as a jambonz SBC does, until ctx is done; then it returns
// the statistics and a nil error. Bursts (cfg.Burst) are written at once, as
// fast as Redis takes them, on top of the rate. A failed write stops the run
// with its error.
func Run(ctx context.Context, rdb redis.Cmdable, cfg Config, opts RunOptions) (Stats, error) {
	if err := cfg.Validate(); err != nil {
		return Stats{}, err
	}
	sim := New(cfg)
	start := time.Now()
	var done int64 // ticks of the schedule used so far
	var nextBurst, nextReport time.Time
	if cfg.Burst > 0 {
		nextBurst = start
	}
	if opts.Report > 0 && opts.Log != nil {
		nextReport = start.Add(opts.Report)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last Stats
	lastAt := start
	for {
		select {
		case <-ctx.Done():
			return sim.Stats(), nil
		case <-timer.C:
		}
		now := time.Now()
		if !nextBurst.IsZero() && !now.Before(nextBurst) {
			if err := write(ctx, rdb, sim.Burst(now, cfg.Burst)); err != nil {
				return stopped(ctx, sim, err)
			}
			nextBurst = time.Time{}
			if cfg.BurstEvery > 0 {
				nextBurst = now.Add(cfg.BurstEvery)
			}
		}
		due := Due(now.Sub(start), cfg.Rate)
		if behind := int64(maxCatchUp.Seconds() * cfg.Rate); due-done > behind+1 {
			done = due - behind
		}
		var batch []Action
		for ; done < due; done++ {
			if a, ok := sim.Step(now); ok {
				batch = append(batch, a)
			}
		}
		if err := write(ctx, rdb, batch); err != nil {
			return stopped(ctx, sim, err)
		}
		if !nextReport.IsZero() && !now.Before(nextReport) {
			st := sim.Stats()
			fmt.Fprintln(opts.Log, Summary(st, last, now.Sub(start), now.Sub(lastAt)))
			last, lastAt = st, now
			nextReport = nextReport.Add(opts.Report)
		}
		wake := NextTick(start, done, cfg.Rate)
		for _, t := range []time.Time{nextBurst, nextReport} {
			if !t.IsZero() && t.Before(wake) {
				wake = t
			}
		}
		timer.Reset(max(time.Until(wake), 0))
	}
}

// stopped turns an error caused by the end of ctx into a normal stop.
func stopped(ctx context.Context, sim *Sim, err error) (Stats, error) {
	if ctx.Err() != nil {
		return sim.Stats(), nil
	}
	return sim.Stats(), err
}

// Due is the number of schedule ticks due after elapsed at rate per second.
func Due(elapsed time.Duration, rate float64) int64 {
	if elapsed <= 0 {
		return 0
	}
	return int64(elapsed.Seconds() * rate)
}

// NextTick is when tick number done+1 of the schedule falls due.
func NextTick(start time.Time, done int64, rate float64) time.Time {
	return start.Add(time.Duration(float64(done+1) / rate * float64(time.Second)))
}

// writeTimeout bounds one write (or pipeline) to Redis.
const writeTimeout = 5 * time.Second

// write applies actions to Redis; several go in pipelines of up to 256, in
// order. The end of ctx does not cut a write in half (an SETEX without its
// ZADD): a started write or pipeline runs to completion (within
// writeTimeout), and the end of ctx only stops a long burst between
// pipelines.
func write(ctx context.Context, rdb redis.Cmdable, actions []Action) error {
	const chunk = 256
	for len(actions) > 0 && ctx.Err() == nil {
		n := min(chunk, len(actions))
		if err := writeChunk(ctx, rdb, actions[:n]); err != nil {
			return err
		}
		actions = actions[n:]
	}
	return nil
}

func writeChunk(ctx context.Context, rdb redis.Cmdable, actions []Action) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if len(actions) == 1 {
		return apply(ctx, rdb, actions[0])
	}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, a := range actions {
			if err := apply(ctx, p, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// apply writes one action as the SBC would.
func apply(ctx context.Context, rdb redis.Cmdable, a Action) error {
	switch a.Kind {
	case Register, Refresh, Move:
		_, err := store.RegisterAsSBC(ctx, rdb, a.User, a.Realm, a.Record, a.Expires)
		return err
	case Unregister:
		return store.UnregisterAsSBC(ctx, rdb, a.User, a.Realm)
	}
	return errors.New("sbcsim: nothing to write for " + a.Kind.String())
}

// Summary is the one-line report of a run: the totals after elapsed, with
// the rate of writes since the previous report (prev, since).
func Summary(st, prev Stats, elapsed, since time.Duration) string {
	rate := 0.0
	if since > 0 {
		rate = float64(st.Writes()-prev.Writes()) / since.Seconds()
	}
	return fmt.Sprintf("simulate: %s: %d changes (%.1f/s): registered %d, refreshed %d, moved %d, unregistered %d, left to lapse %d (lapsed %d); registered now %d/%d, lapsing %d%s",
		roundElapsed(elapsed), st.Writes(), rate, st.Registered, st.Refreshed, st.Moved, st.Unregistered,
		st.LeftToLapse, st.Lapsed, st.Online, st.Devices, st.Lapsing, lateNote(st))
}

// Final is the summary of a whole run of elapsed.
func Final(st Stats, elapsed time.Duration) string {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(st.Writes()) / elapsed.Seconds()
	}
	return fmt.Sprintf("simulate: done after %s: %d changes (%.1f/s): registered %d, refreshed %d, moved %d, unregistered %d, left to lapse %d (lapsed %d)%s; %d registrations stay in Redis until they expire",
		roundElapsed(elapsed), st.Writes(), rate, st.Registered, st.Refreshed, st.Moved, st.Unregistered,
		st.LeftToLapse, st.Lapsed, lateNote(st), st.Online+st.Lapsing)
}

func roundElapsed(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func lateNote(st Stats) string {
	if st.Late == 0 {
		return ""
	}
	return fmt.Sprintf("; %d refreshes came too late (raise --rate or the expires)", st.Late)
}
