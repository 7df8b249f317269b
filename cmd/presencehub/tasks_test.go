package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestTasksStopInOrder: stop cancels the tasks one at a time in the order
// they were started and returns only after each has returned, even when a
// task takes its time to end after its cancel (the sleep only widens the
// window in which a stop that does not wait would return too early).
func TestTasksStopInOrder(t *testing.T) {
	var mu sync.Mutex
	var log []string
	note := func(s string) {
		mu.Lock()
		log = append(log, s)
		mu.Unlock()
	}
	ts := newTasks()
	for _, name := range []string{"hub", "watcher", "http"} {
		ts.start(t.Context(), name, func(ctx context.Context) error {
			<-ctx.Done()
			note(name + " cancelled")
			time.Sleep(20 * time.Millisecond)
			note(name + " returned")
			return nil
		})
	}
	if err := ts.stop(); err != nil {
		t.Errorf("stop = %v, want nil", err)
	}
	note("stop returned")
	want := []string{"hub cancelled", "hub returned", "watcher cancelled", "watcher returned", "http cancelled", "http returned", "stop returned"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(log, want) {
		t.Errorf("got %q\nwant %q", log, want)
	}
}

// TestTasksFailure: a task that fails signals failed; stop returns its
// error named after it, and still stops and waits for the others.
func TestTasksFailure(t *testing.T) {
	boom := errors.New("boom")
	ts := newTasks()
	var other sync.WaitGroup
	other.Add(1)
	ts.start(t.Context(), "hub", func(ctx context.Context) error {
		defer other.Done()
		<-ctx.Done()
		return nil
	})
	ts.start(t.Context(), "http server", func(ctx context.Context) error { return boom })
	<-ts.failed
	err := ts.stop()
	if !errors.Is(err, boom) || err.Error() != "http server: boom" {
		t.Errorf("stop = %v, want http server: boom", err)
	}
	other.Wait() // returns at once: stop waited for it
}
