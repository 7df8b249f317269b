package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

// hostile is what "bench stream --hostile" adds to a run: one tenant's key
// doing what issue #9 found (finding 2: one socket that never reads sends
// 300 subscribes of 8,000-name watchlists; finding 5: 2,000 random bearer
// tokens, fast), while the well-behaved subscribers are measured.
type hostile struct {
	srv   *benchServer
	token string // the hostile tenant's account key
	acct  string // its account

	// results of the last run
	subscribesSent int
	subscribeErr   string
	statuses       map[int]int // answers to the random tokens
	peakRSS        int64
}

// hostileKey creates the hostile tenant's key: an account key of accts[0].
func (b *bench) hostileKey(ctx context.Context, srv *benchServer, acct benchAccount) (*hostile, error) {
	var k struct{ SID, Token string }
	if err := b.api(ctx, srv, "POST", "/v1/ApiKeys", map[string]string{"account_sid": acct.sid}, &k, http.StatusCreated); err != nil {
		return nil, fmt.Errorf("create the hostile key: %w", err)
	}
	return &hostile{srv: srv, token: k.Token, acct: acct.sid}, nil
}

// run attacks until ctx is done, sampling the server's RSS every 100 ms.
func (h *hostile) run(ctx context.Context, client *http.Client) {
	h.statuses = map[int]int{}
	h.subscribesSent, h.subscribeErr, h.peakRSS = 0, "", h.srv.rss()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // RSS
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				h.peakRSS = max(h.peakRSS, h.srv.rss())
			}
		}
	}()
	go func() { // finding 2: a socket that never reads
		defer wg.Done()
		ws, err := benchkit.DialWS("ws"+strings.TrimPrefix(h.srv.url, "http")+"/v1/stream", nil,
			http.Header{"Authorization": {"Bearer " + h.token}}, 10*time.Second)
		if err != nil {
			h.subscribeErr = err.Error()
			return
		}
		defer ws.Close()
		var names strings.Builder
		for i := range 8000 {
			if i > 0 {
				names.WriteByte(',')
			}
			fmt.Fprintf(&names, `"x%05d"`, i)
		}
		for i := range 300 {
			if ctx.Err() != nil {
				return
			}
			frame := fmt.Sprintf(`{"type":"subscribe","id":"h%d","account_sid":%q,"users":[%s]}`, i, h.acct, names.String())
			if err := ws.WriteText([]byte(frame)); err != nil {
				h.subscribeErr = err.Error()
				return
			}
			h.subscribesSent++
		}
		<-ctx.Done() // hold the socket, never read
	}()
	go func() { // finding 5: 2,000 random tokens, 50 at a time
		defer wg.Done()
		var mu sync.Mutex
		var next atomic.Int64
		var inner sync.WaitGroup
		for range 50 {
			inner.Add(1)
			go func() {
				defer inner.Done()
				for next.Add(1) <= 2000 && ctx.Err() == nil {
					var b [24]byte
					_, _ = rand.Read(b[:])
					req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.url+"/v1/Accounts", nil)
					req.Header.Set("Authorization", "Bearer ph_"+hex.EncodeToString(b[:]))
					status := 0
					if resp, err := client.Do(req); err == nil {
						status = resp.StatusCode
						resp.Body.Close()
					}
					mu.Lock()
					h.statuses[status]++
					mu.Unlock()
				}
			}()
		}
		inner.Wait()
	}()
	wg.Wait()
}

func (h *hostile) String() string {
	s := fmt.Sprintf("hostile: %d of 300 subscribes sent on a socket that never reads", h.subscribesSent)
	if h.subscribeErr != "" {
		s += " (then: " + h.subscribeErr + ")"
	}
	return s + fmt.Sprintf("; random tokens answered %v; server RSS peak %.0f MiB", h.statuses, float64(h.peakRSS)/(1<<20))
}
