package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// tasks are the goroutines serve starts. Each runs until its own context
// is cancelled (then returns nil) or until it fails; stop cancels and waits
// for them one at a time, in the order they were started, so that serve
// returns only when none of them runs any more.
type tasks struct {
	list     []*task
	failed   chan struct{} // closed when the first task returns an error
	failOnce sync.Once
}

type task struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func newTasks() *tasks { return &tasks{failed: make(chan struct{})} }

// start runs run in a goroutine of its own with a context of its own.
func (ts *tasks) start(ctx context.Context, name string, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &task{name: name, cancel: cancel, done: make(chan struct{})}
	ts.list = append(ts.list, t)
	go func() {
		defer close(t.done)
		t.err = run(ctx)
		if t.err != nil {
			ts.failOnce.Do(func() { close(ts.failed) })
		}
	}()
}

// stop cancels the first task and waits for it to return, then the second,
// and so on; it returns the errors of the tasks that failed.
func (ts *tasks) stop() error {
	var errs []error
	for _, t := range ts.list {
		t.cancel()
		<-t.done
		if t.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name, t.err))
		}
	}
	ts.list = nil
	return errors.Join(errs...)
}
