package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

const benchRESTHelp = `REST reads of the registrations of one account holding --users registered
users, at --concurrency concurrent keep-alive connections (the project's own
load generator): POST …/RegisteredSipUsers with --names random usernames,
GET …/RegisteredSipUsers (the list) and GET …/RegisteredSipUsers/{name}.
Each endpoint runs --warmup, then --duration measured, --runs times; the
table shows requests/s, p50 and p99 latency and the server's CPU.

Targets: POST-100 ≥ 6,000 req/s, GET list ≥ 2,000 req/s, GET single ≥ 20,000
req/s (jambonz: 305, 40, 920). The load generator shares the machine with the
server, so on a small machine it takes part of the CPU the server could use.

Short form: 4s per endpoint and run. Long form (--long): 30s, 3s warm-up.`

func benchREST(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("rest", benchRESTHelp, getenv, stdout, stderr)
	users := fs.Int("users", 10000, "registered users of the account")
	names := fs.Int("names", 100, "usernames per POST")
	conc := fs.Int("concurrency", 50, "concurrent connections")
	dur := fs.Duration("duration", 4*time.Second, "measured time per endpoint and run")
	warm := fs.Duration("warmup", time.Second, "load before each measurement, not counted")
	gen := fs.String("generator", "go", "load generator: go (the project's own, net/http client) or wrk (Debian's wrk, much lighter on CPU)")
	reference := fs.Bool("reference", true, "after each run of an endpoint, the same load against a do-nothing net/http handler (a process of its own) that answers with the bytes presencehub answered: the in-run reference, and presencehub's requests/s as a ratio of it")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"duration": "30s", "warmup": "3s"}); err != nil {
		return err
	}
	if *users < 1 || *names < 1 || *conc < 1 || *dur <= 0 || *warm < 0 {
		return fmt.Errorf("--users, --names, --concurrency and --duration must be positive")
	}
	if *gen != "go" && *gen != "wrk" {
		return fmt.Errorf("--generator %q: want go or wrk", *gen)
	}
	if *gen == "wrk" {
		if _, err := exec.LookPath("wrk"); err != nil {
			return fmt.Errorf("--generator wrk needs wrk: apt-get install wrk")
		}
	}
	defer b.finish()
	srv, acct, err := b.serverWithAccount(ctx)
	if err != nil {
		return err
	}
	aors := make([]benchAOR, *users)
	for i := range aors {
		aors[i] = benchAOR{fmt.Sprintf("user%05d", i+1), acct.realm}
	}
	b.logf("registering %d users in %s", *users, acct.realm)
	if err := b.registerAll(ctx, aors, time.Hour); err != nil {
		return err
	}
	path := "/v1/Accounts/" + acct.sid + "/RegisteredSipUsers"
	base := srv.url + path
	if err := b.waitListed(ctx, base, *users); err != nil {
		return err
	}

	// Bodies and paths are made up front so the load loop only sends.
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make([][]byte, 64)
	for i := range bodies {
		ns := make([]string, *names)
		for j := range ns {
			ns[j] = aors[rng.IntN(len(aors))].user
		}
		bodies[i], _ = json.Marshal(ns)
	}
	auth := "Bearer " + b.key
	// Each request maker takes the server's URL: presencehub's, or the
	// reference's.
	endpoints := []struct {
		name   string
		target float64
		req    func(r *rand.Rand, url string) *http.Request
		wrk    func(r *rand.Rand) benchkit.WrkRequest
	}{
		{fmt.Sprintf("POST %d names", *names), 6000, func(r *rand.Rand, url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(bodies[r.IntN(len(bodies))]))
			req.Header.Set("Content-Type", "application/json")
			return req
		}, func(r *rand.Rand) benchkit.WrkRequest {
			return benchkit.WrkRequest{Method: "POST", Path: path, Body: string(bodies[r.IntN(len(bodies))])}
		}},
		{"GET list", 2000, func(r *rand.Rand, url string) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+path, nil)
			return req
		}, func(r *rand.Rand) benchkit.WrkRequest { return benchkit.WrkRequest{Method: "GET", Path: path} }},
		{"GET single", 20000, func(r *rand.Rand, url string) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, url+path+"/"+aors[r.IntN(len(aors))].user, nil)
			return req
		}, func(r *rand.Rand) benchkit.WrkRequest {
			return benchkit.WrkRequest{Method: "GET", Path: path + "/" + aors[r.IntN(len(aors))].user}
		}},
	}
	wrkDir, err := os.MkdirTemp("", "presencehub-wrk")
	if err != nil {
		return err
	}
	defer os.RemoveAll(wrkDir)
	var ref *restReference
	if *reference {
		// The reference answers every request of an endpoint with one
		// answer of presencehub's to it (GET single: one user's).
		var answers [3][]byte
		for i, ep := range endpoints {
			if answers[i], err = b.fetchAnswer(ctx, ep.req(rand.New(rand.NewPCG(1, 2)), srv.url)); err != nil {
				return fmt.Errorf("the answer the REST reference is to serve: %w", err)
			}
		}
		if ref, err = startRESTReference(wrkDir, answers[1], answers[2], answers[0]); err != nil {
			return err
		}
		defer ref.stop()
	}
	hc := &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        *conc + 16,
		MaxIdleConnsPerHost: *conc + 16,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
	defer hc.CloseIdleConnections()
	// measure puts one run of ep's load on target and returns its
	// requests/s, p50 and p99 (ms), the target's CPU (cores) and errors.
	type runResult struct {
		rps, p50, p99, cores float64
		res                  loadResult
		meter                string
	}
	measure := func(target *benchServer, req func(*rand.Rand, string) *http.Request, wrkReq func(*rand.Rand) benchkit.WrkRequest) (runResult, error) {
		var out runResult
		m := b.meter(ctx, target)
		if *gen == "wrk" {
			reqs := benchkit.WrkRequests(256, wrkReq)
			if *warm > 0 {
				if _, err := benchkit.RunWrk(ctx, wrkDir, target.url, auth, reqs, *conc, *warm); err != nil {
					return out, err
				}
			}
			m.start()
			w, err := benchkit.RunWrk(ctx, wrkDir, target.url, auth, reqs, *conc, *dur)
			if err != nil {
				return out, err
			}
			b.stopMeter(m)
			out.rps, out.p50, out.p99 = w.RPS, benchkit.Millis(w.P50), benchkit.Millis(w.P99)
			out.res.errs = w.Non2xx
			if w.Non2xx > 0 {
				out.res.firstErr = w.FirstErr
			}
		} else {
			m.start()
			out.res = loadHTTP(ctx, hc, *conc, *warm, *dur, func(r *rand.Rand) *http.Request {
				req := req(r, target.url)
				req.Header.Set("Authorization", auth)
				return req
			})
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			b.stopMeter(m)
			slices.Sort(out.res.lat)
			out.rps = float64(len(out.res.lat)) / dur.Seconds()
			out.p50 = benchkit.Millis(benchkit.Percentile(out.res.lat, 50))
			out.p99 = benchkit.Millis(benchkit.Percentile(out.res.lat, 99))
		}
		// The CPU is read over warm-up and measurement alike.
		out.cores = m.Server
		out.meter = m.String()
		return out, nil
	}
	for _, ep := range endpoints {
		var rps, p50, p99, cores, refRPS, refCores, ratio, cpuRatio benchkit.Spread
		errs := 0
		var firstErr string
		for run := 1; run <= *b.runs; run++ {
			r, err := measure(srv, ep.req, ep.wrk)
			if err != nil {
				return err
			}
			rps, p50, p99 = append(rps, r.rps), append(p50, r.p50), append(p99, r.p99)
			if srv.pid != 0 {
				cores = append(cores, r.cores)
			}
			errs += r.res.errs
			if firstErr == "" {
				firstErr = r.res.firstErr
			}
			b.logf("%s run %d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors; %s", ep.name, run,
				r.rps, r.p50, r.p99, r.res.errs, r.meter)
			if ref != nil {
				rr, err := measure(ref.server(), ep.req, ep.wrk)
				if err != nil {
					return err
				}
				if rr.res.errs > 0 {
					return fmt.Errorf("the REST reference failed %d requests of %s (%s)", rr.res.errs, ep.name, rr.res.firstErr)
				}
				refRPS, refCores, ratio = append(refRPS, rr.rps), append(refCores, rr.cores), append(ratio, r.rps/rr.rps)
				if r.cores > 0 && rr.cores > 0 && r.rps > 0 && rr.rps > 0 {
					// CPU per request holds its shape on a loaded machine
					// better than requests/s does.
					cpuRatio = append(cpuRatio, (r.cores/r.rps)/(rr.cores/rr.rps))
				}
				b.logf("%s run %d, do-nothing reference: %.0f req/s, p50 %.2f ms, p99 %.2f ms; %s; presencehub ÷ reference %.2f", ep.name, run,
					rr.rps, rr.p50, rr.p99, rr.meter, r.rps/rr.rps)
			}
		}
		b.add(ep.name+": requests/s", rps.Format(benchkit.FmtRate), "≥ "+benchkit.FmtRate(ep.target), benchkit.BoolPtr(rps.Median() >= ep.target))
		if len(ratio) > 0 {
			b.add(ep.name+": requests/s ÷ a do-nothing net/http handler serving the same bytes (same load, same run)",
				fmt.Sprintf("%s (reference %s, its CPU %s)", ratio.Format(fmtRatio), refRPS.Format(benchkit.FmtRate), refCores.Format(benchkit.FmtCores)), "", nil)
		}
		if len(cpuRatio) > 0 {
			b.add(ep.name+": server CPU per request ÷ the do-nothing handler's (same run)", cpuRatio.Format(fmtRatio), "", nil)
		}
		b.add(ep.name+": p50 latency", p50.Format(benchkit.FmtMs), "", nil)
		b.add(ep.name+": p99 latency", p99.Format(benchkit.FmtMs), "", nil)
		if len(cores) > 0 {
			b.add(ep.name+": server CPU", cores.Format(benchkit.FmtCores), "", nil)
		}
		if errs > 0 {
			b.add(ep.name+": failed requests", benchkit.FmtCount(float64(errs))+" ("+firstErr+")", "0", benchkit.BoolPtr(false))
		}
	}
	b.add(fmt.Sprintf("setup: %d users, %d connections, %v per run, generator %s", *users, *conc, *dur, *gen), fmt.Sprintf("%d runs", *b.runs), "", nil)
	return nil
}

