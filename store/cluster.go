package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub"
)

// The cluster's shared state in Redis (see README "Cluster"):
//
//	<p>epoch   string  the log's identity; replaced only when the log is lost
//	<p>log     stream  every change: r realm, s seq, u user, e event, t time (ms),
//	                   g entry number, w writer (WriterTag of the sequencer's token),
//	                   d the user's new state (JSON; "" when gone)
//	<p>seqs    hash    realm -> the realm's last seq
//	<p>state   hash    user@realm -> "<seq> <state JSON>" of every registered user
//	<p>n       string  entries appended so far (for lag)
//	<p>lease   string  the sequencer's token, with a TTL
//
// <p> is "presencehub:{<name>}:", one hash slot, so the scripts may touch
// every key on a Redis Cluster too. The append script updates the log, the
// seqs and the state in one step, so the state hash is always what the log
// says up to its last entry.

// ClusterOptions configure a Cluster.
type ClusterOptions struct {
	// Redis is where the cluster's keys live.
	Redis RedisOptions
	// Name separates clusters sharing one Redis (default "cluster").
	Name string
	// Retention bounds the log by age (default 24h; entries older are
	// trimmed at the next append).
	Retention time.Duration
	// MaxEntries bounds the log by length (default 1,000,000; trimmed
	// approximately, in whole radix-tree nodes).
	MaxEntries int64
	// LeaseTTL is how long the sequencer's lease lasts without a renewal
	// (default 2s).
	LeaseTTL time.Duration
	// Backfill bounds the log entries before the snapshot point that a
	// starting replica reads to fill its resume history (default 100,000).
	Backfill int
	// Secret seals the credentials stream tickets stand for (as
	// PRESENCEHUB_ENCRYPTION_KEY seals client passwords, and in its format:
	// hex or base64 of at least 32 bytes); tickets need it.
	Secret string
	Logger *slog.Logger
}

// Tuning of the cluster's reads.
const (
	clusterScanCount = 1000 // HSCAN COUNT and XRANGE COUNT
	clusterReadCount = 1000 // XREAD COUNT
	clusterMaxBatch  = 256  // changes per append script call
)

// ErrDeposed is returned by Append (and RenewLease) when the caller's token
// no longer holds the lease: another replica is the sequencer.
var ErrDeposed = errors.New("cluster: this replica no longer holds the sequencer lease")

// ErrLogChanged is returned by Append when the log's epoch is not the one
// the caller sequences for (the log was lost and started again).
var ErrLogChanged = errors.New("cluster: the log's epoch changed")

// Cluster is the replicas' coordination in Redis: the sequencer lease, the
// fenced append into the change log, and the reads a replica needs.
type Cluster struct {
	opts ClusterOptions
	rdb  *redis.Client
	addr string
	log  *slog.Logger

	kEpoch, kLog, kSeqs, kState, kN, kLease, kTicket string
	sealer                                           *sealer

	Metrics ClusterMetrics
}

