// Package heapq is a binary min-heap over a slice, for the schedules of
// several packages: the hub's registration deadlines, the API's ticket
// expiries and the SBC simulator's refreshes and lapses. It replaces one
// container/heap adapter in each (Len, Less, Swap, Push and Pop on any),
// and it boxes nothing. It imports only the standard library, so hub may
// use it.
//
// A Heap is not safe for concurrent use; its zero value is an empty heap.
package heapq

import "slices"

// Ordered is what a Heap holds: a value that knows whether it comes before
// another.
type Ordered[T any] interface {
	Less(than T) bool
}

// Heap is a min-heap: Min and Pop give the least item.
type Heap[T Ordered[T]] struct {
	items []T
}

// Len is the number of items.
func (h *Heap[T]) Len() int { return len(h.items) }

// Min returns the least item without removing it; the heap must not be
// empty.
func (h *Heap[T]) Min() T { return h.items[0] }

// Push adds x in O(log n).
func (h *Heap[T]) Push(x T) {
	h.items = append(h.items, x)
	h.up(len(h.items) - 1)
}

// Pop removes and returns the least item in O(log n); the heap must not be
// empty. The slot it leaves is zeroed, so the slice holds no reference to x.
func (h *Heap[T]) Pop() T {
	n := len(h.items) - 1
	h.items[0], h.items[n] = h.items[n], h.items[0]
	h.down(0, n)
	x := h.items[n]
	var zero T
	h.items[n] = zero
	h.items = h.items[:n]
	return x
}

// Append adds x without keeping the heap order: after a run of Appends,
// call Init before any Min or Pop. Loading n items this way costs O(n),
// not O(n log n).
func (h *Heap[T]) Append(x T) { h.items = append(h.items, x) }

// Grow makes room for n more items without another allocation.
func (h *Heap[T]) Grow(n int) { h.items = slices.Grow(h.items, n) }

// Init restores the heap order in O(n).
func (h *Heap[T]) Init() {
	n := len(h.items)
	for i := n/2 - 1; i >= 0; i-- {
		h.down(i, n)
	}
}

// Retain keeps the items for which keep is true, in O(n), and zeroes the
// slots of the others.
func (h *Heap[T]) Retain(keep func(T) bool) {
	kept := h.items[:0]
	for _, x := range h.items {
		if keep(x) {
			kept = append(kept, x)
		}
	}
	clear(h.items[len(kept):])
	h.items = kept
	h.Init()
}

func (h *Heap[T]) up(j int) {
	for j > 0 {
		i := (j - 1) / 2 // parent
		if !h.items[j].Less(h.items[i]) {
			return
		}
		h.items[i], h.items[j] = h.items[j], h.items[i]
		j = i
	}
}

// down sifts the item at i down within the first n items.
func (h *Heap[T]) down(i, n int) {
	for {
		j := 2*i + 1 // left child
		if j >= n || j < 0 {
			return
		}
		if r := j + 1; r < n && h.items[r].Less(h.items[j]) {
			j = r
		}
		if !h.items[j].Less(h.items[i]) {
			return
		}
		h.items[i], h.items[j] = h.items[j], h.items[i]
		i = j
	}
}
