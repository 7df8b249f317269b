package benchkit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestBenchWS checks the benchmarks' websocket reader against coder/websocket
// as the server: messages of every length encoding, fragmented messages,
// pings answered, the subscriber's own (masked) frames, the close handshake.
func TestBenchWS(t *testing.T) {
	big := strings.Repeat("x", 70000) // 64-bit length
	mid := strings.Repeat("y", 300)   // 16-bit length
	tests := []struct {
		name string
		// serve runs on the server's side after it has read the client's
		// first message (echoed first).
		serve func(ctx context.Context, c *websocket.Conn) error
		want  []string // messages after the echo
		end   string   // what ReadMessage returns at the end, "" for nothing expected
	}{
		{"lengths", func(ctx context.Context, c *websocket.Conn) error {
			for _, m := range []string{"a", mid, big, "b"} {
				if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
					return err
				}
			}
			return nil
		}, []string{"a", mid, big, "b"}, ""},
		{"fragmented", func(ctx context.Context, c *websocket.Conn) error {
			w, err := c.Writer(ctx, websocket.MessageText)
			if err != nil {
				return err
			}
			for _, part := range []string{"one,", "two,", "three"} {
				if _, err := w.Write([]byte(part)); err != nil {
					return err
				}
			}
			return w.Close()
		}, []string{"one,two,three"}, ""},
		{"ping answered", func(ctx context.Context, c *websocket.Conn) error {
			// The pong is read by the server's own reader.
			go c.Read(ctx)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := c.Ping(pctx); err != nil {
				return err
			}
			return c.Write(ctx, websocket.MessageText, []byte("after ping"))
		}, []string{"after ping"}, ""},
		{"close", func(ctx context.Context, c *websocket.Conn) error {
			return c.Close(websocket.StatusPolicyViolation, "client too slow")
		}, nil, "status 1008 client too slow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if got := r.Header.Get("Authorization"); got != "Bearer k" {
					http.Error(w, "no key", http.StatusUnauthorized)
					return
				}
				c, err := websocket.Accept(w, r, nil)
				if err != nil {
					done <- err
					return
				}
				defer c.CloseNow()
				ctx := context.Background()
				_, m, err := c.Read(ctx)
				if err == nil {
					err = c.Write(ctx, websocket.MessageText, m)
				}
				if err == nil {
					err = tt.serve(ctx, c)
				}
				done <- err
				time.Sleep(100 * time.Millisecond) // let the client read
			}))
			defer srv.Close()
			ws, err := DialWS("ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/stream", nil, http.Header{"Authorization": {"Bearer k"}}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			hello := `{"type":"subscribe","id":"s"}`
			if err := ws.WriteText([]byte(hello)); err != nil {
				t.Fatal(err)
			}
			for i, want := range append([]string{hello}, tt.want...) {
				got, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if string(got) != want {
					t.Errorf("message %d: got %d bytes %.30q, want %d bytes %.30q", i, len(got), got, len(want), want)
				}
			}
			if tt.end != "" { // the server waits for the answer to its close
				_, err := ws.ReadMessage()
				if !errors.Is(err, ErrWSClosed) || !strings.Contains(err.Error(), tt.end) {
					t.Errorf("at the end: got %v, want the close with %q", err, tt.end)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("server side: %v", err)
			}
		})
	}

	t.Run("refused upgrade", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no key", http.StatusUnauthorized)
		}))
		defer srv.Close()
		_, err := DialWS("ws"+strings.TrimPrefix(srv.URL, "http"), nil, nil, 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("got %v, want an error naming the 401", err)
		}
	})
}
