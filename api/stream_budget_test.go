package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/api"
)

// TestStreamOutputBudget is issue #9 finding 2's memory bound: a client
// that never reads cannot make the server hold more than the output budget
// for it. It subscribes to a watchlist whose snapshot alone outgrows the
// socket buffers (so the server's writer is stuck on it), then keeps asking
// for error frames; once more than the budget waits unread, the server
// drops the connection and counts it.
func TestStreamOutputBudget(t *testing.T) {
	t.Parallel()
	// Small socket buffers on both ends (set before connecting, so the
	// window stays small): the kernels hold little of what the server
	// writes. No pings within the test: a client that does not read would
	// be closed for not answering them, which is not what is tested.
	f := newFixtureSocket(t, api.StreamOptions{OutputBudget: 64 << 10, PingInterval: time.Hour}, 4096)
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+"/v1/stream",
		&websocket.DialOptions{HTTPClient: client, HTTPHeader: bearerHeader(f.keys[asAdmin])})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var names strings.Builder
	for i := range 4000 { // 52 KB, under the 64 KiB read limit; an 800 KB snapshot
		if i > 0 {
			names.WriteByte(',')
		}
		fmt.Fprintf(&names, `"user-%05d"`, i)
	}
	send := func(s string) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, []byte(s))
	}
	if err := send(`{"type":"subscribe","id":"big","account_sid":"` + f.a1.SID + `","users":[` + names.String() + `]}`); err != nil {
		t.Fatal(err)
	}
	// Each bad frame asks for an error frame of about 100 bytes: 20,000 of
	// them are 30 times the budget.
	closed, start, sent := false, time.Now(), 0
	for i := 0; i < 20_000 && !closed; i++ {
		sent++
		closed = send(`{"type":"nonsense"}`) != nil
		if i%100 == 99 && strings.Contains(string(f.do(asNone, "GET", "/metrics", nil).body), "presencehub_stream_budget_closes_total 1") {
			closed = true
		}
	}
	t.Logf("%d bad frames in %v", sent, time.Since(start))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(f.do(asNone, "GET", "/metrics", nil).body), "presencehub_stream_budget_closes_total 1") {
		if time.Now().After(deadline) {
			t.Fatalf("a client that does not read was not closed for its output budget:\n%s", f.do(asNone, "GET", "/metrics", nil).body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("budget close counted after %v", time.Since(start))
	// The connection is gone: writes fail once the server has dropped it.
	deadline = time.Now().Add(15 * time.Second)
	for send(`{"type":"nonsense"}`) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the connection is still open 15s after the budget close")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("connection gone after %v", time.Since(start))
}

// TestStreamRefusedSubscribeDecodesNoNames: a subscribe refused by a
// connection's caps or its rate limit is refused before its watchlist is
// decoded (issue #9's hostile key sends 300 subscribes of 8,000 names, all
// but the first refused). The server counts the names it decodes.
func TestStreamRefusedSubscribeDecodesNoNames(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, api.StreamOptions{MaxSubs: 2, SubscribeRate: 0.001, SubscribeBurst: 3})
	names := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"u%04d"`, i)
		}
		return `,"users":[` + b.String() + `]`
	}
	big := names(8000) // 64 KB: within the read limit
	w := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
	steps := []struct {
		name, frame string
		wantType    string
		wantCode    string
		wantDecoded int // names decoded so far
	}{
		{"8,000 names accepted", `{"type":"subscribe","id":"a","account_sid":"` + f.a1.SID + `"` + big + `}`, "snapshot", "", 8000},
		{"8,000 more: watched-user cap", `{"type":"subscribe","id":"x1","account_sid":"` + f.a1.SID + `"` + big + `}`, "error", "limit_exceeded", 8000},
		{"again", `{"type":"subscribe","id":"x2","account_sid":"` + f.a1.SID + `"` + big + `}`, "error", "limit_exceeded", 8000},
		{"10 names accepted", `{"type":"subscribe","id":"b","account_sid":"` + f.a1.SID + `"` + names(10) + `}`, "snapshot", "", 8010},
		{"subscription cap", `{"type":"subscribe","id":"c","account_sid":"` + f.a1.SID + `"` + names(10) + `}`, "error", "limit_exceeded", 8010},
		{"unsubscribe b", `{"type":"unsubscribe","id":"b"}`, "unsubscribed", "", 8010},
		{"last token of the bucket", `{"type":"subscribe","id":"d","account_sid":"` + f.a1.SID + `"` + names(10) + `}`, "snapshot", "", 8020},
		{"unsubscribe d", `{"type":"unsubscribe","id":"d"}`, "unsubscribed", "", 8020},
		{"rate limit", `{"type":"subscribe","id":"e","account_sid":"` + f.a1.SID + `"` + names(10) + `}`, "error", "rate_limited", 8020},
	}
	for _, st := range steps {
		w.send("%s", st.frame)
		m := w.expect(st.wantType, st.wantCode)
		_ = m
		metrics := string(f.do(asNone, "GET", "/metrics", nil).body)
		want := fmt.Sprintf("presencehub_stream_watchlist_names_decoded_total %d\n", st.wantDecoded)
		if !strings.Contains(metrics, want) {
			got := ""
			for _, l := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(l, "presencehub_stream_watchlist_names_decoded_total ") {
					got = l
				}
			}
			t.Fatalf("%s: got %q, want %q", st.name, got, strings.TrimSpace(want))
		}
	}
}
