package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
	"github.com/presencehub/presencehub/cmd/internal/cli"
)

const benchFloorHelp = `The machine's floor under the stream benchmark: what moving its frames
costs with nothing else. --connections loopback TCP connections carry each
rate of --rates messages per second of --size bytes, round robin; every
message is one write(2) from a goroutine of its own (as the server's
flushes are), read by one goroutine per connection in a second process (as
the benchmark's subscribers are). No websocket, Redis, hub or JSON.

Reported per rate: the CPU of the writing process and of the reading one.
The stream benchmark's server and subscribers carry the same frames, so on
the same machine they cannot go below these numbers; whatever the two
together leave of the cores is what Redis, the hub and websocket framing
may use before latency becomes queueing. Every byte written must arrive.

Short form: 10,000 connections, rates 10,000 and 50,000 messages/s (the
stream benchmark's frames at 1,000 and 5,000 changes/s), 10s per run. Long
form (--long): 30s per run.`

func benchFloor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	b, fs := newBench("floor", benchFloorHelp, getenv, stdout, stderr)
	n := fs.Int("connections", 10000, "loopback TCP connections")
	size := fs.Int("size", 450, "bytes per message (about a change frame)")
	var rates cli.StringList
	fs.Var(&rates, "rates", "messages per second to measure, comma-separated (default 10000,50000)")
	dur := fs.Duration("duration", 10*time.Second, "measured time per run")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if err := setLong(fs, *b.long, map[string]string{"duration": "30s"}); err != nil {
		return err
	}
	rateList, err := parseRates(rates, 10000, 50000)
	if err != nil {
		return err
	}
	if *n < 1 || *size < 1 || *dur <= 0 {
		return errors.New("--connections, --size and --duration must be positive")
	}
	defer b.finish()
	if err := benchkit.NeedFiles(*n); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	reader := exec.Command(exe, "floor-reader", strconv.Itoa(*n), ln.Addr().String())
	reader.Stderr = stderr
	toReader, _ := reader.StdinPipe()
	fromReader, _ := reader.StdoutPipe()
	if err := reader.Start(); err != nil {
		return fmt.Errorf("start the reading process: %w", err)
	}
	defer func() {
		toReader.Close()
		reader.Wait()
	}()
	b.logf("connecting %d connections", *n)
	conns := make([]net.Conn, *n)
	for i := range conns {
		if conns[i], err = ln.Accept(); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	lines := bufio.NewScanner(fromReader)
	if !lines.Scan() || lines.Text() != "connected" {
		return errors.New("the reading process did not connect")
	}

	msg := make([]byte, *size)
	msg[len(msg)-1] = '\n'
	var sent atomic.Int64
	next := 0
	for _, rate := range rateList {
		var wcores, rcores benchkit.Spread
		for run := 1; run <= *b.runs; run++ {
			w0, _ := benchkit.ProcCPU(os.Getpid())
			r0, _ := benchkit.ProcCPU(reader.Process.Pid)
			start := time.Now()
			var wg sync.WaitGroup
			done := 0
			for time.Since(start) < *dur && ctx.Err() == nil {
				due := int(time.Since(start).Seconds() * rate)
				for ; done < due; done++ {
					c := conns[next]
					next = (next + 1) % len(conns)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := c.Write(msg); err == nil {
							sent.Add(1)
						}
					}()
				}
				time.Sleep(time.Millisecond)
			}
			wg.Wait()
			secs := time.Since(start).Seconds()
			w1, _ := benchkit.ProcCPU(os.Getpid())
			r1, _ := benchkit.ProcCPU(reader.Process.Pid)
			wcores = append(wcores, (w1-w0).Seconds()/secs)
			rcores = append(rcores, (r1-r0).Seconds()/secs)
			b.logf("%.0f/s run %d: %d messages; writing process %.2f cores, reading process %.2f cores",
				rate, run, done, wcores[len(wcores)-1], rcores[len(rcores)-1])
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		name := benchkit.FmtCount(rate) + " msgs/s"
		b.add(name+": writing process CPU", wcores.Format(benchkit.FmtCores), "", nil)
		b.add(name+": reading process CPU", rcores.Format(benchkit.FmtCores), "", nil)
	}
	// Every byte written must have arrived: the reader counts them.
	toReader.Close()
	var got int64 = -1
	if lines.Scan() {
		got, _ = strconv.ParseInt(strings.TrimPrefix(lines.Text(), "read "), 10, 64)
	}
	want := sent.Load() * int64(*size)
	b.add("bytes read / written", fmt.Sprintf("%d / %d", got, want), "equal", benchkit.BoolPtr(got == want))
	b.add(fmt.Sprintf("setup: %d connections, %d-byte messages, %v per run", *n, *size, *dur), fmt.Sprintf("%d runs per rate", *b.runs), "", nil)
	return nil
}

// benchFloorReader is the reading process of bench floor: it connects n
// times to addr, says "connected", reads everything until its stdin
// closes, then prints "read <bytes>".
func benchFloorReader(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: presencehub-bench floor-reader <connections> <addr>")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	raddr, err := net.ResolveTCPAddr("tcp", args[1])
	if err != nil {
		return err
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		// Several loopback source addresses: no shortage of ports.
		c, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%8))}, raddr)
		if err != nil {
			return err
		}
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, err := c.Read(buf)
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	fmt.Fprintln(stdout, "connected")
	io.Copy(io.Discard, stdin)
	// Let what is in flight arrive, then end the readers.
	for last := int64(-1); last != total.Load(); {
		last = total.Load()
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	fmt.Fprintf(stdout, "read %d\n", total.Load())
	return nil
}
