package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
)

// Tuning of a full load. Every command stays small, so that none holds up
// the SBC that shares this Redis: a ZRANGE of redisIndexChunk members, an
// MGET of redisMGetBatch keys and a SCAN with COUNT redisScanCount each take
// Redis well under a millisecond (bench resync reports the worst).
const (
	redisIndexChunk    = 1000                   // active-user members per ZRANGE
	redisIndexPipeline = 4                      // ZRANGEs sent in one round trip
	redisMGetBatch     = 250                    // keys per MGET
	redisMGetPipeline  = 2                      // MGETs per job, sent in one round trip
	redisSampleEvery   = 16                     // one key in this many also gets a PTTL
	redisSkewTolerance = 500 * time.Millisecond // largest disagreement among the samples
	redisSeenHintMax   = 1 << 22                // most keys a load's set of seen keys is sized for up front
)

// The full load (resync) reads the index jambonz keeps, the sorted set
// active-user (member "user:<user>@<realm>", score its expiryTime), in
// chunks, and the keys it names with big MGETs, parsing each batch while
// the next is being read. The score gives the deadline, so most keys need no
// PTTL of their own:
//
//   - the score is the SBC's expiryTime, on the SBC's clock. One key in
//     redisSampleEvery also gets a PTTL; the median difference between
//     "now + PTTL" and the score is the skew between the SBC's clock and
//     ours, and is added to every score. When the samples disagree by more
//     than redisSkewTolerance (SBCs whose clocks differ), every key gets
//     its own PTTL.
//   - a key whose value's expiryTime is not its score (written but not yet
//     indexed, or indexed by a writer that sets no expiryTime), and a key
//     MGET finds absent (lapsed, deleted, or not a string), is read again
//     with GET and PTTL, as a notified key is.
//   - at the same time a SCAN lists every user:* key, so a key missing from
//     the index (an older registrar, a stale index) is read with GET and
//     PTTL too: the index only makes the load fast, it never decides what
//     is there.

// indexedRegs are registrations read through the index, with their keys
// and scores (parallel slices; a Deadline is set once the skew is known).
type indexedRegs struct {
	regs   []hub.Registration
	keys   []string
	scores []int64 // epoch ms
}

// loadBufs recycles the indexedRegs of MGET batches: the consumer copies
// each batch into the load's one slice and hands the buffer back, so the
// batches' registrations are not a second full copy of the snapshot in
// fresh memory (it was ~22 MB per 100,000 registrations, zeroed, copied
// and scanned by the GC).
var loadBufs = sync.Pool{New: func() any { return new(indexedRegs) }}

// loadJob is a batch of index members for one MGET.
type loadJob struct {
	keys   []string
	scores []int64
}

// loadResult is what one MGET batch gave: parsed registrations, keys to read
// again one by one, malformed values (key → reason), PTTL samples.
type loadResult struct {
	idx       *indexedRegs // from loadBufs
	retry     []string
	malformed [][2]string
	valid     []string
	skews     []time.Duration
	err       error
}

// loadAll reads every registration. seen holds every key looked at.
func (s *RedisSource) loadAll(ctx context.Context) (regs []hub.Registration, seen map[string]struct{}, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type scanned struct {
		keys []string
		err  error
	}
	scanDone := make(chan scanned, 1)
	go func() {
		keys, err := s.scanKeys(ctx)
		scanDone <- scanned{keys, err}
	}()

	ix, seen, retry, skews, err := s.loadIndexed(ctx)
	if err != nil {
		cancel()
		<-scanDone
		return nil, nil, err
	}
	sc := <-scanDone
	if sc.err != nil {
		return nil, nil, sc.err
	}
	for _, k := range sc.keys {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			retry = append(retry, k)
		}
	}

	// Deadlines of the indexed keys: their score plus the clock skew the
	// samples agree on, or each key's own PTTL.
	skew, agree := medianSkew(skews)
	if !agree {
		s.log.Info("redis load: the SBCs' expiryTime disagree with the keys' TTL; reading every key's PTTL",
			"samples", len(skews), "tolerance", redisSkewTolerance)
		if err := s.readTTLs(ctx, ix); err != nil {
			return nil, nil, err
		}
	}
	// In place: the registrations without a deadline (their key lapsed
	// while the PTTLs were read) are dropped.
	regs = ix.regs[:0]
	for i := range ix.regs {
		if agree {
			ix.regs[i].Deadline = time.UnixMilli(ix.scores[i]).Add(skew)
		}
		if !ix.regs[i].Deadline.IsZero() {
			regs = append(regs, ix.regs[i])
		}
	}
	clear(ix.regs[len(regs):]) // no stale copies of dropped ones
	ix = nil

	// Everything the index could not vouch for, key by key.
	for len(retry) > 0 {
		n := min(len(retry), redisReadBatch)
		states, err := s.readKeys(ctx, retry[:n])
		if err != nil {
			return nil, nil, err
		}
		for _, st := range states {
			if st.reg != nil {
				regs = append(regs, *st.reg)
			}
		}
		retry = retry[n:]
	}
	return regs, seen, nil
}

