package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/hub/wire"
)

// TestStreamCookieOrigin: the dashboard's session cookie authenticates an
// upgrade only from the same origin (no cross-site websocket hijacking).
func TestStreamCookieOrigin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p, err := f.db.Authenticate(ctx, f.keys[asOwn])
	if err != nil {
		t.Fatal(err)
	}
	session, err := f.db.CreateSession(ctx, p, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wsURL := "ws" + strings.TrimPrefix(f.url, "http") + "/v1/stream"
	tests := []struct {
		name   string
		cookie string
		origin string
		want   int // 0: the upgrade succeeds
		name2  string
	}{
		{"same origin", session, f.url, 0, ""},
		{"__Host- cookie (dashboard with Secure cookies)", session, f.url, 0, "__Host-ph_session"},
		{"no origin (not a browser)", session, "", 0, ""},
		{"another origin", session, "https://evil.example.com", http.StatusForbidden, ""},
		{"unknown session", "nope", f.url, http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			name := "ph_session"
			if tt.name2 != "" {
				name = tt.name2
			}
			h.Set("Cookie", name+"="+tt.cookie)
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h})
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("upgrade refused: %v", err)
				}
				defer c.CloseNow()
				msg := `{"type":"subscribe","id":"d","account_sid":"` + f.a1.SID + `"}`
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_, b, err := c.Read(ctx)
				if err != nil || !strings.Contains(string(b), `"type":"snapshot"`) {
					t.Fatalf("after subscribing got %s (%v), want a snapshot", b, err)
				}
				return
			}
			if err == nil {
				c.CloseNow()
				t.Fatalf("upgrade accepted, want HTTP %d", tt.want)
			}
			if resp == nil || resp.StatusCode != tt.want {
				t.Fatalf("upgrade answered %v, want HTTP %d", resp, tt.want)
			}
		})
	}
}

// TestStreamAnswersAreJSON: every frame the server answers a client's frame
// with is one JSON object of the documented type. (The "unsubscribed" frame
// once went out without its closing brace, which the Go client takes for a
// broken connection.)
func TestStreamAnswersAreJSON(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+f.keys[asOwn])
	wsURL := "ws" + strings.TrimPrefix(f.url, "http") + "/v1/stream"
	c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	tests := []struct {
		send      string
		wantType  string
		wantCode  string
		wantOther string // another field that must be set
	}{
		{`{"type":"subscribe","id":"s1","account_sid":"` + f.a1.SID + `"}`, wire.TypeSnapshot, "", "epoch"},
		{`{"type":"unsubscribe","id":"s1"}`, wire.TypeUnsubscribed, "", ""},
		{`{"type":"unsubscribe","id":"s1"}`, wire.TypeError, wire.CodeNotFound, ""},
		{`{"type":"subscribe","id":"s2","account_sid":"` + f.a2.SID + `"}`, wire.TypeError, wire.CodeForbidden, ""},
		{`[1]`, wire.TypeError, wire.CodeBadRequest, ""},
		{`{"type":"nap","id":"s3"}`, wire.TypeError, wire.CodeBadRequest, ""},
	}
	for _, tt := range tests {
		if err := c.Write(ctx, websocket.MessageText, []byte(tt.send)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("after %s: %v", tt.send, err)
		}
		var fr wire.Frame
		if err := json.Unmarshal(b, &fr); err != nil {
			t.Errorf("after %s got %s, not a JSON object: %v", tt.send, b, err)
			continue
		}
		if fr.Type != tt.wantType || fr.Code != tt.wantCode {
			t.Errorf("after %s got %s, want type %q code %q", tt.send, b, tt.wantType, tt.wantCode)
		}
		if tt.wantOther == "epoch" && fr.Epoch == "" {
			t.Errorf("after %s got %s, want an epoch", tt.send, b)
		}
	}
}
