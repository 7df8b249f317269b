// Command presencehub-bench runs presencehub's benchmarks: each starts the
// product binary ("presencehub serve") as a child process, loads it, measures
// it from /proc and prints one table. "make bench" runs every short form.
package main

import (
	"context"
	"io"
	"os"

	"github.com/presencehub/presencehub/cmd/internal/cli"
)

func main() { cli.Main("presencehub-bench", run) }

const benchUsage = `Usage: presencehub-bench <name> [flags]

Benchmarks (each has a short form, the default, and a long form with --long;
every size is also a flag: presencehub-bench <name> --help):
  rest     REST reads on an account of 10,000 registered users at 50 concurrent
           connections: POST 100 names, GET list, GET single (req/s, p50, p99)
  stream   websocket fan-out of changes written into Redis as an SBC does:
           write-to-frame latency, deliveries/s, loss, server CPU and RSS,
           at 1,000 and 5,000 changes/s
  idle     server memory per idle websocket connection (10,000 connections)
  resync   cold start to /readyz with 100,000 registrations in Redis, and the
           resync after the Redis subscription is killed
  expiry   delay from a registration's expiryTime to the "expired" event at a
           subscriber, next to Redis's own "expired" notification
  history  the registration history's cost: history on versus off in the same
           window (subscribers' p99, server CPU, rows written per change), and
           RegistrationHistory, chart and flapping query times on 1,000,000
           bulk-loaded sessions with their EXPLAIN (ANALYZE, BUFFERS)
  failover Redis Sentinel failover as the stream's subscribers see it: the
           longest pause between change frames, next to the writer's own,
           and every subscriber and REST equal to the new master afterwards
           (builds its own master, replica and three Sentinels)
  cluster  the cluster's shared log: Redis memory per million changes, append
           rate, a replica's cold start on a log of 1,000,000 entries (not in
           make bench's default set: .ci/bench.sh cluster)
  floor    the machine's floor under "stream": the CPU of moving as many
           messages over as many loopback TCP connections, with no websocket,
           Redis or hub (needs no Redis, PostgreSQL or server)

Each benchmark starts "presencehub serve" (--server-bin: by default the
presencehub binary next to this one, else the one on PATH) as a child process on
a loopback port, so that its CPU and memory can be measured from /proc, and
stops it at the end; with --server-url (and --server-pid) it uses a running
server instead. Accounts are created through the REST API with an admin key
(--admin-key, or one made in the database and deleted afterwards) and deleted
at the end; registrations are written into Redis as an SBC writes them and
removed at the end. Everything is on loopback and stops by itself.

The result is a table (benchmark | metric | value | target | ok); a value is
the median of --runs runs with the spread (min–max) in brackets. Linux only
(/proc). "make bench" runs every short form and prints one table.
`

// run is the whole program; main only calls it, tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return cli.Program{Name: "presencehub-bench", Usage: benchUsage, What: "benchmark", Commands: map[string]cli.Command{
		"rest":   benchREST,
		"stream": benchStream,
		"idle":   benchIdle,
		"floor":  benchFloor,
		"floor-reader": func(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
			return benchFloorReader(args, os.Stdin, stdout) // the second process of "bench floor"
		},
		"rest-reference": func(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
			return benchRESTReference(args, os.Stdin, stdout) // the REST benchmark's do-nothing handler, a process of its own
		},
		"hostile-attack": func(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
			return benchHostileAttack(args, os.Stdin, stdout) // the attacker of "bench stream --hostile", a process of its own
		},
		"resync":   benchResync,
		"expiry":   benchExpiry,
		"history":  benchHistory,
		"failover": benchFailover,
		"cluster":  benchCluster,
	}}.Run(ctx, args, getenv, stdout, stderr)
}