// OpenCluster returns a Cluster on opts.Redis; it does not connect yet.
func OpenCluster(opts ClusterOptions) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "cluster"
	}
	if opts.Retention <= 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1_000_000
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 2 * time.Second
	}
	if opts.Backfill <= 0 {
		opts.Backfill = 100_000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rdb, addr, _, err := newRedisClient(opts.Redis)
	if err != nil {
		return nil, err
	}
	p := "presencehub:{" + opts.Name + "}:"
	c := &Cluster{
		opts: opts, rdb: rdb, addr: addr, log: opts.Logger,
		kEpoch: p + "epoch", kLog: p + "log", kSeqs: p + "seqs", kState: p + "state",
		kN: p + "n", kLease: p + "lease", kTicket: p + "ticket:",
	}
	if opts.Secret != "" {
		if c.sealer, err = newSealer(Keys{Current: opts.Secret}); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the connections.
func (c *Cluster) Close() error { return c.rdb.Close() }

// Options returns the options in force (defaults filled in).
func (c *Cluster) Options() ClusterOptions { return c.opts }

// epochScript returns the log's epoch, starting a new log when there is
// none or when the stream is gone while the epoch is there (the log was
// lost: evicted, deleted). A new log starts with an entry that carries only
// the epoch, so that the stream exists from the first moment on.
var epochScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e and redis.call('EXISTS', KEYS[2]) == 1 then return {e, 0} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'epoch', ARGV[1])
return {ARGV[1], 1}
`)

// Epoch returns the log's epoch, creating the log (with a new epoch) when
// it does not exist or was lost.
func (c *Cluster) Epoch(ctx context.Context) (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	res, err := epochScript.Run(ctx, c.rdb, []string{c.kEpoch, c.kLog, c.kSeqs, c.kState, c.kN}, hex.EncodeToString(b[:])).Slice()
	if err != nil {
		return "", c.fail("epoch", err)
	}
	epoch, _ := res[0].(string)
	if n, _ := res[1].(int64); n == 1 {
		c.log.Warn("cluster: started a new change log", "epoch", epoch)
	}
	return epoch, nil
}

func (c *Cluster) fail(op string, err error) error {
	return fmt.Errorf("cluster redis %s: %s: %w", c.addr, op, err)
}

// NewLeaseToken returns a random token for AcquireLease.
func NewLeaseToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WriterTag is what each log entry keeps of the token of the sequencer that
// appended it (field "w").
func WriterTag(token string) string { return token[:min(8, len(token))] }

// AcquireLease takes the sequencer lease for token if nobody holds it.
func (c *Cluster) AcquireLease(ctx context.Context, token string) (bool, error) {
	ok, err := c.rdb.SetNX(ctx, c.kLease, token, c.opts.LeaseTTL).Result()
	if err != nil {
		return false, c.fail("lease", err)
	}
	return ok, nil
}

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// RenewLease extends token's lease by the lease TTL; ErrDeposed when token
// does not hold it.
func (c *Cluster) RenewLease(ctx context.Context, token string) error {
	n, err := renewScript.Run(ctx, c.rdb, []string{c.kLease}, token, c.opts.LeaseTTL.Milliseconds()).Int()
	if err != nil {
		return c.fail("lease renewal", err)
	}
	if n != 1 {
		return ErrDeposed
	}
	return nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// ReleaseLease gives token's lease up (nothing when token does not hold it),
// so that another replica need not wait for its expiry.
func (c *Cluster) ReleaseLease(ctx context.Context, token string) error {
	if err := releaseScript.Run(ctx, c.rdb, []string{c.kLease}, token).Err(); err != nil {
		return c.fail("lease release", err)
	}
	return nil
}

// LeaseHolder returns the token holding the lease ("" for none).
func (c *Cluster) LeaseHolder(ctx context.Context) (string, error) {
	t, err := c.rdb.Get(ctx, c.kLease).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", c.fail("lease", err)
	}
	return t, nil
}

// appendScript is the fenced append: only the lease's holder, for the log's
// current epoch, may append; each change gets its realm's next seq, goes
// into the stream (trimmed by length and age) and into the state hash, all
// in one step.
//
// KEYS: lease, epoch, log, seqs, state, n.
// ARGV: token, epoch, max entries, retention ms, writer (the token's first
// 8 characters, kept in each entry to tell which sequencer appended it),
// then per change: realm, user, event, time ms, state ("" when the user is
// gone).
var appendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('DEPOSED the sequencer lease is held by another token') end
if redis.call('GET', KEYS[2]) ~= ARGV[2] or redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('EPOCH the log changed') end
local out = {}
for i = 6, #ARGV, 5 do
  local realm, user, event, t, rec = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local seq = redis.call('HINCRBY', KEYS[4], realm, 1)
  local g = redis.call('INCR', KEYS[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'r', realm, 's', seq, 'u', user, 'e', event, 't', t, 'g', g, 'w', ARGV[5], 'd', rec)
  local f = user .. '@' .. realm
  if rec == '' then redis.call('HDEL', KEYS[5], f) else redis.call('HSET', KEYS[5], f, seq .. ' ' .. rec) end
  out[#out+1] = seq
end
local ret = tonumber(ARGV[4])
if ret > 0 then
  local now = redis.call('TIME')
  local minid = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - ret
  if minid > 0 then redis.call('XTRIM', KEYS[3], 'MINID', '~', minid) end
end
return out
`)

