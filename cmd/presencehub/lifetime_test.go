package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store/storetest"
)

// TestServeWaitsForItsGoroutines runs serve in a goroutine carrying a
// profiler label, which every goroutine it starts inherits: the hub, the
// Redis source's Watch, the PostgreSQL watcher, the HTTP server and its
// connections (a REST request on a kept-alive connection).
// When serve has returned, no goroutine with the label may still run code of
// this module.
func TestServeWaitsForItsGoroutines(t *testing.T) {
	rs := storetest.StartRedis(t)
	env := map[string]string{
		"PRESENCEHUB_REDIS_URL":      rs.URL,
		"PRESENCEHUB_DATABASE_URL":   storetest.NewDatabase(t),
		"PRESENCEHUB_ENCRYPTION_KEY": storetest.EncryptionKey,
		"PRESENCEHUB_LISTEN":         "127.0.0.1:0",
	}
	getenv := func(k string) string { return env[k] }
	stderr := &lockedBuffer{}
	if err := run(t.Context(), []string{"migrate"}, getenv, io.Discard, stderr); err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	var key bytes.Buffer
	if err := run(t.Context(), []string{"apikey", "create", "--admin"}, getenv, &key, stderr); err != nil {
		t.Fatalf("apikey create: %v\n%s", err, stderr)
	}

	const label = "presencehub-lifetime-test"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	type result struct {
		err    error
		leaked []string
	}
	done := make(chan result, 1)
	go pprof.Do(ctx, pprof.Labels(label, "serve"), func(ctx context.Context) {
		err := run(ctx, []string{"serve", "--reconcile-interval", "0"}, getenv, out, stderr)
		// This goroutine carries the label too: drop it before looking.
		pprof.SetGoroutineLabels(context.Background())
		done <- result{err, labelled(label)}
	})

	url := waitServing(t, out, stderr)
	for ready := false; !ready; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(url + "/readyz") // leaves a kept-alive connection
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ready = resp.StatusCode == http.StatusOK
	}
	cancel()
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not return within 30s of cancel\n%s", stderr)
	}
	if res.err != nil {
		t.Errorf("serve returned %v", res.err)
	}
	// A task's goroutine closes its done channel as its last act; it may
	// still be on its way out when serve returns. Give such goroutines a
	// moment: one that still runs our code after that has leaked.
	leaked := res.leaked
	for end := time.Now().Add(2 * time.Second); len(leaked) > 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
		leaked = labelled(label)
	}
	for _, g := range leaked {
		t.Errorf("goroutine started by serve still runs after serve returned:\n%s", g)
	}
}

// labelled returns the stacks of the goroutines carrying the profiler label
// key that run code of this module.
func labelled(key string) []string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	var out []string
	for _, rec := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(rec, "# labels: {") && strings.Contains(rec, `"`+key+`"`) &&
			strings.Contains(rec, "github.com/presencehub/presencehub/") {
			out = append(out, rec)
		}
	}
	return out
}

// waitServing returns the URL serve printed.
func waitServing(t *testing.T, out, stderr *lockedBuffer) string {
	t.Helper()
	re := regexp.MustCompile(`serving on (http://\S+)`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not print its URL within 15s\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
