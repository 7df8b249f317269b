package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
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
//
// The attacker is a process of its own (presencehub-bench hostile-attack),
// as a real one would be: its frames, requests and garbage then cost the
// measuring process nothing. inProcess runs it inside the bench instead
// (--hostile-in-process), as before, for comparison.
type hostile struct {
	srv       *benchServer
	token     string // the hostile tenant's account key
	acct      string // its account
	inProcess bool

	// results of the last run
	res      attackResult
	peakRSS  int64         // set by the run (the window's RSS peak)
	cpu      time.Duration // the attacking process's CPU (0 in process)
	counters map[string]float64
}

// attackResult is what an attack did, as the attacking process reports it.
type attackResult struct {
	SubscribesSent int         `json:"subscribes_sent"`
	FrameBytes     int         `json:"frame_bytes"`
	SubscribeErr   string      `json:"subscribe_err,omitempty"`
	Statuses       map[int]int `json:"statuses"` // answers to the random tokens (0: no answer)
}

// The hostile watchlist: 8,000 made-up names, 63,999 bytes as a JSON
// array, so that a subscribe frame (~64,070 bytes) fits the server's
// default read limit of 64 KiB and reaches the subscribe code, as the
// issue's 63 KB frames did. (Before, the names were a digit longer: 72 KB
// frames that the read limit refused with 1009 at the first frame.)
const (
	hostileSubscribes = 300
	hostileNames      = 8000
	hostileTokens     = 2000
	hostileParallel   = 50
)

func hostileFrame(i int, acct string, names string) string {
	return fmt.Sprintf(`{"type":"subscribe","id":"h%d","account_sid":%q,"users":[%s]}`, i, acct, names)
}

func hostileWatchlist() string {
	var names strings.Builder
	for i := range hostileNames {
		if i > 0 {
			names.WriteByte(',')
		}
		fmt.Fprintf(&names, `"x%04d"`, i)
	}
	return names.String()
}

// hostileKey creates the hostile tenant's key: an account key of accts[0].
func (b *bench) hostileKey(ctx context.Context, srv *benchServer, acct benchAccount, inProcess bool) (*hostile, error) {
	var k struct{ SID, Token string }
	if err := b.api(ctx, srv, "POST", "/v1/ApiKeys", map[string]string{"account_sid": acct.sid}, &k, http.StatusCreated); err != nil {
		return nil, fmt.Errorf("create the hostile key: %w", err)
	}
	return &hostile{srv: srv, token: k.Token, acct: acct.sid, inProcess: inProcess}, nil
}

// hostileCounters are the server's counters whose growth during the attack
// says what became of it.
var hostileCounters = []string{
	"presencehub_stream_limit_refusals_total",
	"presencehub_stream_rate_limited_total",
	"presencehub_stream_budget_closes_total",
	"presencehub_stream_slow_disconnects_total",
	"presencehub_stream_bad_messages_total",
	"presencehub_http_rate_limited_total",
}

// run attacks until ctx is done.
func (h *hostile) run(ctx context.Context, b *bench) {
	h.res, h.cpu = attackResult{}, 0
	before := map[string]float64{}
	for _, name := range hostileCounters {
		before[name], _ = b.metric(context.Background(), h.srv, name)
	}
	if h.inProcess {
		h.res = attack(ctx, b.http, h.srv.url, h.token, h.acct)
	} else if err := h.runProcess(ctx); err != nil {
		h.res.SubscribeErr = "attacking process: " + err.Error()
	}
	h.counters = map[string]float64{}
	for _, name := range hostileCounters {
		after, _ := b.metric(context.Background(), h.srv, name)
		h.counters[name] = after - before[name]
	}
}

// runProcess runs the attack in "presencehub-bench hostile-attack" until
// ctx is done (its stdin is closed then) and reads its result.
func (h *hostile) runProcess(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "hostile-attack", h.srv.url, h.acct)
	cmd.Env = append(os.Environ(), "PRESENCEHUB_BENCH_HOSTILE_TOKEN="+h.token) // not on the command line
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	h.cpu, _ = benchkit.ProcCPU(cmd.Process.Pid)
	stdin.Close()
	out, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return json.Unmarshal(out, &h.res)
}