// LogChange is one change a sequencer appends.
type LogChange struct {
	Realm, User, Event string
	Time               time.Time
	// State is the user's new state; nil when the user is gone.
	State *hub.State
}

// Append appends changes (at most a few hundred; see AppendAll) for the
// holder of token, for the log of epoch, and returns the seq each got. It
// returns ErrDeposed when token does not hold the lease and ErrLogChanged
// when the log's epoch is not epoch; nothing is appended then.
func (c *Cluster) Append(ctx context.Context, token, epoch string, changes []LogChange) ([]uint64, error) {
	args := make([]any, 0, 5+5*len(changes))
	args = append(args, token, epoch, c.opts.MaxEntries, c.opts.Retention.Milliseconds(), WriterTag(token))
	for _, ch := range changes {
		rec := ""
		if ch.State != nil {
			rec = encodeState(ch.State)
		}
		args = append(args, hub.Fold(ch.Realm), ch.User, ch.Event, ch.Time.UnixMilli(), rec)
	}
	res, err := appendScript.Run(ctx, c.rdb, []string{c.kLease, c.kEpoch, c.kLog, c.kSeqs, c.kState, c.kN}, args...).Int64Slice()
	if err != nil {
		switch msg := err.Error(); {
		case strings.HasPrefix(msg, "DEPOSED"):
			return nil, ErrDeposed
		case strings.HasPrefix(msg, "EPOCH"):
			return nil, ErrLogChanged
		}
		return nil, c.fail("append", err)
	}
	seqs := make([]uint64, len(res))
	for i, s := range res {
		seqs[i] = uint64(s)
	}
	return seqs, nil
}

// stateJSON is a hub.State as the log and the state hash keep it (user and
// realm are kept beside it). Times are epoch milliseconds.
type stateJSON struct {
	Contact           string `json:"c,omitempty"`
	Protocol          string `json:"p,omitempty"`
	Proxy             string `json:"x,omitempty"`
	SBCAddress        string `json:"sa,omitempty"`
	PrivateSBCAddress string `json:"psa,omitempty"`
	CallHook          string `json:"ch,omitempty"`
	CallStatusHook    string `json:"csh,omitempty"`
	App               int    `json:"a,omitempty"`
	Queue             int    `json:"q,omitempty"`
	User              int    `json:"u,omitempty"`
	ExpiryTime        int64  `json:"e,omitempty"`
	Deadline          int64  `json:"d,omitempty"`
	Derived           bool   `json:"dv,omitempty"`
	Since             int64  `json:"s,omitempty"`
	EventTime         int64  `json:"t,omitempty"`
	Event             string `json:"ev,omitempty"`
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func encodeState(st *hub.State) string {
	r := &st.Reg
	b, _ := json.Marshal(stateJSON{
		Contact: r.Contact, Protocol: r.Protocol, Proxy: r.Proxy, SBCAddress: r.SBCAddress,
		PrivateSBCAddress: r.PrivateSBCAddress, CallHook: r.CallHook, CallStatusHook: r.CallStatusHook,
		App: r.AllowDirectApp, Queue: r.AllowDirectQueue, User: r.AllowDirectUser,
		ExpiryTime: r.ExpiryTime, Deadline: msOf(r.Deadline), Derived: st.Derived,
		Since: msOf(st.Since), EventTime: msOf(st.EventTime), Event: st.Event,
	})
	return string(b)
}

func decodeState(user, realm, s string) (*hub.State, error) {
	var j stateJSON
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return nil, fmt.Errorf("state of %s@%s: %w", user, realm, err)
	}
	return &hub.State{
		Reg: hub.Registration{
			User: user, Realm: realm, Contact: j.Contact, Protocol: j.Protocol, Proxy: j.Proxy,
			SBCAddress: j.SBCAddress, PrivateSBCAddress: j.PrivateSBCAddress, CallHook: j.CallHook, CallStatusHook: j.CallStatusHook,
			AllowDirectApp: j.App, AllowDirectQueue: j.Queue, AllowDirectUser: j.User,
			ExpiryTime: j.ExpiryTime, Deadline: timeOf(j.Deadline),
		},
		Derived: j.Derived, Since: timeOf(j.Since), EventTime: timeOf(j.EventTime), Event: j.Event,
	}, nil
}

