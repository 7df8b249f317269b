package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// TestHTTPServerLimits runs serve with short limits and checks, on the real
// listener, that a trickled body, an idle keep-alive connection and an
// oversized header block cannot hold the server, while an upgraded websocket
// outlives the read timeout, and that connections past the cap wait.
func TestHTTPServerLimits(t *testing.T) {
	in := startInstanceEnv(t, map[string]string{
		"PRESENCEHUB_READ_HEADER_TIMEOUT": "1s",
		"PRESENCEHUB_READ_TIMEOUT":        "1s",
		"PRESENCEHUB_IDLE_TIMEOUT":        "1s",
		"PRESENCEHUB_MAX_HEADER_BYTES":    "4096",
		"PRESENCEHUB_MAX_CONNECTIONS":     "6",
	})
	http.DefaultClient.CloseIdleConnections()
	addr := strings.TrimPrefix(in.url, "http://")
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reads until the server closes c; false if it is still
	// open after limit (far above the 1 s timeouts: no timing is measured).
	closedWithin := func(c net.Conn, limit time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}

	t.Run("slowloris body", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n")
		stop := make(chan struct{})
		defer close(stop)
		go func() { // one byte every 100 ms: the body would take 100 s
			for range 1000 {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}()
		if !closedWithin(c, 15*time.Second) {
			t.Fatal("a trickled body kept the connection open for 15 s (read timeout 1 s)")
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !closedWithin(c, 15*time.Second) {
			t.Fatal("an idle keep-alive connection stayed open for 15 s (idle timeout 1 s)")
		}
	})

	t.Run("header block too large", func(t *testing.T) {
		req, _ := http.NewRequest("GET", in.url+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("16 KiB header with --max-header-bytes 4096: got %d, want 431", resp.StatusCode)
		}
	})

	t.Run("websocket outlives the read timeout; connections past the cap wait", func(t *testing.T) {
		http.DefaultClient.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h := http.Header{"Authorization": {"Bearer " + in.adminKey}}
		var socks []*websocket.Conn
		for range 6 {
			ws, _, err := websocket.Dial(ctx, in.wsURL(), &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			ws.CloseRead(ctx) // reads in the background, so pongs arrive
			socks = append(socks, ws)
		}
		time.Sleep(2500 * time.Millisecond) // past the 1 s read and idle timeouts
		for i, ws := range socks {
			if err := ws.Ping(ctx); err != nil {
				t.Fatalf("socket %d closed after the read timeout: %v", i, err)
			}
		}
		// A seventh connection is accepted by the kernel but not served.
		c := dial(t)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, _ := c.Read(make([]byte, 1)); n > 0 {
			t.Fatal("a connection past --max-connections 6 was served")
		}
		socks[0].Close(websocket.StatusNormalClosure, "")
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the waiting connection was not served once a slot freed: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("healthz: %d", resp.StatusCode)
		}
	})
}

// TestHSTS: Strict-Transport-Security only over TLS or with --secure-cookies.
func TestHSTS(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tt := range []struct {
		name   string
		secure bool
		tls    bool
		want   bool
	}{{"plain", false, false, false}, {"behind a TLS proxy", true, false, true}, {"TLS", false, true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			target := "http://x/"
			if tt.tls {
				target = "https://x/"
			}
			w := httptest.NewRecorder()
			hsts(tt.secure, ok).ServeHTTP(w, httptest.NewRequest("GET", target, nil))
			if got := w.Header().Get("Strict-Transport-Security") != ""; got != tt.want {
				t.Errorf("HSTS sent = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestShutdownDrainTimeoutFlag checks that --shutdown-drain-timeout (or its
// variable) parses, is checked, and is what serveUntil gives requests in
// flight: with the default a request still running at shutdown finishes; with
// 1ms a stuck one is cut and serveUntil returns without it.
func TestShutdownDrainTimeoutFlag(t *testing.T) {
	parse := func(t *testing.T, args []string, env map[string]string) (httpLimits, error) {
		t.Helper()
		getenv := func(k string) string { return env[k] }
		fs := cli.NewFlagSet("serve", "", getenv, io.Discard)
		lim := addHTTPLimitFlags(fs)
		if err := fs.ParseArgs(args); err != nil {
			return lim, err
		}
		return lim, lim.check()
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    time.Duration
		wantErr string
	}{
		{name: "default", want: 10 * time.Second},
		{name: "flag", args: []string{"--shutdown-drain-timeout", "3s"}, want: 3 * time.Second},
		{name: "env", env: map[string]string{"PRESENCEHUB_SHUTDOWN_DRAIN_TIMEOUT": "250ms"}, want: 250 * time.Millisecond},
		{name: "flag over env", args: []string{"--shutdown-drain-timeout", "1m"}, env: map[string]string{"PRESENCEHUB_SHUTDOWN_DRAIN_TIMEOUT": "2s"}, want: time.Minute},
		{name: "zero", args: []string{"--shutdown-drain-timeout", "0"}, wantErr: "--shutdown-drain-timeout must be positive"},
		{name: "negative", env: map[string]string{"PRESENCEHUB_SHUTDOWN_DRAIN_TIMEOUT": "-1s"}, wantErr: "--shutdown-drain-timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim, err := parse(t, tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("args %q env %v: err = %v, want %q", tc.args, tc.env, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("args %q env %v: %v", tc.args, tc.env, err)
			}
			if *lim.drain != tc.want {
				t.Errorf("args %q env %v: drain = %v, want %v", tc.args, tc.env, *lim.drain, tc.want)
			}
		})
	}

	// run serves one request that is in flight when ctx is cancelled; the
	// handler waits for release. It returns the client's outcome.
	run := func(t *testing.T, args []string, release func(srv *http.Server, unblock func())) (int, error) {
		t.Helper()
		lim, err := parse(t, args, nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		started, unblock := make(chan struct{}), make(chan struct{})
		var once sync.Once
		free := func() { once.Do(func() { close(unblock) }) }
		t.Cleanup(free)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-unblock
			w.WriteHeader(http.StatusNoContent)
		})}
		release(srv, free)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		served := make(chan error, 1)
		go func() { served <- lim.serveUntil(ctx, srv, ln, nil) }()
		type result struct {
			code int
			err  error
		}
		got := make(chan result, 1)
		go func() {
			resp, err := http.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				got <- result{err: err}
				return
			}
			resp.Body.Close()
			got <- result{code: resp.StatusCode}
		}()
		<-started
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serveUntil = %v, want nil after shutdown", err)
		}
		r := <-got
		return r.code, r.err
	}
	t.Run("in-flight request finishes within the drain", func(t *testing.T) {
		// The handler is let go once Shutdown has begun.
		code, err := run(t, nil, func(srv *http.Server, unblock func()) { srv.RegisterOnShutdown(unblock) })
		if err != nil || code != http.StatusNoContent {
			t.Errorf("request in flight at shutdown: code %d, err %v; want 204 (the 10s default drain lets it finish)", code, err)
		}
	})
	t.Run("stuck request is cut after the drain", func(t *testing.T) {
		// The handler is never let go before serveUntil returns: only the
		// drain timeout ends the shutdown.
		code, err := run(t, []string{"--shutdown-drain-timeout", "1ms"}, func(*http.Server, func()) {})
		if err == nil {
			t.Errorf("stuck request at shutdown with a 1ms drain: code %d, want the connection closed", code)
		}
	})
}