// scanKeys lists every user:* key.
func (s *RedisSource) scanKeys(ctx context.Context) ([]string, error) {
	var out []string
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, RedisUserPrefix+"*", redisScanCount).Result()
		if err != nil {
			return nil, fmt.Errorf("redis %s: scan: %w", s.addr, err)
		}
		out = append(out, keys...) // SCAN may repeat a key: the caller de-duplicates
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// loadIndexed reads the members of active-user whose score lies ahead, and
// their values, with as many MGET workers as there are CPUs (at least 2, so
// that one parses while another waits for Redis).
func (s *RedisSource) loadIndexed(ctx context.Context) (ix *indexedRegs, seen map[string]struct{}, retry []string, skews []time.Duration, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan loadJob, 4)
	results := make(chan loadResult, 4)
	workers := max(2, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := s.readIndexed(ctx, j)
				select {
				case results <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// Sized for the index up front: grown by insertion, the map of a
	// 100,000-key load was rehashed over and over (5% of the CPU of a
	// load in a profile). A failed ZCARD (say, active-user is no sorted set) only loses
	// the hint; the ZRANGE reports it.
	hint, _ := s.rdb.ZCard(ctx, RedisActiveUserSet).Result()
	hint = min(max(hint, 0), redisSeenHintMax)
	seen = make(map[string]struct{}, hint)
	// The batches are copied into one slice sized for the index (members
	// that lapsed included), not kept as parts and concatenated later: one
	// copy of the snapshot instead of two.
	ix = &indexedRegs{
		regs:   make([]hub.Registration, 0, hint),
		keys:   make([]string, 0, hint),
		scores: make([]int64, 0, hint),
	}
	prodErr := make(chan error, 1)
	go func() {
		prodErr <- s.produceIndexed(ctx, jobs, seen)
		close(jobs)
		wg.Wait()
		close(results)
	}()
	for r := range results {
		if r.err != nil {
			cancel(r.err)
			continue
		}
		if r.idx != nil {
			ix.regs = append(ix.regs, r.idx.regs...)
			ix.keys = append(ix.keys, r.idx.keys...)
			ix.scores = append(ix.scores, r.idx.scores...)
			putLoadBuf(r.idx)
		}
		retry = append(retry, r.retry...)
		skews = append(skews, r.skews...)
		for _, m := range r.malformed {
			s.malformed(m[0], m[1])
		}
		for _, k := range r.valid {
			s.notMalformed(k)
		}
	}
	if err := <-prodErr; err != nil {
		return nil, nil, nil, nil, err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return nil, nil, nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, nil, err
	}
	return ix, seen, retry, skews, nil
}

// putLoadBuf hands b back to loadBufs, emptied (no strings kept alive).
func putLoadBuf(b *indexedRegs) {
	clear(b.regs)
	clear(b.keys)
	b.regs, b.keys, b.scores = b.regs[:0], b.keys[:0], b.scores[:0]
	loadBufs.Put(b)
}

// produceIndexed pages through active-user by rank and hands its members
// out in MGET batches. Paging by rank while the SBC writes may skip or
// repeat a member; repeats are dropped here, and the SCAN that runs
// alongside finds what was skipped. seen is written here only, and read
// once the jobs are done.
func (s *RedisSource) produceIndexed(ctx context.Context, jobs chan<- loadJob, seen map[string]struct{}) error {
	now := time.Now().UnixMilli()
	var j loadJob
	send := func() error {
		if len(j.keys) == 0 {
			return nil
		}
		select {
		case jobs <- j:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		j = loadJob{}
		return nil
	}
	var zs []redis.Z
	cmds := make([]*redis.ZSliceCmd, redisIndexPipeline)
	for start := int64(0); ; start += redisIndexChunk * redisIndexPipeline {
		// Several small ZRANGEs per round trip: none holds Redis up for
		// long, and together they move as much as one big one.
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range cmds {
				from := start + int64(i)*redisIndexChunk
				cmds[i] = p.ZRangeWithScores(ctx, RedisActiveUserSet, from, from+redisIndexChunk-1)
			}
			return nil
		})
		zs = zs[:0]
		for _, c := range cmds {
			part, err := c.Result()
			if err != nil {
				if redis.HasErrorPrefix(err, "WRONGTYPE") {
					s.log.Warn("redis load: active-user is not a sorted set; reading every key one by one", "addr", s.addr)
					return nil
				}
				return fmt.Errorf("redis %s: zrange %s: %w", s.addr, RedisActiveUserSet, err)
			}
			zs = append(zs, part...)
		}
		for _, z := range zs {
			key, ok := z.Member.(string)
			if !ok || !strings.HasPrefix(key, RedisUserPrefix) || int64(z.Score) <= now {
				// Lapsed by the SBC's clock (the SBC prunes these): if
				// the key is still there, the SCAN finds it.
				continue
			}
			if _, dup := seen[key]; dup {
				continue
			}
			seen[key] = struct{}{}
			j.keys = append(j.keys, key)
			j.scores = append(j.scores, int64(z.Score))
			if len(j.keys) == redisMGetBatch*redisMGetPipeline {
				if err := send(); err != nil {
					return err
				}
			}
		}
		if len(zs) < redisIndexChunk*redisIndexPipeline {
			return send()
		}
	}
}

