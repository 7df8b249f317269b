package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// WrkRequest is one request of a wrk script.
type WrkRequest struct {
	Method, Path, Body string
}

// WrkResult is what wrk reports for one measured run.
type WrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Non2xx   int
	FirstErr string
}

// RunWrk loads url's host with wrk (a C load generator using far less CPU
// than Go's http.Client, which matters when it shares the 2 cores with the
// server): conc connections on 2 threads, cycling through reqs.
func RunWrk(ctx context.Context, dir, host, auth string, reqs []WrkRequest, conc int, dur time.Duration) (WrkResult, error) {
	var sb strings.Builder
	sb.WriteString("local reqs = {\n")
	for _, r := range reqs {
		// The table is built when the script loads, before wrk knows the
		// Host header: give it explicitly.
		fmt.Fprintf(&sb, "  wrk.format(%q, %q, {[\"Host\"] = %q, [\"Authorization\"] = %q, [\"Content-Type\"] = \"application/json\"}, %q),\n",
			r.Method, r.Path, strings.TrimPrefix(strings.TrimPrefix(host, "http://"), "https://"), auth, r.Body)
	}
	sb.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return reqs[(i % #reqs) + 1]\nend\n")
	// The first failed answer is printed, so that errors say what they are.
	sb.WriteString("local shown = false\nresponse = function(status, headers, body)\n  if status >= 300 and not shown then\n    shown = true\n    print(\"FAILED \" .. status .. \" \" .. string.sub(body, 1, 200))\n  end\nend\n")
	script := filepath.Join(dir, "bench.lua")
	if err := os.WriteFile(script, []byte(sb.String()), 0o600); err != nil {
		return WrkResult{}, err
	}
	secs := max(1, int(dur.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, "wrk", "-t2", "-c"+strconv.Itoa(conc), "-d"+strconv.Itoa(secs)+"s", "--latency", "-s", script, host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return ParseWrk(string(out))
}

// ParseWrk reads requests/s, the 50% and 99% latencies and the count of
// non-2xx answers from wrk --latency output.
func ParseWrk(out string) (WrkResult, error) {
	var res WrkResult
	var haveRPS bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return res, fmt.Errorf("wrk requests/sec %q: %v", f[1], err)
			}
			res.RPS, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return res, fmt.Errorf("wrk latency %q: %v", f[1], err)
			}
			if f[0] == "50%" {
				res.P50 = d
			} else {
				res.P99 = d
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			res.Non2xx, _ = strconv.Atoi(f[4])
		case len(f) > 0 && f[0] == "FAILED":
			res.FirstErr = strings.Join(f[1:], " ")
		}
	}
	if !haveRPS {
		return res, fmt.Errorf("no Requests/sec in wrk output: %s", out)
	}
	return res, nil
}

// WrkRequests builds n requests with mk, for a wrk script.
func WrkRequests(n int, mk func(r *rand.Rand) WrkRequest) []WrkRequest {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]WrkRequest, n)
	for i := range out {
		out[i] = mk(r)
	}
	return out
}
