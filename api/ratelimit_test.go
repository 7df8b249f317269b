package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/presencehub/presencehub/api"
	"github.com/presencehub/presencehub/api/ratelimit"
	"github.com/presencehub/presencehub/store"
)

// countingAuth counts token lookups that reach the database.
type countingAuth struct {
	*store.DB
	lookups atomic.Int64
}

func (d *countingAuth) Authenticate(ctx context.Context, token string) (store.Principal, error) {
	d.lookups.Add(1)
	return d.DB.Authenticate(ctx, token)
}

// limitedServer is the fixture's API with lim, trusting the loopback as a
// proxy so that tests can speak for several client IPs.
func limitedServer(t *testing.T, f *fixture, lim api.Limits) (*httptest.Server, *countingAuth) {
	t.Helper()
	auth := &countingAuth{DB: f.db}
	var err error
	if lim.Proxies, err = ratelimit.ParseProxies("127.0.0.1/32, ::1"); err != nil {
		t.Fatal(err)
	}
	opts := dbOptions(f.db)
	opts.Presence, opts.Auth, opts.Limits = f.hub, auth, lim
	srv := httptest.NewServer(api.New(opts))
	t.Cleanup(srv.Close)
	return srv, auth
}

func get(t *testing.T, url, token, ip string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ip != "" {
		req.Header.Set("X-Forwarded-For", ip)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestSprayedTokensMeet429: random tokens from one client IP are refused
// with 429 after the failed-authentication burst, and the refused ones never
// reach the database; a valid key from another IP is unaffected.
func TestSprayedTokensMeet429(t *testing.T) {
	f := newFixture(t)
	srv, dir := limitedServer(t, f, api.Limits{AuthFailures: ratelimit.Spec{Rate: 20, Burst: 20}})
	var unauthorized, limited int
	var first429 int
	for i := range 200 {
		resp := get(t, srv.URL+"/v1/Accounts", fmt.Sprintf("ph_made-up-%d", i), "198.51.100.1")
		switch resp.StatusCode {
		case 401:
			unauthorized++
		case 429:
			if limited == 0 {
				first429 = i
				for _, h := range []string{"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
					if resp.Header.Get(h) == "" {
						t.Errorf("429 without %s", h)
					}
				}
			}
			limited++
		default:
			t.Fatalf("made-up token %d: %d", i, resp.StatusCode)
		}
	}
	if limited == 0 {
		t.Fatalf("200 made-up tokens from one IP: %d × 401, no 429", unauthorized)
	}
	if n := dir.lookups.Load(); n != int64(unauthorized) {
		t.Errorf("%d database lookups for %d answers of 401 (the %d × 429 must cost none)", n, unauthorized, limited)
	}
	t.Logf("first 429 at attempt %d; %d × 401, %d × 429", first429+1, unauthorized, limited)
	if resp := get(t, srv.URL+"/v1/Accounts", f.keys[asAdmin], "198.51.100.2"); resp.StatusCode != 200 {
		t.Errorf("valid key from another IP: %d", resp.StatusCode)
	}
}

// TestUntrustedForwardedForIgnored: without trusted proxies, X-Forwarded-For
// cannot give a sprayer a fresh bucket per request.
func TestUntrustedForwardedForIgnored(t *testing.T) {
	f := newFixture(t)
	opts := dbOptions(f.db)
	opts.Presence, opts.Limits = f.hub, api.Limits{AuthFailures: ratelimit.Spec{Rate: 1, Burst: 5}}
	srv := httptest.NewServer(api.New(opts))
	t.Cleanup(srv.Close)
	limited := 0
	for i := range 50 {
		if get(t, srv.URL+"/v1/Accounts", fmt.Sprintf("ph_x%d", i), fmt.Sprintf("203.0.113.%d", i)).StatusCode == 429 {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("a forged X-Forwarded-For per request escaped the failed-authentication limit")
	}
}

// TestKeyBucket: a key past its bucket gets 429 with the headers; another
// key is not affected; and answers within the limit carry RateLimit-*.
func TestKeyBucket(t *testing.T) {
	f := newFixture(t)
	srv, _ := limitedServer(t, f, api.Limits{PerKey: ratelimit.Spec{Rate: 0.01, Burst: 5}, PerIP: ratelimit.Spec{Rate: 1000, Burst: 1000}})
	for i := range 5 {
		resp := get(t, srv.URL+"/v1/Accounts", f.keys[asOwn], "")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d", i, resp.StatusCode)
		}
		if got, want := resp.Header.Get("RateLimit-Remaining"), fmt.Sprint(4-i); got != want {
			t.Errorf("request %d: RateLimit-Remaining = %q, want %q", i, got, want)
		}
	}
	resp := get(t, srv.URL+"/v1/Accounts", f.keys[asOwn], "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("6th request: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := get(t, srv.URL+"/v1/Accounts", f.keys[asSP], ""); resp.StatusCode != 200 {
		t.Errorf("another key: %d", resp.StatusCode)
	}
}

// TestIPBucket: one client IP is limited across keys.
func TestIPBucket(t *testing.T) {
	f := newFixture(t)
	srv, _ := limitedServer(t, f, api.Limits{PerIP: ratelimit.Spec{Rate: 0.01, Burst: 3}})
	codes := []int{}
	for _, who := range []string{asAdmin, asSP, asOwn, asOther} {
		codes = append(codes, get(t, srv.URL+"/v1/Accounts", f.keys[who], "198.51.100.7").StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 200 429]" {
		t.Errorf("four keys from one IP with a burst of 3: %v", codes)
	}
	if c := get(t, srv.URL+"/v1/Accounts", f.keys[asAdmin], "198.51.100.8").StatusCode; c != 200 {
		t.Errorf("another IP: %d", c)
	}
}

// TestTicketLimits: stream tickets per key are rate limited and capped.
func TestTicketLimits(t *testing.T) {
	f := newFixture(t)
	srv, _ := limitedServer(t, f, api.Limits{Tickets: ratelimit.Spec{Rate: 0.01, Burst: 2}})
	post := func(who string) int {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/StreamTickets", nil)
		req.Header.Set("Authorization", "Bearer "+f.keys[who])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	got := []int{post(asOwn), post(asOwn), post(asOwn), post(asSP)}
	if fmt.Sprint(got) != "[201 201 429 201]" {
		t.Errorf("tickets with a burst of 2: %v, want [201 201 429 201]", got)
	}
	srv2, _ := limitedServer(t, f, api.Limits{TicketsPerKey: 2})
	srv = srv2
	got = []int{post(asOwn), post(asOwn), post(asOwn)}
	if fmt.Sprint(got) != "[201 201 429]" {
		t.Errorf("tickets with a cap of 2 outstanding: %v", got)
	}
}

// downPing is the ping of a database that does not answer, with the error
// text pgx gives (user, database, address).
func downPing(context.Context) error {
	return fmt.Errorf("failed to connect to `user=postgres database=presencehub`: 127.0.0.1:5432 (127.0.0.1): dial error: connection refused")
}

// TestReadyzHidesConnectionErrors: anyone may call /readyz; it says what is
// down, not where or as whom.
func TestReadyzHidesConnectionErrors(t *testing.T) {
	f := newFixture(t)
	opts := dbOptions(f.db)
	opts.Presence, opts.Ping = f.hub, downPing
	opts.Ready = func() []string { return []string{"redis unreachable"} }
	srv := httptest.NewServer(api.New(opts))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "postgres unreachable") || !strings.Contains(string(b), "redis unreachable") {
		t.Errorf("readyz: %d %s", resp.StatusCode, b)
	}
	for _, leak := range []string{"user=", "127.0.0.1", "5432", "database="} {
		if strings.Contains(string(b), leak) {
			t.Errorf("readyz body leaks %q: %s", leak, b)
		}
	}
}
