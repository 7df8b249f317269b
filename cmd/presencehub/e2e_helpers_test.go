package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// instance is presencehub started through run(), as the binary runs, on real
// Redis and PostgreSQL.
type instance struct {
	t        *testing.T
	url      string
	redis    *storetest.RedisServer
	rdb      *redis.Client
	env      map[string]string
	adminKey string
	spSID    string
	stderr   *lockedBuffer
	served   <-chan struct{} // closed when serve has returned
	serveErr error           // what serve returned (read after served is closed)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startInstance(t *testing.T, redisOpts ...storetest.RedisOption) *instance {
	t.Helper()
	return startInstanceEnv(t, nil, redisOpts...)
}

// startInstanceEnv is startInstance with extra environment for serve.
func startInstanceEnv(t *testing.T, extraEnv map[string]string, redisOpts ...storetest.RedisOption) *instance {
	t.Helper()
	return startInstanceWith(t, startOptions{env: extraEnv}, redisOpts...)
}

// startOptions change how startInstanceWith starts serve.
type startOptions struct {
	env map[string]string // extra environment
	// beforeServe runs after migrate and the admin key, before serve starts
	// (e.g. to stop Redis).
	beforeServe func(in *instance)
	// notReady: return once serve prints its URL, without waiting for
	// /readyz 200 or creating the service provider.
	notReady bool
}

// startInstanceWith starts serve as startInstance does, with opts.
func startInstanceWith(t *testing.T, opts startOptions, redisOpts ...storetest.RedisOption) *instance {
	t.Helper()
	extraEnv := opts.env
	in := &instance{t: t, stderr: &lockedBuffer{}}
	redisURL := extraEnv["PRESENCEHUB_REDIS_URL"]
	if extraEnv["PRESENCEHUB_REDIS_SENTINELS"] == "" { // else the test brings its own Redis topology
		in.redis = storetest.StartRedis(t, redisOpts...)
		in.rdb = in.redis.Client(t)
		redisURL = in.redis.URL
	}
	in.env = map[string]string{
		"PRESENCEHUB_REDIS_URL":      redisURL,
		"PRESENCEHUB_DATABASE_URL":   storetest.NewDatabase(t),
		"PRESENCEHUB_ENCRYPTION_KEY": storetest.EncryptionKey,
		"PRESENCEHUB_LISTEN":         "127.0.0.1:0",
		// A short retention: fewer daily partitions to create at start.
		"PRESENCEHUB_HISTORY_RETENTION": "24h",
	}
	for k, v := range extraEnv {
		in.env[k] = v
	}
	getenv := func(k string) string { return in.env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	if err := run(ctx, []string{"migrate"}, getenv, io.Discard, in.stderr); err != nil {
		t.Fatalf("migrate: %v\n%s", err, in.stderr)
	}
	var key bytes.Buffer
	if err := run(ctx, []string{"apikey", "create", "--admin"}, getenv, &key, in.stderr); err != nil {
		t.Fatalf("apikey create: %v\n%s", err, in.stderr)
	}
	in.adminKey = strings.TrimSpace(key.String())

	if opts.beforeServe != nil {
		opts.beforeServe(in)
	}
	out := &lockedBuffer{}
	done := make(chan struct{})
	in.served = done
	go func() {
		in.serveErr = run(ctx, []string{"serve", "--reconcile-interval", "0"}, getenv, out, in.stderr)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if err := in.serveErr; err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("serve did not stop within 15s of cancel")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", in.stderr)
		}
	})
	re := regexp.MustCompile(`serving on (http://\S+)`)
	deadline := time.Now().Add(15 * time.Second)
	for in.url == "" {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			in.url = m[1]
			break
		}
		select {
		case <-done:
			t.Fatalf("serve exited early: %v\n%s", in.serveErr, in.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not print its URL within 15s\n%s", in.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if opts.notReady {
		return in
	}
	in.eventually("ready", 15*time.Second, func() bool {
		r, err := http.Get(in.url + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	if extraEnv["PRESENCEHUB_JAMBONZ_DATABASE_URL"] != "" || extraEnv["JAMBONES_MYSQL_HOST"] != "" {
		return in // tenants come from jambonz; writes here would be refused
	}
	var sp struct{ Sid string }
	in.call(in.adminKey, "POST", "/v1/ServiceProviders", map[string]any{"name": "e2e provider"}, 201, &sp)
	in.spSID = sp.Sid
	return in
}

// account creates an account with realm and returns its sid and an account key.
func (in *instance) account(realm string) (sid, key string) {
	var a struct{ Sid string }
	in.call(in.adminKey, "POST", "/v1/Accounts", map[string]any{"name": realm, "service_provider_sid": in.spSID, "sip_realm": realm}, 201, &a)
	var k struct{ Token string }
	in.call(in.adminKey, "POST", "/v1/ApiKeys", map[string]any{"account_sid": a.Sid}, 201, &k)
	return a.Sid, k.Token
}

// call does a REST request, checks the status and decodes the answer into out.
func (in *instance) call(key, method, path string, body any, wantStatus int, out any) []byte {
	in.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, in.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		in.t.Fatalf("%s %s: got %d %s, want %d", method, path, resp.StatusCode, b, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			in.t.Fatalf("%s %s: answer %s: %v", method, path, b, err)
		}
	}
	return b
}

// register writes a registration exactly as a jambonz SBC does.
func (in *instance) register(user, realm, protocol string, expires time.Duration) int64 {
	in.t.Helper()
	exp, err := store.RegisterAsSBC(context.Background(), in.rdb, user, realm, store.SBCRecord{
		Contact: "sip:" + user + "@192.168.1.50:5060;transport=" + protocol, SBCAddress: "198.51.100.1:5060",
		PrivateSBCAddress: "10.0.0.5:5060", Protocol: protocol, Proxy: "sip:203.0.113.9:" + fmt.Sprint(40000+len(user)),
		CallHook: "https://hooks.example.com/call", AllowDirectApp: true, AllowDirectUser: true,
	}, expires)
	if err != nil {
		in.t.Fatalf("register %s@%s: %v", user, realm, err)
	}
	return exp
}

func (in *instance) unregister(user, realm string) {
	in.t.Helper()
	if err := store.UnregisterAsSBC(context.Background(), in.rdb, user, realm); err != nil {
		in.t.Fatalf("unregister %s@%s: %v", user, realm, err)
	}
}

// eventually polls cond until it holds or the timeout passes.
func (in *instance) eventually(what string, timeout time.Duration, cond func() bool) {
	in.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			in.t.Fatalf("%s: not true within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (in *instance) wsURL() string { return "ws" + strings.TrimPrefix(in.url, "http") + "/v1/stream" }

// redisUsers returns the users of realm that Redis holds now.
func (in *instance) redisUsers(realm string) map[string]bool {
	in.t.Helper()
	keys, err := in.rdb.Keys(context.Background(), "user:*@"+realm).Result()
	if err != nil {
		in.t.Fatalf("redis keys: %v", err)
	}
	out := map[string]bool{}
	for _, k := range keys {
		out[strings.TrimSuffix(strings.TrimPrefix(k, "user:"), "@"+realm)] = true
	}
	return out
}