// waitListed waits until GET list shows n users (the hub has read them).
func (b *bench) waitListed(ctx context.Context, url string, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+b.key)
		resp, err := b.http.Do(req)
		if err != nil {
			return err
		}
		var list []string
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err == nil && len(list) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server lists %d of %d registered users after 2 minutes", len(list), n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type loadResult struct {
	lat      []time.Duration // of the requests completed in the measured window
	errs     int
	firstErr string
}

// loadHTTP keeps conc requests in flight for warm+dur and returns the
// latencies of the requests that started after the warm-up and ended
// within the measured window. Non-2xx answers and transport errors count
// as errors.
func loadHTTP(ctx context.Context, hc *http.Client, conc int, warm, dur time.Duration, mk func(*rand.Rand) *http.Request) loadResult {
	start := time.Now()
	from, until := start.Add(warm), start.Add(warm+dur)
	ctx, cancel := context.WithDeadline(ctx, until.Add(10*time.Second))
	defer cancel()
	var mu sync.Mutex
	var out loadResult
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			lat := make([]time.Duration, 0, 1<<14)
			errs := 0
			var firstErr string
			for {
				t0 := time.Now()
				if !t0.Before(until) || ctx.Err() != nil {
					break
				}
				req := mk(r).WithContext(ctx)
				resp, err := hc.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode/100 != 2 {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				t1 := time.Now()
				if t0.Before(from) || t1.After(until) {
					continue
				}
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				lat = append(lat, t1.Sub(t0))
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.errs += errs
			if out.firstErr == "" {
				out.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