// benchHostileAttack is the attacking process of bench stream --hostile:
// it attacks <url> as the key in PRESENCEHUB_BENCH_HOSTILE_TOKEN, on
// account <sid>, until its stdin closes, then prints its attackResult.
func benchHostileAttack(args []string, stdin io.Reader, stdout io.Writer) error {
	token := os.Getenv("PRESENCEHUB_BENCH_HOSTILE_TOKEN")
	if len(args) != 2 || token == "" {
		return errors.New("usage: PRESENCEHUB_BENCH_HOSTILE_TOKEN=<key> presencehub-bench hostile-attack <server url> <account sid>")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(stdin))
		cancel()
	}()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: hostileParallel}, Timeout: 30 * time.Second}
	return json.NewEncoder(stdout).Encode(attack(ctx, client, args[0], token, args[1]))
}

// attack does issue #9's findings 2 and 5 until ctx is done.
func attack(ctx context.Context, client *http.Client, url, token, acct string) attackResult {
	res := attackResult{Statuses: map[int]int{}}
	var wg sync.WaitGroup
	wg.Add(2)
	// The socket is opened first: once the random tokens have emptied the
	// failed-authentication bucket of this address, its upgrade would be
	// refused (429) and the subscribes never sent.
	ws, err := benchkit.DialWS("ws"+strings.TrimPrefix(url, "http")+"/v1/stream", nil,
		http.Header{"Authorization": {"Bearer " + token}}, 10*time.Second)
	if err != nil {
		res.SubscribeErr = err.Error()
	}
	go func() { // finding 2: a socket that never reads
		defer wg.Done()
		if ws == nil {
			return
		}
		defer ws.Close()
		names := hostileWatchlist()
		for i := range hostileSubscribes {
			if ctx.Err() != nil {
				return
			}
			frame := hostileFrame(i, acct, names)
			res.FrameBytes = len(frame)
			if err := ws.WriteText([]byte(frame)); err != nil {
				res.SubscribeErr = err.Error()
				return
			}
			res.SubscribesSent++
		}
		<-ctx.Done() // hold the socket, never read
	}()
	go func() { // finding 5: 2,000 random tokens, 50 at a time
		defer wg.Done()
		var mu sync.Mutex
		var next atomic.Int64
		var inner sync.WaitGroup
		for range hostileParallel {
			inner.Add(1)
			go func() {
				defer inner.Done()
				for next.Add(1) <= hostileTokens && ctx.Err() == nil {
					var b [24]byte
					_, _ = rand.Read(b[:])
					req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/Accounts", nil)
					req.Header.Set("Authorization", "Bearer ph_"+hex.EncodeToString(b[:]))
					status := 0
					if resp, err := client.Do(req); err == nil {
						status = resp.StatusCode
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					mu.Lock()
					res.Statuses[status]++
					mu.Unlock()
				}
			}()
		}
		inner.Wait()
	}()
	wg.Wait()
	return res
}

func (h *hostile) String() string {
	where := "in a process of its own"
	if h.inProcess {
		where = "inside the bench process"
	}
	s := fmt.Sprintf("hostile (%s): %d of %d subscribes of %d bytes sent on a socket that never reads", where, h.res.SubscribesSent, hostileSubscribes, h.res.FrameBytes)
	if h.res.SubscribeErr != "" {
		s += " (then: " + h.res.SubscribeErr + ")"
	}
	s += fmt.Sprintf("; random tokens answered %v; server RSS peak %.0f MiB", h.res.Statuses, float64(h.peakRSS)/(1<<20))
	if h.cpu > 0 {
		s += fmt.Sprintf("; attacker CPU %.2f s", h.cpu.Seconds())
	}
	names := make([]string, 0, len(h.counters))
	for name := range h.counters {
		names = append(names, name)
	}
	sort.Strings(names)
	s += "; server counters during the attack:"
	for _, name := range names {
		s += fmt.Sprintf(" %s +%.0f", strings.TrimPrefix(name, "presencehub_"), h.counters[name])
	}
	return s
}
