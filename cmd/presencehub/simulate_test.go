package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencehub/presencehub/store/storetest"
)

// TestSimulateWritesLikeAnSBC runs "presencehub simulate" against a real
// redis-server for about two seconds and checks that Redis holds what a
// jambonz SBC writes: user:<user>@<realm> strings with the SBC's JSON and a
// TTL, indexed in the active-user sorted set by expiryTime.
func TestSimulateWritesLikeAnSBC(t *testing.T) {
	srv := storetest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	realms := []string{demoRealm, "other.example.com"}
	var stdout, stderr bytes.Buffer
	args := []string{"simulate", "--redis-url", srv.URL,
		"--realm", realms[0], "--realm", realms[1], "--users", "12",
		"--rate", "40", "--duration", "2s", "--seed", "7",
		"--min-expires", "30s", "--max-expires", "300s", "--burst", "10", "--report", "500ms"}
	if err := run(ctx, args, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("simulate: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())

	// The final summary holds the counts; the keys in Redis must agree.
	m := regexp.MustCompile(`(\d+) changes .*registered (\d+), refreshed (\d+), moved (\d+), unregistered (\d+), left to lapse (\d+)`).
		FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no final summary on stdout: %q", stdout.String())
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	if n(1) < 60 {
		t.Errorf("%d changes in 2s at 40/s plus a burst of 10", n(1))
	}
	if n(2) == 0 || n(5) == 0 {
		t.Errorf("no registration or no un-registration in the summary: %s", m[0])
	}
	if !regexp.MustCompile(`(?m)^simulate: [0-9.]+m?s: \d+ changes`).MatchString(stderr.String()) {
		t.Errorf("no periodic summary on stderr")
	}

	keys, err := rdb.Keys(ctx, "user:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no registration in redis")
	}
	members, err := rdb.ZRangeWithScores(ctx, "active-user", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	score := map[string]float64{}
	for _, z := range members {
		score[z.Member.(string)] = z.Score
	}
	seenDemoClient := false
	now := time.Now().UnixMilli()
	for _, key := range keys {
		aor := strings.TrimPrefix(key, "user:")
		at := strings.LastIndexByte(aor, '@')
		user, realm := aor[:at], aor[at+1:]
		if realm != realms[0] && realm != realms[1] {
			t.Errorf("%s: realm not asked for", key)
		}
		if realm == demoRealm && slices.Contains(demoClients, user) {
			seenDemoClient = true
		}
		if realm == realms[1] && !regexp.MustCompile(`^user00(0[1-9]|1[0-2])$`).MatchString(user) {
			t.Errorf("%s: user name not user0001…user0012", key)
		}
		typ, _ := rdb.Type(ctx, key).Result()
		if typ != "string" {
			t.Errorf("%s is a %s, the SBC writes a string", key, typ)
			continue
		}
		val, _ := rdb.Get(ctx, key).Result()
		ttl, _ := rdb.PTTL(ctx, key).Result()
		var rec map[string]any
		if err := json.Unmarshal([]byte(val), &rec); err != nil {
			t.Errorf("%s: value is not JSON: %v", key, err)
			continue
		}
		for _, f := range []string{"contact", "sbcAddress", "privateSbcAddress", "proxy"} {
			if s, _ := rec[f].(string); s == "" {
				t.Errorf("%s: %s missing or not a string in %s", key, f, val)
			}
		}
		if p, ok := rec["protocol"]; ok {
			switch p {
			case "udp", "tcp", "tls", "wss":
			default:
				t.Errorf("%s: protocol %v", key, p)
			}
		} else if !strings.Contains(rec["contact"].(string), "transport=tls") {
			t.Errorf("%s: protocol left out of a non-TLS record: %s", key, val)
		}
		if !strings.HasPrefix(rec["contact"].(string), "sip:") || !regexp.MustCompile(`^sip:\d+\.\d+\.\d+\.\d+:\d+$`).MatchString(rec["proxy"].(string)) {
			t.Errorf("%s: contact/proxy not SIP URIs: %s", key, val)
		}
		for _, f := range []string{"allow_direct_app_calling", "allow_direct_queue_calling", "allow_direct_user_calling"} {
			switch v := rec[f]; v {
			case float64(1), false:
			default:
				t.Errorf("%s: %s = %v, the SBC writes 1 or false", key, f, v)
			}
		}
		exp, ok := rec["expiryTime"].(float64)
		if !ok {
			t.Errorf("%s: no numeric expiryTime: %s", key, val)
			continue
		}
		if ttl <= 0 || ttl > 300*time.Second {
			t.Errorf("%s: TTL %v, want within (0, 300s]", key, ttl)
		}
		// expiryTime = time of the write + expires; the TTL counts down
		// the same expires from the same moment.
		if d := int64(exp) - (now + ttl.Milliseconds()); d < -2000 || d > 2000 {
			t.Errorf("%s: expiryTime %d is %dms off now+TTL", key, int64(exp), d)
		}
		if s, ok := score[key]; !ok || int64(s) != int64(exp) {
			t.Errorf("%s: active-user score %v (present %v), want expiryTime %d", key, s, ok, int64(exp))
		}
	}
	if !seenDemoClient {
		t.Errorf("no demo client (alice, bob, …) of the demo realm is registered; keys: %v", keys)
	}
}

func TestSimulateStopsPromptlyOnCancel(t *testing.T) {
	srv := storetest.StartRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"simulate", "--redis-url", srv.URL, "--rate", "0.2"}, func(string) string { return "" }, &stdout, &stderr)
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("simulate after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("simulate did not stop within 5s of the cancel")
	}
	if !strings.Contains(stdout.String(), "changes") {
		t.Errorf("no final summary: %q", stdout.String())
	}
}

func TestSimulateFlags(t *testing.T) {
	env := func(k string) string {
		if k == "PRESENCEHUB_REDIS_URL" {
			return "redis://127.0.0.1:1/0"
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"simulate", "--help"}, env, &stdout, &stderr); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"-redis-url", "PRESENCEHUB_REDIS_URL", "-realm", "-users", "-rate", "-duration", "-seed", "-min-expires", "-max-expires", "-burst"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
	tests := [][]string{
		{"--rate", "0"},
		{"--users", "0"},
		{"--min-expires", "500ms"},
		{"--min-expires", "60s", "--max-expires", "30s"},
		{"--duration", "-1s"},
	}
	for _, args := range tests {
		stderr.Reset()
		err := run(context.Background(), append([]string{"simulate"}, args...), env, &stdout, &stderr)
		if err == nil {
			t.Errorf("simulate %v: no error", args)
		}
	}
}
