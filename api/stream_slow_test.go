package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/presencehub/presencehub/api"
	"github.com/presencehub/presencehub/hub"
)

// smallBufferClient is an HTTP client whose sockets have a receive buffer
// of rcvbuf bytes, set before connecting so that the window stays small.
func smallBufferClient(rcvbuf int) *http.Client {
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
}

// TestStreamSlowReader is issue #12's "nothing lost" at saturation: a
// subscriber that keeps reading, only slowly (its machine is saturated),
// must neither be cut off nor lose a change. The socket buffers on both
// ends are small, so what the server writes waits on the client; the
// client takes a frame every 20 ms, so the changes queued behind the
// buffers take it about twice the write timeout to read, and the pings
// (every 100 ms) are answered only once the frames before them are read.
// The server used to give each write round and each pong the write
// timeout as a whole, and closed such a reader (1008). The write timeout
// now closes a client that takes none of our bytes for that long.
func TestStreamSlowReader(t *testing.T) {
	t.Parallel()
	const (
		timeout = 1500 * time.Millisecond
		changes = 200 // within the hub's queue (256): none is conflated
		pace    = 20 * time.Millisecond
	)
	f := newFixtureSocket(t, api.StreamOptions{WriteTimeout: timeout, PingInterval: 100 * time.Millisecond}, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+"/v1/stream",
		&websocket.DialOptions{HTTPClient: smallBufferClient(4096), HTTPHeader: bearerHeader(f.keys[asAdmin])})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"s","account_sid":"`+f.a1.SID+`"}`)); err != nil {
		t.Fatal(err)
	}
	type frame struct {
		Type      string `json:"type"`
		Seq       uint64 `json:"seq"`
		Conflated bool   `json:"conflated"`
	}
	read := func() (frame, error) {
		_, b, err := c.Read(ctx)
		if err != nil {
			return frame{}, err
		}
		var fr frame
		if err := json.Unmarshal(b, &fr); err != nil {
			t.Fatalf("frame is not JSON (%v): %s", err, b)
		}
		return fr, nil
	}
	snap, err := read()
	if err != nil || snap.Type != "snapshot" {
		t.Fatalf("first frame: got %+v (%v), want the snapshot", snap, err)
	}
	for i := range changes {
		f.register(fmt.Sprintf("slow-%03d", i), "a1.example.com", "udp", hub.Flags{})
	}
	seq := snap.Seq
	for got := 0; got < changes; got++ {
		time.Sleep(pace)
		fr, err := read()
		if err != nil {
			t.Fatalf("after %d of %d changes the connection ended: %v\nmetrics:\n%s", got, changes, err, streamMetrics(f))
		}
		if fr.Type != "change" || fr.Conflated || fr.Seq != seq+1 {
			t.Fatalf("frame %d: got type %q seq %d conflated %v, want change seq %d not conflated", got, fr.Type, fr.Seq, fr.Conflated, seq+1)
		}
		seq = fr.Seq
	}
	if m := streamMetrics(f); !strings.Contains(m, "presencehub_stream_slow_disconnects_total 0") {
		t.Errorf("slow disconnects counted, want none:\n%s", m)
	}
	// A client that stops reading altogether is still closed: more than
	// the buffers hold, then nothing read.
	for i := range changes {
		f.register(fmt.Sprintf("slow-%03d", i), "a1.example.com", "tcp", hub.Flags{})
	}
	deadline := time.Now().Add(30 * time.Second)
	for m := streamMetrics(f); !strings.Contains(m, "presencehub_stream_connections 0"); m = streamMetrics(f) {
		if time.Now().After(deadline) {
			t.Fatalf("a client that stopped reading is still connected 30 s later:\n%s", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamMetrics is the presencehub_stream_ lines of /metrics.
func streamMetrics(f *fixture) string {
	var b strings.Builder
	for _, l := range strings.Split(string(f.do(asNone, "GET", "/metrics", nil).body), "\n") {
		if strings.HasPrefix(l, "presencehub_stream_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestStreamPongTimeout: an idle client that does not answer pings (it
// never reads, so coder/websocket never pongs) is closed; one that reads
// (and so answers them) stays. The ping's own write is not counted as the
// client reading.
func TestStreamPongTimeout(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, api.StreamOptions{WriteTimeout: 500 * time.Millisecond, PingInterval: 100 * time.Millisecond})
	reader := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
	go func() {
		for {
			if _, _, err := reader.c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	f.dialStream(t, bearerHeader(f.keys[asAdmin])) // never reads
	deadline := time.Now().Add(30 * time.Second)
	for m := streamMetrics(f); !strings.Contains(m, "presencehub_stream_disconnects_total 1"); m = streamMetrics(f) {
		if time.Now().After(deadline) {
			t.Fatalf("the client that answers no ping is still connected 30 s later:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := streamMetrics(f); !strings.Contains(m, "presencehub_stream_connections 1") {
		t.Errorf("after the silent client was closed, want the reading one still connected:\n%s", m)
	}
}

// metricValue is the value of the metric line name in m (-1: none).
func metricValue(m, name string) float64 {
	for _, l := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// TestStreamPingsSkippedWhileDataFlows: the heartbeats of a connection
// that keeps getting frames, which its client reads (so its TCP
// acknowledges them), skip their pings (presencehub_stream_pings_skipped_total);
// an idle connection next to it is still pinged, and stays (it answers).
// Whether a given heartbeat finds every byte acknowledged depends on when
// the client's acknowledgment comes, so the test waits for skips to be
// counted rather than expecting every heartbeat to skip; it logs the counts.
func TestStreamPingsSkippedWhileDataFlows(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, api.StreamOptions{PingInterval: 100 * time.Millisecond})
	busy := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
	idle := f.dialStream(t, bearerHeader(f.keys[asAdmin]))
	for _, c := range []*wsClient{busy, idle} {
		go func() {
			for {
				if _, _, err := c.c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := busy.c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"s","account_sid":"`+f.a1.SID+`"}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	m := streamMetrics(f)
	for i := 0; metricValue(m, "presencehub_stream_pings_skipped_total") < 5 || metricValue(m, "presencehub_stream_pings_total") < 5; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("30 s of a change every 10 ms to one of two connections, want at least 5 pings (the idle one) and 5 skipped (the busy one):\n%s", m)
		}
		f.register(fmt.Sprintf("flow-%d", i%50), "a1.example.com", "udp", hub.Flags{})
		time.Sleep(10 * time.Millisecond)
		m = streamMetrics(f)
	}
	if got := metricValue(m, "presencehub_stream_connections"); got != 2 {
		t.Errorf("want both connections open, got %v:\n%s", got, m)
	}
	t.Logf("%v of changes every 10 ms to one of 2 connections, pings every 100 ms: %v pings, %v skipped",
		time.Since(start).Round(time.Millisecond), metricValue(m, "presencehub_stream_pings_total"), metricValue(m, "presencehub_stream_pings_skipped_total"))
}

// TestStreamStuckClientsDelayNoOne: the flushes of all connections run on a
// few workers (as many as GOMAXPROCS) that must never wait for a client.
// More clients than there are workers stop reading with their buffers
// full; a client that reads must still get every change at once, not
// after the write timeout closes the stuck ones (a worker waiting on a
// stuck socket would hold it up until then).
func TestStreamStuckClientsDelayNoOne(t *testing.T) {
	t.Parallel()
	const (
		timeout = 2 * time.Minute // the stuck clients are not closed during the test
		stuck   = 8               // more than the workers
		changes = 200
	)
	f := newFixtureSocket(t, api.StreamOptions{WriteTimeout: timeout}, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := []byte(`{"type":"subscribe","id":"s","account_sid":"` + f.a1.SID + `"}`)
	dial := func(hc *http.Client) *websocket.Conn {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+"/v1/stream",
			&websocket.DialOptions{HTTPClient: hc, HTTPHeader: bearerHeader(f.keys[asAdmin])})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		if err := c.Write(ctx, websocket.MessageText, sub); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for range stuck {
		dial(smallBufferClient(4096)) // never read
	}
	c := dial(nil)
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	// Big enough changes that the stuck clients' buffers fill early.
	for i := range changes {
		f.register(fmt.Sprintf("stuck-%03d-%s", i, strings.Repeat("x", 200)), "a1.example.com", "udp", hub.Flags{})
	}
	readCtx, readCancel := context.WithTimeout(ctx, 30*time.Second) // far less than the write timeout
	defer readCancel()
	for got := range changes {
		if _, _, err := c.Read(readCtx); err != nil {
			t.Fatalf("the reading client got %d of %d changes, then: %v (stuck clients held it up)\nmetrics:\n%s", got, changes, err, streamMetrics(f))
		}
	}
}
