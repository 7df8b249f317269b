package benchkit

import "sync"

// TailBuffer keeps the last Max bytes written to it; safe for concurrent
// writers (a server's log).
type TailBuffer struct {
	mu  sync.Mutex
	Max int // bytes kept
	buf []byte
}

// Write keeps the last Max bytes of what was written so far.
func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns the bytes kept.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
