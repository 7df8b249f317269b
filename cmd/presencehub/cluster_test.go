package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/hub/wire"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/sbcsim"
	"github.com/presencehub/presencehub/store/storetest"
)

// Generous bounds for a loaded machine: they end a test that hangs, they
// are not what is measured.
const (
	clusterWait = 60 * time.Second
	frameWait   = 30 * time.Second
)

// testCluster is three `presencehub serve --cluster` processes on one
// private Redis and one PostgreSQL.
type testCluster struct {
	t        *testing.T
	bin      string
	env      []string
	rdb      *redis.Client
	reps     [3]*proc
	adminKey string
	account  string
	key      string
	realm    string
}

// proc is one serve process.
type proc struct {
	i    int
	cmd  *exec.Cmd
	url  string
	log  *lockedBuffer
	done chan struct{}
	// dead: stopped or killed; paused: stopped with SIGSTOP. The
	// round-robin client reads both while the test changes them.
	dead, paused atomic.Bool
}

func buildPresencehub(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "presencehub")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	srv := storetest.StartRedis(t)
	tc := &testCluster{t: t, bin: buildPresencehub(t), rdb: srv.Client(t), realm: "cluster.example"}
	envMap := map[string]string{
		"PRESENCEHUB_REDIS_URL":             srv.URL,
		"PRESENCEHUB_DATABASE_URL":          storetest.NewDatabase(t),
		"PRESENCEHUB_ENCRYPTION_KEY":        storetest.EncryptionKey,
		"PRESENCEHUB_LISTEN":                "127.0.0.1:0",
		"PRESENCEHUB_HISTORY_RETENTION":     "24h",
		"PRESENCEHUB_REGISTRATION_HISTORY":  "false",
		"PRESENCEHUB_RECONCILE_INTERVAL":    "0",
		"PRESENCEHUB_RATE_IP":               "0",
		"PRESENCEHUB_RATE_KEY":              "0",
		"PRESENCEHUB_RATE_AUTH_FAILURES":    "0",
		"PRESENCEHUB_STREAM_SUBSCRIBE_RATE": "1000",
		"PRESENCEHUB_CLUSTER":               "true",
		"PRESENCEHUB_LOG_LEVEL":             "info",
		// No conflation and a long resume history: a client kept waiting
		// by a paused replica must still get every change.
		"PRESENCEHUB_QUEUE_LEN": "65536",
		"PRESENCEHUB_HISTORY":   "100000",
	}
	getenv := func(k string) string { return envMap[k] }
	for k, v := range envMap {
		tc.env = append(tc.env, k+"="+v)
	}
	var stderr lockedBuffer
	if err := run(context.Background(), []string{"migrate"}, getenv, io.Discard, &stderr); err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr.String())
	}
	var key bytes.Buffer
	if err := run(context.Background(), []string{"apikey", "create", "--admin"}, getenv, &key, &stderr); err != nil {
		t.Fatalf("apikey: %v\n%s", err, stderr.String())
	}
	tc.adminKey = strings.TrimSpace(key.String())
	t.Cleanup(func() {
		for _, p := range tc.reps {
			if p != nil && !p.dead.Load() {
				_ = p.cmd.Process.Signal(syscall.SIGCONT)
				p.stop(t)
			}
		}
		if t.Failed() {
			for _, p := range tc.reps {
				if p != nil {
					t.Logf("replica %d log (last 6000 bytes):\n%s", p.i, tail(p.log.String(), 6000))
				}
			}
		}
	})
	return tc
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// start starts replica i (again) with extra environment and waits for it to
// be ready.
func (tc *testCluster) start(i int, extra ...string) *proc {
	t := tc.t
	t.Helper()
	p := &proc{i: i, log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(tc.bin, "serve")
	p.cmd.Env = append(append(os.Environ(), tc.env...), extra...)
	p.cmd.Stderr = p.log
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`serving on (http://\S+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case p.url = <-urls:
	case <-p.done:
		t.Fatalf("replica %d exited at start:\n%s", i, p.log.String())
	case <-time.After(clusterWait):
		t.Fatalf("replica %d printed no URL:\n%s", i, p.log.String())
	}
	tc.reps[i] = p
	eventually(t, fmt.Sprintf("replica %d ready", i), func() bool {
		r, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	return p
}

// eventually polls cond every 20 ms until it holds, failing after
// clusterWait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, clusterWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(clusterWait):
		t.Errorf("replica %d did not stop within %v of SIGTERM", p.i, clusterWait)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.dead.Store(true)
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.dead.Store(true)
}

// metric reads one unlabelled series from /metrics (-1 when unreachable).
func (p *proc) metric(name string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(p.url + "/metrics")
	if err != nil {
		return -1
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// holder waits for one live replica to report the lease and returns it.
func (tc *testCluster) holder(except *proc) *proc {
	var h *proc
	eventually(tc.t, "a replica holding the sequencer lease", func() bool {
		for _, p := range tc.reps {
			if p != nil && !p.dead.Load() && p != except && p.metric("presencehub_cluster_lease_holder") == 1 {
				h = p
				return true
			}
		}
		return false
	})
	return h
}

func (tc *testCluster) live() []*proc {
	var out []*proc
	for _, p := range tc.reps {
		if p != nil && !p.dead.Load() && !p.paused.Load() {
			out = append(out, p)
		}
	}
	return out
}

// restUsers is the replica's whole account from the REST API: name ->
// contact and expiryTime.
func (tc *testCluster) restUsers(p *proc) (map[string]string, error) {
	req, _ := http.NewRequest("POST", p.url+"/v1/Accounts/"+tc.account+"/RegisteredSipUsers", nil)
	req.Header.Set("Authorization", "Bearer "+tc.key)
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var users []wire.User
	if err := json.NewDecoder(resp.Body).Decode(&users); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(users))
	for _, u := range users {
		out[u.Name] = userKey(u)
	}
	return out, nil
}

func userKey(u wire.User) string {
	c := ""
	if u.Contact != nil {
		c = *u.Contact
	}
	return fmt.Sprintf("%s %d", c, u.ExpiryTime)
}

// redisState is what Redis holds for the realm, in restUsers' shape.
func (tc *testCluster) redisState() map[string]string {
	ctx := context.Background()
	out := make(map[string]string)
	keys, err := tc.rdb.Keys(ctx, "user:*@"+tc.realm).Result()
	if err != nil {
		tc.t.Fatal(err)
	}
	for _, k := range keys {
		v, err := tc.rdb.Get(ctx, k).Result()
		if err != nil {
			continue // expired meanwhile
		}
		var rec struct {
			Contact    string `json:"contact"`
			ExpiryTime int64  `json:"expiryTime"`
		}
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			tc.t.Fatal(err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(k, "user:"), "@"+tc.realm)] = fmt.Sprintf("%s %d", rec.Contact, rec.ExpiryTime)
	}
	return out
}

// converged waits until every live replica's REST answer equals Redis.
func (tc *testCluster) converged(what string) {
	tc.t.Helper()
	var diff string
	deadline := time.Now().Add(clusterWait)
	for {
		want := tc.redisState()
		diff = ""
		for _, p := range tc.live() {
			got, err := tc.restUsers(p)
			if err != nil {
				diff += fmt.Sprintf("replica %d: %v; ", p.i, err)
				continue
			}
			if d := mapDiff(got, want); d != "" {
				diff += fmt.Sprintf("replica %d: %s; ", p.i, d)
			}
		}
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("%s: replicas differ from Redis after %v: %s", what, clusterWait, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mapDiff(got, want map[string]string) string {
	var d []string
	for k, v := range want {
		if got[k] != v {
			d = append(d, fmt.Sprintf("%s=%q want %q", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s=%q not in redis", k, v))
		}
	}
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("… %d differences", len(d)))
	}
	return strings.Join(d, ", ")
}

// conn is one websocket with one whole-account subscription "s".
type conn struct {
	c *websocket.Conn
}

func (tc *testCluster) dial(p *proc, since *wire.Position) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), frameWait)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tc.key)
	c, _, err := websocket.Dial(ctx, strings.Replace(p.url, "http", "ws", 1)+"/v1/stream", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(16 << 20)
	b, _ := json.Marshal(wire.Request{Type: "subscribe", ID: "s", AccountSID: tc.account, Since: since})
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		c.CloseNow()
		return nil, err
	}
	return &conn{c: c}, nil
}

func (c *conn) next(timeout time.Duration) (wire.Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, b, err := c.c.Read(ctx)
	if err != nil {
		return wire.Frame{}, err
	}
	var f wire.Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, err
	}
	f.Raw = b
	return f, nil
}

// observer keeps one subscription open on one replica and records every
// change frame by seq, checking that seqs follow each other.
type observer struct {
	p      *proc
	mu     sync.Mutex
	users  map[string]string
	frames map[uint64]string // seq -> raw change frame
	seq    uint64
	epoch  string
	snaps  []wire.Frame // every snapshot frame after the first
	errs   []string
	done   chan struct{}
}

func (tc *testCluster) observe(p *proc) *observer {
	tc.t.Helper()
	c, err := tc.dial(p, nil)
	if err != nil {
		tc.t.Fatalf("observer on replica %d: %v", p.i, err)
	}
	f, err := c.next(frameWait)
	if err != nil || f.Type != "snapshot" {
		tc.t.Fatalf("observer on replica %d: first frame %s, %v; want a snapshot", p.i, f.Raw, err)
	}
	o := &observer{p: p, frames: make(map[uint64]string), done: make(chan struct{})}
	o.snapshot(f)
	go func() {
		defer close(o.done)
		defer c.c.CloseNow()
		for {
			f, err := c.next(24 * time.Hour)
			if err != nil {
				return
			}
			o.mu.Lock()
			switch f.Type {
			case "snapshot":
				o.snaps = append(o.snaps, f)
				o.snapshot(f)
			case "change":
				if f.Seq != o.seq+1 && !f.Conflated {
					o.errs = append(o.errs, fmt.Sprintf("seq %d after %d", f.Seq, o.seq))
				}
				o.seq = f.Seq
				// The id is the observer's own; the rest must be the same
				// bytes on every replica.
				o.frames[f.Seq] = string(f.Raw)
				o.apply(f)
			default:
				o.errs = append(o.errs, "frame "+string(f.Raw))
			}
			o.mu.Unlock()
		}
	}()
	tc.t.Cleanup(func() { c.c.CloseNow(); <-o.done })
	return o
}

func (o *observer) snapshot(f wire.Frame) {
	o.users = make(map[string]string)
	for _, u := range f.Users {
		o.users[u.Name] = userKey(u)
	}
	o.seq, o.epoch = f.Seq, f.Epoch
}

func (o *observer) apply(f wire.Frame) {
	if f.User.RegisteredStatus == "active" {
		o.users[f.User.Name] = userKey(*f.User)
	} else {
		delete(o.users, f.User.Name)
	}
}

// roundRobin reconnects to each live replica in turn with its last
// position, reading for a while on each.
type roundRobin struct {
	mu          sync.Mutex
	pos         *wire.Position
	users       map[string]string
	snapshots   int
	resumes     int
	connections int
	errs        []string
}

func (rr *roundRobin) run(tc *testCluster, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		live := tc.live()
		p := live[i%len(live)]
		rr.visit(tc, p, 700*time.Millisecond)
	}
}

// visit connects to p, resumes (or takes the first snapshot) and reads
// changes for d.
func (rr *roundRobin) visit(tc *testCluster, p *proc, d time.Duration) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	c, err := tc.dial(p, rr.pos)
	if err != nil {
		return // the replica may have just been killed; try the next
	}
	defer c.c.CloseNow()
	rr.connections++
	f, err := c.next(frameWait)
	if err != nil {
		return
	}
	switch {
	case f.Type == "snapshot" && rr.pos == nil:
		rr.snapshots++
		rr.users = make(map[string]string)
		for _, u := range f.Users {
			rr.users[u.Name] = userKey(u)
		}
		rr.pos = &wire.Position{Epoch: f.Epoch, Seq: f.Seq}
	case f.Type == "resumed" && f.Seq == rr.pos.Seq && f.Epoch == rr.pos.Epoch:
		rr.resumes++
	default:
		rr.errs = append(rr.errs, fmt.Sprintf("replica %d answered a resume from %+v with %s", p.i, *rr.pos, tail(string(f.Raw), 200)))
		if f.Type == "snapshot" {
			rr.snapshots++
			rr.pos = &wire.Position{Epoch: f.Epoch, Seq: f.Seq}
		}
		return
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		f, err := c.next(time.Until(end))
		if err != nil {
			return
		}
		if f.Type != "change" {
			rr.errs = append(rr.errs, fmt.Sprintf("replica %d sent %s", p.i, tail(string(f.Raw), 200)))
			return
		}
		if f.Seq != rr.pos.Seq+1 {
			rr.errs = append(rr.errs, fmt.Sprintf("replica %d: seq %d after %d", p.i, f.Seq, rr.pos.Seq))
		}
		rr.pos.Seq = f.Seq
		if f.User.RegisteredStatus == "active" {
			rr.users[f.User.Name] = userKey(*f.User)
		} else {
			delete(rr.users, f.User.Name)
		}
	}
}

// logEntriesAfter returns the log entries after id as (writer tag, realm
// seq) pairs.
func (tc *testCluster) logWritersAfter(id string) map[string]int {
	ms, err := tc.rdb.XRange(context.Background(), "presencehub:{cluster}:log", "("+id, "+").Result()
	if err != nil {
		tc.t.Fatal(err)
	}
	out := make(map[string]int)
	for _, m := range ms {
		if w, ok := m.Values["w"].(string); ok {
			out[w]++
		}
	}
	return out
}

func (tc *testCluster) lastLogID() string {
	ms, err := tc.rdb.XRevRangeN(context.Background(), "presencehub:{cluster}:log", "+", "-", 1).Result()
	if err != nil || len(ms) == 0 {
		tc.t.Fatalf("last log entry: %v", err)
	}
	return ms[0].ID
}

var writerRe = regexp.MustCompile(`took the sequencer lease"? writer=(\w+)`)

// writer is the writer tag of p's last term.
func (p *proc) writer() string {
	m := writerRe.FindAllStringSubmatch(p.log.String(), -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// TestCluster runs three replicas as one hub: a client reconnecting
// round-robin while registrations change at 500/s sees gap-free seqs and no
// snapshot after its first; the replicas emit byte-identical changes; the
// sequencer killed with SIGKILL is replaced and nothing's final state is
// lost; a sequencer paused past its lease cannot append when it continues;
// all three stopped and started again serve a resume with exactly the missed
// changes; a replica that falls behind the log's retention rebuilds and its
// subscribers get snapshots, not gaps.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	tc := newTestCluster(t)
	for i := range 3 {
		tc.start(i)
	}
	r0 := tc.reps[0]
	var sp struct{ Sid string }
	call(t, r0.url, tc.adminKey, "POST", "/v1/ServiceProviders", map[string]any{"name": "cluster provider"}, 201, &sp)
	var acc struct{ Sid string }
	call(t, r0.url, tc.adminKey, "POST", "/v1/Accounts", map[string]any{"name": "c", "service_provider_sid": sp.Sid, "sip_realm": tc.realm}, 201, &acc)
	var k struct{ Token string }
	call(t, r0.url, tc.adminKey, "POST", "/v1/ApiKeys", map[string]any{"account_sid": acc.Sid}, 201, &k)
	tc.account, tc.key = acc.Sid, k.Token

	// A stream ticket issued by one replica is redeemed by another, once.
	var tk struct{ Ticket string }
	call(t, r0.url, tc.key, "POST", "/v1/StreamTickets", nil, 201, &tk)
	ticketURL := func(p *proc) string {
		return strings.Replace(p.url, "http", "ws", 1) + "/v1/stream?ticket=" + tk.Ticket
	}
	ctx0, cancel0 := context.WithTimeout(context.Background(), frameWait)
	wsc, _, err := websocket.Dial(ctx0, ticketURL(tc.reps[1]), nil)
	if err != nil {
		t.Fatalf("ticket from replica 0 at replica 1: %v", err)
	}
	wsc.CloseNow()
	if _, resp, err := websocket.Dial(ctx0, ticketURL(tc.reps[2]), nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Errorf("the same ticket again at replica 2: %v, want 401", err)
	}
	cancel0()

	var obs []*observer
	for _, p := range tc.reps {
		obs = append(obs, tc.observe(p))
	}

	// Load: 500 changes/s as an SBC writes them, long expiries so that the
	// final states hold still once the load stops.
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() {
		_, err := sbcsim.Run(simCtx, tc.rdb, sbcsim.Config{Realms: []string{tc.realm}, Users: 300, Rate: 500,
			MinExpires: 20 * time.Minute, MaxExpires: 30 * time.Minute, Seed: 11}, sbcsim.RunOptions{})
		simDone <- err
	}()
	defer stopSim()
	rr := &roundRobin{}
	stopRR := make(chan struct{})
	rrDone := make(chan struct{})
	go func() { defer close(rrDone); rr.run(tc, stopRR) }()

	time.Sleep(4 * time.Second) // load runs; nothing is asserted about time

	// kill -9 of the sequencer during the load.
	seq1 := tc.holder(nil)
	killedAt := time.Now()
	seq1.kill()
	seq2 := tc.holder(seq1)
	t.Logf("SIGKILL of replica %d: replica %d held the lease %v later (observed through /metrics)", seq1.i, seq2.i, time.Since(killedAt).Round(time.Millisecond))
	time.Sleep(3 * time.Second)

	// A sequencer paused past its lease, then continued, cannot append.
	paused := tc.holder(nil)
	pausedWriter := paused.writer()
	paused.paused.Store(true)
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	seq3 := tc.holder(paused)
	takenOver := tc.lastLogID()
	time.Sleep(2 * time.Second)
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	paused.paused.Store(false)
	eventually(t, "the continued sequencer to know it is deposed", func() bool {
		return paused.metric("presencehub_cluster_lease_holder") == 0
	})
	time.Sleep(time.Second)
	stopSim()
	if err := <-simDone; err != nil {
		t.Fatalf("simulator: %v", err)
	}
	close(stopRR)
	<-rrDone
	if w := tc.logWritersAfter(takenOver); w[pausedWriter] != 0 || pausedWriter == "" {
		t.Errorf("after replica %d took over, the paused sequencer (writer %q) appended %d entries, want 0 (writers %v)", seq3.i, pausedWriter, w[pausedWriter], w)
	}

	tc.converged("after the load")
	// Every surviving observer ends with Redis's state and emitted the same
	// bytes for every seq it saw.
	want := tc.redisState()
	for _, o := range obs {
		if o.p.dead.Load() {
			continue
		}
		eventually(t, fmt.Sprintf("observer on replica %d to hold Redis's state", o.p.i), func() bool {
			o.mu.Lock()
			defer o.mu.Unlock()
			return mapDiff(o.users, want) == ""
		})
	}
	var ref *observer
	for _, o := range obs {
		o.mu.Lock()
		if len(o.errs) > 0 || len(o.snaps) > 0 {
			t.Errorf("observer on replica %d: %d seq errors %v, %d snapshots after the first", o.p.i, len(o.errs), o.errs[:min(5, len(o.errs))], len(o.snaps))
		}
		o.mu.Unlock()
		if !o.p.dead.Load() {
			ref = o
		}
	}
	compared := 0
	for _, o := range obs {
		if o == ref {
			continue
		}
		o.mu.Lock()
		for s, f := range o.frames {
			if g, ok := ref.frames[s]; ok {
				compared++
				if g != f {
					t.Errorf("seq %d: replica %d sent %s, replica %d %s", s, o.p.i, f, ref.p.i, g)
				}
			}
		}
		o.mu.Unlock()
	}
	// The client catches up (it may have waited on the paused replica).
	rr.visit(tc, tc.live()[0], 2*time.Second)
	t.Logf("compared %d change frames across replicas; round-robin client: %d connections, %d resumes, %d snapshots",
		compared, rr.connections, rr.resumes, rr.snapshots)
	if compared < 1000 {
		t.Errorf("only %d change frames seen by two replicas, want over 1000 (the load ran for 10 s at 500/s)", compared)
	}
	if len(rr.errs) > 0 || rr.snapshots != 1 || rr.resumes < 3 {
		t.Errorf("round-robin client: %d snapshots (want 1), %d resumes (want ≥ 3), errors %v", rr.snapshots, rr.resumes, rr.errs[:min(5, len(rr.errs))])
	}

	// Stop all three; change registrations while none runs; start them
	// again: the client's resume gets exactly the missed changes.
	for _, p := range tc.live() {
		p.stop(t)
	}
	ctx := context.Background()
	users := keys(want)
	rec := func(tag string) store.SBCRecord {
		return store.SBCRecord{Contact: "sip:x@10.9.9.9:" + tag, Protocol: "tls", Proxy: "sip:203.0.113.50:5060"}
	}
	missed := map[string]string{}
	for i := range 3 {
		if _, err := store.RegisterAsSBC(ctx, tc.rdb, fmt.Sprintf("new%d", i), tc.realm, rec("1"), time.Hour); err != nil {
			t.Fatal(err)
		}
		missed[fmt.Sprintf("new%d", i)] = "registered"
	}
	for _, u := range users[:2] {
		if _, err := store.RegisterAsSBC(ctx, tc.rdb, u, tc.realm, rec("2"), time.Hour); err != nil {
			t.Fatal(err)
		}
		missed[u] = "updated"
	}
	for _, u := range users[2:4] {
		if err := store.UnregisterAsSBC(ctx, tc.rdb, u, tc.realm); err != nil {
			t.Fatal(err)
		}
		missed[u] = "unregistered"
	}
	// The restart also shortens the log, for the retention case below.
	for i := range 3 {
		tc.start(i, "PRESENCEHUB_CLUSTER_LOG_MAX_ENTRIES=1000")
	}
	tc.converged("after restarting all three")
	c, err := tc.dial(tc.reps[1], rr.pos)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.next(frameWait)
	if err != nil || f.Type != "resumed" {
		t.Fatalf("resume from %+v after restarting all: %s, %v; want resumed", *rr.pos, f.Raw, err)
	}
	got := map[string]string{}
	for len(got) < len(missed) {
		f, err := c.next(frameWait)
		if err != nil {
			t.Fatalf("after %d of %d missed changes: %v", len(got), len(missed), err)
		}
		if f.Type != "change" || f.Seq != rr.pos.Seq+1 {
			t.Fatalf("resumed stream: %s after seq %d, want the next change", f.Raw, rr.pos.Seq)
		}
		rr.pos.Seq = f.Seq
		if _, dup := got[f.User.Name]; dup {
			t.Errorf("resumed stream: %s changed twice", f.User.Name)
		}
		got[f.User.Name] = f.Event
	}
	if fmt.Sprint(got) != fmt.Sprint(missed) {
		t.Errorf("missed changes resumed: %v, want %v", got, missed)
	}
	if f, err := c.next(time.Second); err == nil {
		t.Errorf("after the missed changes another frame: %s", f.Raw)
	}
	c.c.CloseNow()

	// A replica that falls behind the log's retention rebuilds: its
	// subscriber gets a snapshot (resync), a resume from before gets
	// resumed:false.
	lead := tc.holder(nil)
	var behind *proc
	for _, p := range tc.reps {
		if p != lead {
			behind = p
			break
		}
	}
	lagging := tc.observe(behind)
	lagging.mu.Lock()
	before := wire.Position{Epoch: lagging.epoch, Seq: lagging.seq}
	lagging.mu.Unlock()
	behind.paused.Store(true)
	if err := behind.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	appendedBefore := tc.appended()
	pipe := tc.rdb.Pipeline()
	round := 0
	eventually(t, "1,200 appends while the replica is paused", func() bool {
		round++
		for _, u := range users[4:] {
			store.RegisterAsSBC(ctx, pipe, u, tc.realm, rec(fmt.Sprint(round)), time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return tc.appended()-appendedBefore >= 1200
	})
	if err := behind.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	behind.paused.Store(false)
	tc.converged("after the lagging replica continued")
	eventually(t, "the lagging replica's subscriber to get a snapshot", func() bool {
		lagging.mu.Lock()
		defer lagging.mu.Unlock()
		return len(lagging.snaps) > 0
	})
	lagging.mu.Lock()
	if s := lagging.snaps[0]; !s.Resync || len(lagging.errs) > 0 {
		t.Errorf("lagging replica's subscriber: snapshot %s, errors %v; want a resync snapshot and no gap", tail(string(s.Raw), 200), lagging.errs)
	}
	lagging.mu.Unlock()
	if n := behind.metric("presencehub_cluster_rebuilds_total"); n < 2 {
		t.Errorf("lagging replica's rebuilds = %v, want at least 2 (start, then behind retention)", n)
	}
	c, err = tc.dial(behind, &before)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.CloseNow()
	if f, err := c.next(frameWait); err != nil || f.Type != "snapshot" || f.Resumed == nil || *f.Resumed {
		t.Errorf("resume from before the retention on the lagging replica: %s, %v; want a snapshot with resumed:false", tail(string(f.Raw), 200), err)
	}
}

func (tc *testCluster) appended() uint64 {
	n, _ := tc.rdb.Get(context.Background(), "presencehub:{cluster}:n").Uint64()
	return n
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// call does one REST request against url.
func call(t *testing.T, url, key, method, path string, body any, wantStatus int, out any) {
	t.Helper()
	in := &instance{t: t, url: url}
	in.call(key, method, path, body, wantStatus, out)
}
