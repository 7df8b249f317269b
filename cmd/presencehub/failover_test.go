package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehub/presencehub/api/client"
	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/store"
	"github.com/presencehub/presencehub/store/storetest"
)

// changeClock notes when a subscriber received each change frame.
type changeClock struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *changeClock) add(at time.Time) {
	c.mu.Lock()
	c.times = append(c.times, at)
	c.mu.Unlock()
}

// TestSentinelFailoverEndToEnd: serve follows jambonz's Redis behind three
// Sentinels (master, replica without keyspace notifications); live
// subscribers (the Go client) watch an account while an SBC-like writer
// changes its registrations at a nominal 500/s (new contacts, and every
// seventh write an unregister) through a Sentinel-aware client. SENTINEL
// FAILOVER promotes the replica while the writes go on. Afterwards every
// subscriber's map and the REST RegisteredSipUsers answer equal the new
// master's registrations (name and contact): nothing final is lost. The
// failover time as a subscriber sees it (the longest pause between two
// change frames around the failover) is logged with the writer's own
// longest pause between two successful writes, its in-run reference: no
// change can reach anyone while there is no master to write to.
func TestSentinelFailoverEndToEnd(t *testing.T) {
	ctx := context.Background()
	set := storetest.StartSentinelSet(t)
	in := startInstanceEnv(t, map[string]string{
		"PRESENCEHUB_REDIS_URL":                     set.Master.URL, // the database number; the Sentinels name the host
		"PRESENCEHUB_REDIS_SENTINELS":               strings.Join(set.Sentinels, ","),
		"PRESENCEHUB_REDIS_SENTINEL_MASTER":         storetest.SentinelMaster,
		"PRESENCEHUB_REDIS_CONFIGURE_NOTIFICATIONS": "true", // the promoted replica lacks them
	})
	const realm = "failover.example.com"
	acct, key := in.account(realm)

	const subscribers = 4
	subs := make([]*client.Sub, subscribers)
	clocks := make([]*changeClock, subscribers)
	cctx, stopClients := context.WithCancel(ctx)
	var clientsDone sync.WaitGroup
	defer func() { stopClients(); clientsDone.Wait() }()
	for i := range subscribers {
		clk := &changeClock{}
		clocks[i] = clk
		c := client.New(client.Options{URL: in.wsURL(), Token: key, Logger: slog.New(slog.DiscardHandler),
			OnFrame: func(f *client.Frame, at time.Time) {
				if f.Type == "change" {
					clk.add(at)
				}
			}})
		subs[i] = c.Subscribe("f", acct)
		clientsDone.Add(1)
		go func() { defer clientsDone.Done(); _ = c.Run(cctx) }()
		select {
		case <-subs[i].Synced():
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber %d: no snapshot within 10s", i)
		}
	}

	// The writer, as an SBC behind Sentinel: 200 users, a new contact on
	// every write, an unregister every seventh; a write that fails while
	// the master changes is retried.
	wc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: storetest.SentinelMaster, SentinelAddrs: set.Sentinels})
	defer wc.Close()
	var writeTimes []time.Time // of successful writes; the writer's only
	stopWriting := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stopWriting:
				return
			case <-tick.C:
			}
			user := fmt.Sprintf("u%03d", n%200)
			for {
				c, cancel := context.WithTimeout(ctx, time.Second)
				var err error
				if n%7 == 6 {
					err = store.UnregisterAsSBC(c, wc, user, realm)
				} else {
					_, err = store.RegisterAsSBC(c, wc, user, realm, store.SBCRecord{
						Contact: fmt.Sprintf("sip:%s@10.0.0.1:%d", user, 10000+n), Protocol: "udp", Proxy: "sip:203.0.113.9:5060",
					}, time.Hour)
				}
				cancel()
				if err == nil {
					writeTimes = append(writeTimes, time.Now())
					break
				}
				select {
				case <-stopWriting:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	}()

	time.Sleep(2 * time.Second)
	failoverAt := set.Failover(t)
	promotedAt := time.Now()
	time.Sleep(3 * time.Second) // changes after the failover
	close(stopWriting)
	<-writerDone

	// The new master's registrations, read directly.
	nm := set.Replica.Client(t)
	want := map[string]string{} // user -> contact
	keys, err := nm.Keys(ctx, "user:*@"+realm).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, err := nm.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var rec struct{ Contact string }
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		want[strings.TrimSuffix(strings.TrimPrefix(k, "user:"), "@"+realm)] = rec.Contact
	}
	if len(want) < 100 {
		t.Fatalf("the new master holds %d users, want most of the 200", len(want))
	}
	diff := func(got map[string]string) string {
		var d []string
		for u, c := range want {
			if got[u] != c {
				d = append(d, fmt.Sprintf("%s: %q, master %q", u, got[u], c))
			}
		}
		for u := range got {
			if _, ok := want[u]; !ok {
				d = append(d, u+": not on the master")
			}
		}
		sort.Strings(d)
		if len(d) > 5 {
			d = append(d[:5], fmt.Sprintf("… %d in all", len(d)))
		}
		return strings.Join(d, "; ")
	}
	subState := func(s *client.Sub) map[string]string {
		out := map[string]string{}
		for name, u := range s.State() {
			if u.Contact != nil {
				out[name] = *u.Contact
			} else {
				out[name] = ""
			}
		}
		return out
	}
	restState := func() map[string]string {
		var users []struct {
			Name    string  `json:"name"`
			Contact *string `json:"contact"`
		}
		in.call(key, "POST", "/v1/Accounts/"+acct+"/RegisteredSipUsers", []string{}, 200, &users)
		out := map[string]string{}
		for _, u := range users {
			if u.Contact != nil {
				out[u.Name] = *u.Contact
			}
		}
		// The GET list names the same users.
		var list []string
		in.call(key, "GET", "/v1/Accounts/"+acct+"/RegisteredSipUsers", nil, 200, &list)
		for _, aor := range list {
			if _, ok := out[strings.TrimSuffix(aor, "@"+realm)]; !ok {
				out[strings.TrimSuffix(aor, "@"+realm)] = "(in the GET list only)"
			}
		}
		if len(list) != len(users) {
			out["(GET list)"] = fmt.Sprintf("%d users, POST %d", len(list), len(users))
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var bad []string
		if d := diff(restState()); d != "" {
			bad = append(bad, "REST: "+d)
		}
		for i, s := range subs {
			if d := diff(subState(s)); d != "" {
				bad = append(bad, fmt.Sprintf("subscriber %d: %s", i, d))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the writes stopped, not equal to the new master's %d registrations:\n%s", len(want), strings.Join(bad, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cfg, _ := nm.ConfigGet(ctx, "notify-keyspace-events").Result(); cfg["notify-keyspace-events"] == "" {
		t.Errorf("the new master's notify-keyspace-events were not configured")
	}

	// What each subscriber saw around the failover.
	from, to := failoverAt.Add(-time.Second), promotedAt.Add(2*time.Second)
	writerPause, ws, we := benchkit.LongestPause(writeTimes, from, to)
	var pauses []time.Duration
	for i, clk := range clocks {
		clk.mu.Lock()
		d, start, end := benchkit.LongestPause(clk.times, from, to)
		clk.mu.Unlock()
		gaps, resumes, snaps := subs[i].Stats()
		t.Logf("subscriber %d: longest pause between change frames %v (from %v to %v after SENTINEL FAILOVER); gaps %d, resumes %d, snapshots %d",
			i, d.Round(time.Millisecond), start.Sub(failoverAt).Round(time.Millisecond), end.Sub(failoverAt).Round(time.Millisecond), gaps, resumes, snaps)
		pauses = append(pauses, d)
	}
	slices.Sort(pauses)
	writes := len(writeTimes)
	t.Logf("FAILOVER subscribers=%d writes=%d (%.0f/s) users_on_new_master=%d subscriber_pause_median=%v (min %v, max %v) writer_pause=%v (from %v to %v) ratio=%.2f",
		subscribers, writes, float64(writes)/writeTimes[writes-1].Sub(writeTimes[0]).Seconds(), len(want),
		pauses[len(pauses)/2].Round(time.Millisecond), pauses[0].Round(time.Millisecond), pauses[len(pauses)-1].Round(time.Millisecond),
		writerPause.Round(time.Millisecond), ws.Sub(failoverAt).Round(time.Millisecond), we.Sub(failoverAt).Round(time.Millisecond),
		float64(pauses[len(pauses)/2])/float64(max(writerPause, time.Millisecond)))
}