// readIndexed reads one batch with an MGET (and the PTTL of every
// redisSampleEvery-th key) and parses it. It touches no state of s but the
// counters, so several run at once.
func (s *RedisSource) readIndexed(ctx context.Context, j loadJob) loadResult {
	mgets := make([]*redis.SliceCmd, 0, redisMGetPipeline)
	ttls := make([]*redis.DurationCmd, 0, len(j.keys)/redisSampleEvery+1)
	now := time.Now() // before the round trip: a sampled deadline errs early
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for from := 0; from < len(j.keys); from += redisMGetBatch {
			mgets = append(mgets, p.MGet(ctx, j.keys[from:min(len(j.keys), from+redisMGetBatch)]...))
		}
		for i := 0; i < len(j.keys); i += redisSampleEvery {
			ttls = append(ttls, p.PTTL(ctx, j.keys[i]))
		}
		return nil
	})
	s.m.reads.Add(uint64(len(j.keys)))
	vals := make([]any, 0, len(j.keys))
	for _, mget := range mgets {
		v, err := mget.Result()
		if err != nil {
			return loadResult{err: fmt.Errorf("redis %s: mget: %w", s.addr, err)}
		}
		vals = append(vals, v...)
	}
	if len(vals) != len(j.keys) {
		return loadResult{err: fmt.Errorf("redis %s: mget of %d keys gave %d values", s.addr, len(j.keys), len(vals))}
	}
	r := loadResult{idx: loadBufs.Get().(*indexedRegs)}
	b := r.idx
	b.regs = slices.Grow(b.regs, len(j.keys))
	b.keys = slices.Grow(b.keys, len(j.keys))
	b.scores = slices.Grow(b.scores, len(j.keys))
	for i, key := range j.keys {
		v, ok := vals[i].(string)
		if !ok { // absent, or not a string: GET tells which
			r.retry = append(r.retry, key)
			continue
		}
		// The value is only read, and every string kept from it is a copy:
		// no need to copy all of it first.
		reg, err := parseRecord(key, unsafe.Slice(unsafe.StringData(v), len(v)))
		if err != nil {
			r.malformed = append(r.malformed, [2]string{key, err.Error()})
			continue
		}
		if reg.ExpiryTime != j.scores[i] {
			// Not the write the index describes (yet): read its own TTL.
			r.retry = append(r.retry, key)
			continue
		}
		r.valid = append(r.valid, key)
		if i%redisSampleEvery == 0 {
			ttl, err := ttls[i/redisSampleEvery].Result()
			if err != nil && !isReplyError(err) {
				return loadResult{err: fmt.Errorf("redis %s: pttl: %w", s.addr, err)}
			}
			if err != nil || ttl <= 0 {
				// Lapsed meanwhile, or no TTL at all: the exact path
				// decides (and warns).
				r.retry = append(r.retry, key)
				r.valid = r.valid[:len(r.valid)-1]
				continue
			}
			r.skews = append(r.skews, now.Add(ttl).Sub(time.UnixMilli(j.scores[i])))
		}
		b.regs = append(b.regs, reg)
		b.keys = append(b.keys, key)
		b.scores = append(b.scores, j.scores[i])
	}
	return r
}

// medianSkew returns the median of the samples and whether all of them lie
// within redisSkewTolerance of it. No samples: no skew, agreed.
func medianSkew(samples []time.Duration) (time.Duration, bool) {
	if len(samples) == 0 {
		return 0, true
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	m := s[len(s)/2]
	return m, m-s[0] <= redisSkewTolerance && s[len(s)-1]-m <= redisSkewTolerance
}

// readTTLs sets every registration's Deadline from its key's own PTTL; a
// key that lapsed or lost its TTL meanwhile keeps a zero Deadline (and is
// dropped by the caller; a notification or the next load tells the rest).
func (s *RedisSource) readTTLs(ctx context.Context, ix *indexedRegs) error {
	for start := 0; start < len(ix.regs); start += redisReadBatch {
		end := min(len(ix.regs), start+redisReadBatch)
		ttls := make([]*redis.DurationCmd, end-start)
		now := time.Now()
		_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range ttls {
				ttls[i] = p.PTTL(ctx, ix.keys[start+i])
			}
			return nil
		})
		for i := range ttls {
			ttl, err := ttls[i].Result()
			if err != nil && !isReplyError(err) {
				return fmt.Errorf("redis %s: pttl: %w", s.addr, err)
			}
			if err == nil && ttl > 0 {
				ix.regs[start+i].Deadline = now.Add(ttl)
			}
		}
	}
	return nil
}