// LogEntry is one change read from the log.
type LogEntry struct {
	ID string // the stream entry's ID
	N  uint64 // the entry's number: entries appended to this log before it, plus one
	hub.Applied
}

// parseEntry decodes a stream entry; ok is false for an entry that carries
// no change (the epoch marker a new log starts with).
func parseEntry(m redis.XMessage) (e LogEntry, ok bool, err error) {
	realm, _ := m.Values["r"].(string)
	if realm == "" {
		return e, false, nil
	}
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e.ID = m.ID
	e.Realm, e.User, e.Event = realm, str("u"), str("e")
	if e.Seq, err = strconv.ParseUint(str("s"), 10, 64); err != nil {
		return e, false, fmt.Errorf("log entry %s: seq: %w", m.ID, err)
	}
	if e.N, err = strconv.ParseUint(str("g"), 10, 64); err != nil {
		return e, false, fmt.Errorf("log entry %s: number: %w", m.ID, err)
	}
	t, err := strconv.ParseInt(str("t"), 10, 64)
	if err != nil {
		return e, false, fmt.Errorf("log entry %s: time: %w", m.ID, err)
	}
	e.Time = time.UnixMilli(t)
	if d := str("d"); d != "" {
		if e.State, err = decodeState(e.User, realm, d); err != nil {
			return e, false, fmt.Errorf("log entry %s: %w", m.ID, err)
		}
	}
	return e, true, nil
}

func parseEntries(ms []redis.XMessage) ([]LogEntry, error) {
	out := make([]LogEntry, 0, len(ms))
	for _, m := range ms {
		e, ok, err := parseEntry(m)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Read returns the entries after the stream ID after (at most a thousand),
// waiting up to block for one to arrive; none when block passes. last is
// the ID of the last entry read (after when none), including entries that
// carry no change.
func (c *Cluster) Read(ctx context.Context, after string, block time.Duration) (entries []LogEntry, last string, err error) {
	res, err := c.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{c.kLog, after}, Count: clusterReadCount, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, after, nil
	}
	if err != nil {
		return nil, after, c.fail("read", err)
	}
	last = after
	for _, s := range res {
		if len(s.Messages) > 0 {
			last = s.Messages[len(s.Messages)-1].ID
		}
		entries, err = parseEntries(s.Messages)
		if err != nil {
			return nil, after, err
		}
	}
	return entries, last, nil
}

// LogStatus describes the log.
type LogStatus struct {
	Epoch  string
	Exists bool   // the stream exists
	Length int64  // entries in the stream now
	LastID string // the last entry's ID
	// FirstN is the number of the oldest change entry still in the stream
	// (1 while the log's first marker is there, Appended+1 when the stream
	// is empty: every entry was trimmed).
	FirstN   uint64
	Appended uint64 // change entries appended to this log (the newest one's N)
}

// Missed reports whether a reader that has read the change entries up to
// number n has missed some: they were trimmed away before it read them.
func (st LogStatus) Missed(n uint64) bool {
	return n < st.Appended && st.FirstN > n+1
}

// Status reads the log's state: one transaction of GET, XINFO STREAM, GET.
func (c *Cluster) Status(ctx context.Context) (LogStatus, error) {
	var st LogStatus
	var epoch, n *redis.StringCmd
	var info *redis.XInfoStreamCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, c.kEpoch)
		info = p.XInfoStream(ctx, c.kLog)
		n = p.Get(ctx, c.kN)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !isNoSuchKey(err) {
		return st, c.fail("status", err)
	}
	st.Epoch = epoch.Val()
	if in, err := info.Result(); err == nil {
		st.Exists = true
		st.Length, st.LastID = in.Length, in.LastGeneratedID
	}
	st.Appended, _ = strconv.ParseUint(n.Val(), 10, 64)
	st.FirstN = st.Appended + 1
	if in, err := info.Result(); err == nil && in.Length > 0 {
		st.FirstN = 1 // the marker a log starts with
		if e, ok, _ := parseEntry(in.FirstEntry); ok {
			st.FirstN = e.N
		}
	}
	return st, nil
}

