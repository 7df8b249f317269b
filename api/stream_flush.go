package api

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// flushQueue runs connections' flushes on a few worker goroutines instead
// of a goroutine per flush. Under fan-out load nearly every flush is one
// small frame for one socket (at 5,000 changes/s over 10,000 subscribers,
// 50,000 a second, each socket's next frame 200 ms away): starting,
// scheduling and ending a goroutine for each, with the wake-ups of idle
// threads that come with it, cost more than the frame's bookkeeping. A
// worker takes the queued connections one after the other and writes each
// round without waiting (flushInline): when the socket does not take the
// whole round now, or the round needs work that may take long (a snapshot
// to build, a close), the connection goes to a goroutine of its own (flush),
// as before; a worker never blocks on a client. Workers are started when
// connections are queued, at most GOMAXPROCS of them, and end when the
// queue is empty, so an idle server runs none.
type flushQueue struct {
	mu      sync.Mutex
	q       []*streamConn
	head    int
	workers int
	max     int // GOMAXPROCS, read when the first worker starts (reading it takes the scheduler's lock)
}

// push queues sc, whose writing flag the caller has set.
func (f *flushQueue) push(sc *streamConn) {
	f.mu.Lock()
	f.q = append(f.q, sc)
	if f.workers == 0 {
		f.max = runtime.GOMAXPROCS(0)
	}
	start := f.workers < f.max
	if start {
		f.workers++
	}
	f.mu.Unlock()
	if start {
		go f.work()
	}
}

func (f *flushQueue) work() {
	for {
		f.mu.Lock()
		if f.head == len(f.q) {
			f.q, f.head = f.q[:0], 0
			if cap(f.q) > 1<<16 { // a burst's array is not kept
				f.q = nil
			}
			f.workers--
			f.mu.Unlock()
			return
		}
		sc := f.q[f.head]
		f.q[f.head] = nil
		f.head++
		f.mu.Unlock()
		sc.flushInline()
	}
}

// flushInline is a round of flush on a flushQueue worker. More queued
// meanwhile sends the connection to the back of the queue.
func (sc *streamConn) flushInline() {
	sc.pending.Store(false)
	if sc.flushOnce(true) != flushOK {
		return // ending, or handed to a goroutine; writing stays set
	}
	if !sc.pending.Load() {
		sc.writing.Store(false)
		if !sc.pending.Load() || !sc.writing.CompareAndSwap(false, true) {
			return
		}
	}
	sc.s.flushq.push(sc)
}

// finishFlush is the goroutine an inline round handed the connection to:
// it writes the round's frames (or the rest trySend left), then flushes
// as flush does.
func (sc *streamConn) finishFlush(b frameBatch) {
	ok := b.finish()
	b.release()
	if ok {
		sc.flush()
	}
}

// errWouldBlock: the socket would not take a write now.
var errWouldBlock = errors.New("write would block")

// trySend writes bufs (consuming them) as far as the socket takes them now,
// without waiting. err nil: all written. errWouldBlock: some is left; held
// tells that part of it went out, so the frameConn's lock is still held
// (no control frame may come between a frame's parts) and finishSend must
// write the rest; else the lock is free and writeFrames writes it. Another
// error: the write failed. A write under way (a control frame waiting for a
// slow client) is errWouldBlock too.
func (c *frameConn) trySend(bufs *net.Buffers) (held bool, err error) {
	if c.raw == nil || !c.mu.TryLock() {
		return false, errWouldBlock
	}
	if c.closeSent {
		c.mu.Unlock()
		return false, net.ErrClosed
	}
	now := time.Now()
	// A deadline is needed by the rest's write (send), and one that has
	// passed fails the raw write too: move it as send does.
	if c.timeout > 0 && time.Duration(c.deadline-now.UnixNano()) < c.timeout/2 {
		if err := c.setDeadline(now); err != nil {
			c.mu.Unlock()
			return false, err
		}
	}
	var n int
	var werr error
	rerr := c.raw.Write(func(fd uintptr) bool {
		n, werr = rawWrite(fd, *bufs)
		return true // never wait
	})
	if werr == nil {
		werr = rerr
	}
	if n > 0 {
		c.lastWrite.Store(now.UnixNano())
		consume(bufs, n)
	}
	switch {
	case len(*bufs) == 0:
		c.mu.Unlock()
		return false, nil
	case werr != nil && werr != unix.EAGAIN && werr != unix.EINTR:
		c.mu.Unlock()
		return false, werr
	case n > 0:
		return true, errWouldBlock
	default:
		c.mu.Unlock()
		return false, errWouldBlock
	}
}

// finishSend writes the rest a trySend left with the lock held, and
// releases it.
func (c *frameConn) finishSend(bufs *net.Buffers) error {
	defer c.mu.Unlock()
	_, err := c.send(bufs, true)
	return err
}

// rawWrite writes bufs (up to 16 of them: the rest is left for the next
// write) with one write(2) or writev(2), as a raw system call: the
// scheduler is not told that this goroutine enters a system call. The
// socket does not block (Go opens it non-blocking), so the call cannot
// wait; but on loopback the kernel also delivers the bytes to the reader
// inside it, and a write that takes over 20 µs was seen by the runtime's
// sysmon as a P stuck in a system call, which it handed to another
// thread (at 50,000 writes a second, sysmon's wake-ups alone were 6.7%
// of the server's CPU). n is 0 when err is set.
func rawWrite(fd uintptr, bufs [][]byte) (n int, err error) {
	var r uintptr
	var e unix.Errno
	if len(bufs) == 1 && len(bufs[0]) > 0 {
		b := bufs[0]
		r, _, e = unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	} else {
		var iov [16]unix.Iovec
		k := 0
		for _, b := range bufs {
			if k == len(iov) {
				break
			}
			if len(b) > 0 {
				iov[k].Base = &b[0]
				iov[k].SetLen(len(b))
				k++
			}
		}
		if k == 0 {
			return 0, nil
		}
		r, _, e = unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
		runtime.KeepAlive(bufs)
	}
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// consume drops the first n bytes of bufs.
func consume(bufs *net.Buffers, n int) {
	for len(*bufs) > 0 {
		b := (*bufs)[0]
		if n < len(b) {
			(*bufs)[0] = b[n:]
			return
		}
		n -= len(b)
		(*bufs)[0] = nil
		*bufs = (*bufs)[1:]
	}
}
