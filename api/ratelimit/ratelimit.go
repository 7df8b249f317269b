// Package ratelimit holds token buckets per key (an API key, a client IP)
// and the client-IP rule for requests that pass through trusted proxies.
// The buckets are golang.org/x/time/rate limiters; this package adds the
// bounded map of them and the 429 answer's headers (Retry-After and the
// RateLimit-* fields that jambonz's express-rate-limit sends).
//
// A Limiter is safe for concurrent use. Its memory is bounded: past its key
// cap it forgets idle buckets (full ones: forgetting them changes nothing),
// then, if that is not enough, half of the rest.
package ratelimit

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Spec is a bucket's refill rate (tokens per second) and its burst.
// A zero Rate disables the limit.
type Spec struct {
	Rate  float64
	Burst int
}

// ParseSpec reads "RATE:BURST" (e.g. "20:40"), "RATE" (burst = rate,
// at least 1) or "0" (no limit).
func ParseSpec(s string) (Spec, error) {
	r, b, hasBurst := strings.Cut(strings.TrimSpace(s), ":")
	rt, err := strconv.ParseFloat(r, 64)
	if err != nil || rt < 0 || math.IsInf(rt, 0) || math.IsNaN(rt) {
		return Spec{}, fmt.Errorf("%q: want RATE:BURST, e.g. 20:40 (per second; 0 disables)", s)
	}
	sp := Spec{Rate: rt, Burst: int(math.Max(1, math.Ceil(rt)))}
	if hasBurst {
		n, err := strconv.Atoi(b)
		if err != nil || n < 1 {
			return Spec{}, fmt.Errorf("%q: the burst after ':' must be a whole number ≥ 1", s)
		}
		sp.Burst = n
	}
	return sp, nil
}

// String is the RATE:BURST form.
func (s Spec) String() string {
	return strconv.FormatFloat(s.Rate, 'g', -1, 64) + ":" + strconv.Itoa(s.Burst)
}

// Limiter is a set of token buckets, one per key.
type Limiter struct {
	spec    Spec
	maxKeys int
	now     func() time.Time

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// New returns a limiter whose buckets follow spec and which tracks at most
// maxKeys keys (default 100,000). A nil *Limiter, or one whose spec has a
// zero rate, allows everything.
func New(spec Spec, maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	return &Limiter{spec: spec, maxKeys: maxKeys, now: time.Now, m: make(map[string]*rate.Limiter)}
}

// Decision is the answer for one request.
type Decision struct {
	OK         bool
	Limit      int           // the burst: requests that may come at once
	Remaining  int           // whole tokens left after this request
	RetryAfter time.Duration // until the next token, when !OK (and 0 when OK)
	Disabled   bool          // no limit applies: write no headers
}

// Allow takes a token from key's bucket.
func (l *Limiter) Allow(key string) Decision { return l.take(key, true) }

// Peek says whether key's bucket holds a token, without taking it: a gate
// in front of work that is charged only when it fails (authentication).
func (l *Limiter) Peek(key string) Decision { return l.take(key, false) }

func (l *Limiter) take(key string, consume bool) Decision {
	if l == nil || l.spec.Rate <= 0 {
		return Decision{OK: true, Disabled: true}
	}
	now := l.now()
	l.mu.Lock()
	b, ok := l.m[key]
	if !ok {
		if !consume {
			l.mu.Unlock()
			return Decision{OK: true, Limit: l.spec.Burst, Remaining: l.spec.Burst}
		}
		if len(l.m) >= l.maxKeys {
			l.evict(now)
		}
		b = rate.NewLimiter(rate.Limit(l.spec.Rate), l.spec.Burst)
		l.m[key] = b
	}
	var allowed bool
	if consume {
		allowed = b.AllowN(now, 1)
	} else {
		allowed = b.TokensAt(now) >= 1
	}
	tokens := b.TokensAt(now)
	l.mu.Unlock()
	d := Decision{OK: allowed, Limit: l.spec.Burst, Remaining: max(0, int(math.Floor(tokens)))}
	if !allowed {
		d.RetryAfter = time.Duration((1 - tokens) / l.spec.Rate * float64(time.Second))
	}
	return d
}

// evict forgets the full buckets, then half of the rest if that freed less
// than a quarter: each eviction makes room for many inserts, so the cost per
// insert stays constant even when a flood of new keys keeps the map full.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.m {
		if b.TokensAt(now) >= float64(l.spec.Burst) {
			delete(l.m, k)
		}
	}
	if len(l.m) < l.maxKeys*3/4 {
		return
	}
	n := len(l.m) / 2
	for k := range l.m { // map order is unspecified: an arbitrary half
		if n == 0 {
			break
		}
		delete(l.m, k)
		n--
	}
}

// Len is the number of keys tracked (for tests and metrics).
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// SetHeaders writes the RateLimit-* fields (IETF draft, as express-rate-limit
// sends them) and, when the request is refused, Retry-After in whole seconds.
func (d Decision) SetHeaders(h http.Header) {
	if d.Disabled {
		return
	}
	reset := int(math.Ceil(d.RetryAfter.Seconds()))
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(reset))
	if !d.OK {
		h.Set("Retry-After", strconv.Itoa(max(1, reset)))
	}
}
