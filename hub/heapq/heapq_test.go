package heapq

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// item orders by at; id tells equal ones apart.
type item struct{ at, id int }

func (a item) Less(b item) bool { return a.at < b.at }

// drain pops everything and returns the keys in the order popped.
func drain(h *Heap[item]) []int {
	var got []int
	for h.Len() > 0 {
		min := h.Min()
		x := h.Pop()
		if x != min {
			panic("Min and Pop disagree")
		}
		got = append(got, x.at)
	}
	return got
}

func TestHeapOrders(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]int, 500)
	for i := range random {
		random[i] = rng.IntN(100) // with repeats
	}
	for _, tc := range []struct {
		name string
		in   []int
	}{
		{"empty", nil},
		{"one", []int{7}},
		{"ascending", []int{1, 2, 3, 4, 5, 6, 7}},
		{"descending", []int{9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{"equal", []int{3, 3, 3, 3}},
		{"random with repeats", random},
	} {
		want := slices.Sorted(slices.Values(tc.in))
		t.Run(tc.name+"/Push", func(t *testing.T) {
			var h Heap[item]
			for i, at := range tc.in {
				h.Push(item{at, i})
			}
			if got := drain(&h); !slices.Equal(got, want) {
				t.Errorf("popped %v, want %v", got, want)
			}
		})
		t.Run(tc.name+"/Append+Init", func(t *testing.T) {
			var h Heap[item]
			for i, at := range tc.in {
				h.Append(item{at, i})
			}
			h.Init()
			if got := drain(&h); !slices.Equal(got, want) {
				t.Errorf("popped %v, want %v", got, want)
			}
		})
	}
}

// TestHeapInterleaved pushes and pops in turn, against a sorted slice.
func TestHeapInterleaved(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h Heap[item]
	var ref []int
	for i := range 2000 {
		if rng.IntN(3) > 0 || len(ref) == 0 {
			at := rng.IntN(1000)
			h.Push(item{at, i})
			ref = append(ref, at)
			slices.Sort(ref)
			continue
		}
		if got := h.Pop().at; got != ref[0] {
			t.Fatalf("step %d: popped %d, want %d", i, got, ref[0])
		}
		ref = ref[1:]
	}
	if h.Len() != len(ref) {
		t.Fatalf("Len = %d, want %d", h.Len(), len(ref))
	}
}

func TestHeapRetain(t *testing.T) {
	var h Heap[item]
	for i := range 100 {
		h.Push(item{(i * 37) % 100, i})
	}
	h.Retain(func(x item) bool { return x.at%3 == 0 })
	var want []int
	for at := 0; at < 100; at += 3 {
		want = append(want, at)
	}
	tail := h.items[h.Len():cap(h.items)][:100-h.Len()]
	for i, x := range tail {
		if x != (item{}) {
			t.Fatalf("slot %d after Retain holds %v, want it zeroed", h.Len()+i, x)
		}
	}
	if got := drain(&h); !slices.Equal(got, want) {
		t.Errorf("after Retain popped %v, want %v", got, want)
	}
}

// TestPopZeroesTheSlot: a popped item is not kept alive by the slice.
func TestPopZeroesTheSlot(t *testing.T) {
	var h Heap[item]
	h.Push(item{2, 1})
	h.Push(item{1, 2})
	h.Pop()
	if x := h.items[:2][1]; x != (item{}) {
		t.Errorf("the slot Pop left holds %v, want it zeroed", x)
	}
}

func TestGrowKeepsItems(t *testing.T) {
	var h Heap[item]
	for i, at := range []int{5, 1, 3} {
		h.Push(item{at, i})
	}
	h.Grow(1000)
	if cap(h.items) < 1003 {
		t.Errorf("cap after Grow(1000) of 3 items = %d, want at least 1003", cap(h.items))
	}
	if got := drain(&h); !slices.Equal(got, []int{1, 3, 5}) {
		t.Errorf("popped %v after Grow, want [1 3 5]", got)
	}
}
