package store

import (
	"sync"
	"time"
)

// ttlCache is a small map with per-entry expiry. Every invalidation bumps a
// generation, and put is ignored when the generation moved since the caller
// started its database read: otherwise a read racing with a delete could put
// back what the delete just removed.
type ttlCache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu  sync.RWMutex
	gen uint64
	m   map[K]cacheEntry[V]
}

type cacheEntry[V any] struct {
	v     V
	until time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, max: max, m: make(map[K]cacheEntry[V])}
}

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// generation is read before the database read whose result will be put.
func (c *ttlCache[K, V]) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *ttlCache[K, V]) put(k K, v V, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m) // crude, but bounded; a flood of junk must not grow memory
		}
	}
	c.m[k] = cacheEntry[V]{v: v, until: now.Add(c.ttl)}
}

func (c *ttlCache[K, V]) remove(k K) {
	c.mu.Lock()
	c.gen++
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *ttlCache[K, V]) clear() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}