func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
}

// CompareIDs compares two stream IDs ("ms-seq") numerically.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

func splitID(id string) (ms, seq uint64) {
	a, b, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(a, 10, 64)
	seq, _ = strconv.ParseUint(b, 10, 64)
	return ms, seq
}

// States reads every registered user's state from the state hash, with
// HSCAN: what a new sequencer seeds its hub with. The log must be quiet
// (no sequencer appending) for the result to be one moment's state.
func (c *Cluster) States(ctx context.Context) ([]hub.State, error) {
	m, err := c.scanState(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]hub.State, 0, len(m))
	for _, v := range m {
		out = append(out, *v.state)
	}
	return out, nil
}

type seqState struct {
	seq   uint64
	state *hub.State
}

// scanState reads the state hash with HSCAN (COUNT 1000 a call).
func (c *Cluster) scanState(ctx context.Context) (map[string]seqState, error) {
	out := make(map[string]seqState)
	var cursor uint64
	for {
		kv, next, err := c.rdb.HScan(ctx, c.kState, cursor, "", clusterScanCount).Result()
		if err != nil {
			return nil, c.fail("state scan", err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			user, realm, ok := hub.SplitAOR(kv[i])
			seqStr, rec, ok2 := strings.Cut(kv[i+1], " ")
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if !ok || !ok2 || err != nil {
				return nil, fmt.Errorf("cluster state %q: malformed", kv[i])
			}
			st, err := decodeState(user, realm, rec)
			if err != nil {
				return nil, err
			}
			out[kv[i]] = seqState{seq: seq, state: st}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// Snapshot is a replica's consistent start: the state of every user and
// every realm's seq as of the log entry Last, and the changes that led
// there.
type Snapshot struct {
	Epoch  string
	Last   string // the stream ID the state reflects; read on after it
	N      uint64 // the number of the last change entry at or before Last
	Seqs   map[string]uint64
	States []hub.State
	// Recent are the last changes up to Last (oldest first, at most
	// Backfill before the scan's start), for the resume history.
	Recent []hub.Applied
}

// errSnapshotMoved: the log was trimmed past the snapshot's position or its
// epoch changed while the snapshot was read; it is read again.
var errSnapshotMoved = errors.New("cluster: the log moved while the snapshot was read")

// Snapshot reads a consistent start for a replica without blocking Redis
// on any big command: in one transaction the stream's last ID L and every
// realm's seq; then the state hash with HSCAN (which may already reflect
// changes after L); then the log after L, applying each change unless the
// scanned state of its user already reflects it (its seq is not above the
// user's), so that the result is exactly the state at the log's last entry
// read. It retries when the log is trimmed past L meanwhile.
func (c *Cluster) Snapshot(ctx context.Context) (Snapshot, error) {
	for attempt := 0; ; attempt++ {
		s, err := c.snapshot(ctx)
		if !errors.Is(err, errSnapshotMoved) || attempt >= 5 {
			return s, err
		}
		c.log.Warn("cluster: the log moved while a snapshot was read; reading again", "attempt", attempt+1)
	}
}

func (c *Cluster) snapshot(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	epoch, err := c.Epoch(ctx)
	if err != nil {
		return s, err
	}
	var last *redis.XMessageSliceCmd
	var seqs *redis.MapStringStringCmd
	var ep *redis.StringCmd
	if _, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ep = p.Get(ctx, c.kEpoch)
		last = p.XRevRangeN(ctx, c.kLog, "+", "-", 1)
		seqs = p.HGetAll(ctx, c.kSeqs)
		return nil
	}); err != nil {
		return s, c.fail("snapshot", err)
	}
	if ep.Val() != epoch || len(last.Val()) == 0 {
		return s, errSnapshotMoved
	}
	s.Epoch, s.Last = epoch, last.Val()[0].ID
	s.Seqs = make(map[string]uint64, len(seqs.Val()))
	for r, v := range seqs.Val() {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("cluster seq of %s: %q", r, v)
		}
		s.Seqs[r] = n
	}
	if e, ok, _ := parseEntry(last.Val()[0]); ok {
		s.N = e.N
	} else if st, err := c.Status(ctx); err == nil && st.LastID == s.Last {
		s.N = st.Appended // the last entry is the epoch marker
	}
	nAtL := s.N
	state, err := c.scanState(ctx)
	if err != nil {
		return s, err
	}
	// The log from L on: each change makes its user's state unless the
	// scan already saw that change or a later one.
	scanned := s.Last
	var after []hub.Applied
	for {
		ms, err := c.rdb.XRangeN(ctx, c.kLog, "("+scanned, "+", clusterScanCount).Result()
		if err != nil {
			return s, c.fail("snapshot replay", err)
		}
		if len(ms) == 0 {
			break
		}
		scanned = ms[len(ms)-1].ID
		entries, err := parseEntries(ms)
		if err != nil {
			return s, err
		}
		for _, e := range entries {
			after = append(after, e.Applied)
			s.N = e.N
			if e.Seq > s.Seqs[e.Realm] {
				s.Seqs[e.Realm] = e.Seq
			}
			key := e.User + "@" + e.Realm
			if cur, ok := state[key]; ok && cur.seq >= e.Seq {
				continue
			}
			if e.State == nil {
				delete(state, key)
			} else {
				state[key] = seqState{seq: e.Seq, state: e.State}
			}
		}
	}
	// The scan may have seen a user's change after the last entry replayed
	// (appended after the replay's last read): then read on.
	st, err := c.Status(ctx)
	if err != nil {
		return s, err
	}
	if st.Epoch != epoch || st.Missed(nAtL) {
		return s, errSnapshotMoved
	}
	for _, v := range state {
		if v.seq > s.Seqs[v.state.Reg.Realm] {
			return s, errSnapshotMoved
		}
	}
	s.Last = scanned
	for _, v := range state {
		s.States = append(s.States, *v.state)
	}
	before, err := c.backfill(ctx, s.Last)
	if err != nil {
		return s, err
	}
	s.Recent = append(before, after...)
	return s, nil
}

// backfill reads up to Backfill change entries at or before id, newest
// first, and returns them oldest first.
func (c *Cluster) backfill(ctx context.Context, id string) ([]hub.Applied, error) {
	var rev []hub.Applied
	end := id
	for len(rev) < c.opts.Backfill {
		n := min(int64(clusterScanCount), int64(c.opts.Backfill-len(rev)))
		ms, err := c.rdb.XRevRangeN(ctx, c.kLog, end, "-", n).Result()
		if err != nil {
			return nil, c.fail("backfill", err)
		}
		if len(ms) == 0 {
			break
		}
		end = "(" + ms[len(ms)-1].ID
		entries, err := parseEntries(ms)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			rev = append(rev, e.Applied)
		}
		if int64(len(ms)) < n {
			break
		}
	}
	out := make([]hub.Applied, len(rev))
	for i, a := range rev {
		out[len(rev)-1-i] = a
	}
	return out, nil
}
