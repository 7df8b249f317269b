package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// fakeSink records what a source hands over, and keeps the state those calls
// add up to, as the hub would (without its expiry clock).
type fakeSink struct {
	mu      sync.Mutex
	resyncs [][]hub.Registration
	updates []hub.Update
	state   map[string]hub.Registration // "user@realm" -> registration

	// gate, when set, holds every Update after the first resync until the
	// test sends on it (or closes it); waiting counts the held calls.
	gate    chan struct{}
	waiting atomic.Int32
}

func newFakeSink() *fakeSink { return &fakeSink{state: make(map[string]hub.Registration)} }

func (f *fakeSink) Resync(regs []hub.Registration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resyncs = append(f.resyncs, append([]hub.Registration(nil), regs...))
	f.state = make(map[string]hub.Registration)
	for _, r := range regs {
		f.state[r.AOR()] = r
	}
}

func (f *fakeSink) Update(updates ...hub.Update) {
	if f.gate != nil {
		f.waiting.Add(1)
		<-f.gate
		f.waiting.Add(-1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range updates {
		f.updates = append(f.updates, u)
		if u.Reg == nil {
			delete(f.state, u.AOR)
		} else {
			f.state[u.AOR] = *u.Reg
		}
	}
}

func (f *fakeSink) resyncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.resyncs)
}

func (f *fakeSink) lastResync() []hub.Registration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.resyncs) == 0 {
		return nil
	}
	return f.resyncs[len(f.resyncs)-1]
}

// updatesFor returns the updates of aor, oldest first.
func (f *fakeSink) updatesFor(aor string) []hub.Update {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hub.Update
	for _, u := range f.updates {
		if u.AOR == aor {
			out = append(out, u)
		}
	}
	return out
}

// aors returns the AORs in the sink's state, sorted.
func (f *fakeSink) aors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.state))
	for a := range f.state {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func (f *fakeSink) get(aor string) (hub.Registration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.state[aor]
	return r, ok
}

// logRecorder is a slog handler keeping the records.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// warnings counts the warnings whose "key" attribute is key.
func (l *logRecorder) warnings(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level != slog.LevelWarn {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "key" && a.Value.String() == key {
				n++
			}
			return true
		})
	}
	return n
}

type watched struct {
	src  *store.RedisSource
	sink *fakeSink
	logs *logRecorder
	stop func() error // cancels Watch and returns what it returned
}

// watch runs a RedisSource on srv until the test ends (or stop is called).
// The test fails if Watch returns an error when stopped.
func watch(t *testing.T, srv *storetest.RedisServer, opts store.RedisOptions) *watched {
	t.Helper()
	return watchInto(t, srv, opts, newFakeSink())
}

// watchInto is watch with the sink given.
func watchInto(t *testing.T, srv *storetest.RedisServer, opts store.RedisOptions, sink *fakeSink) *watched {
	t.Helper()
	logs := &logRecorder{}
	if opts.URL == "" {
		opts.URL = srv.URL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(logs)
	}
	src, err := store.NewRedisSource(opts)
	if err != nil {
		t.Fatalf("NewRedisSource: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Watch(ctx, sink) }()
	var once sync.Once
	var werr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case werr = <-errc:
			case <-time.After(10 * time.Second):
				werr = fmt.Errorf("Watch did not return within 10s of its context being cancelled")
			}
			_ = src.Close()
		})
		return werr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	})
	return &watched{src: src, sink: sink, logs: logs, stop: stop}
}

// waitFor polls cond until it holds, failing the test after timeout with
// what describes the state.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s; %s", timeout, what, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *watched) describe() string {
	m := w.src.Metrics()
	return fmt.Sprintf("sink has %v after %d resyncs; metrics %+v", w.sink.aors(), w.sink.resyncCount(), m)
}

// waitResyncs waits until the sink got at least n resyncs.
func (w *watched) waitResyncs(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d resync(s)", n), func() bool { return w.sink.resyncCount() >= n }, w.describe)
}

// waitState waits until the sink's state holds exactly aors.
func (w *watched) waitState(t *testing.T, what string, aors ...string) {
	t.Helper()
	sort.Strings(aors)
	want := strings.Join(aors, ",")
	waitFor(t, 10*time.Second, what+": state "+want, func() bool { return strings.Join(w.sink.aors(), ",") == want }, w.describe)
}

// errorsContaining counts the error records whose message or attributes
// contain s.
func (l *logRecorder) errorsContaining(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level != slog.LevelError {
			continue
		}
		found := strings.Contains(r.Message, s)
		r.Attrs(func(a slog.Attr) bool {
			found = found || strings.Contains(a.Value.String(), s)
			return true
		})
		if found {
			n++
		}
	}
	return n
}
