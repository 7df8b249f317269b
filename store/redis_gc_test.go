package store

import (
	"runtime/debug"
	"testing"
)

// TestRaiseGCPercent: loads raise the GC percentage while any runs and put
// back the one they found; a GOGC already higher, or off, is left alone.
func TestRaiseGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, tc := range []struct {
		name         string
		before, want int
	}{
		{"default", 100, redisLoadGCPercent},
		{"lower", 50, redisLoadGCPercent},
		{"higher", 800, 800},
		{"off", -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(tc.before)
			r1 := raiseGCPercent()
			r2 := raiseGCPercent() // a second load at the same time
			if got := debug.SetGCPercent(-1); got != tc.want {
				t.Errorf("during two loads: GC percent %d, want %d", got, tc.want)
			}
			debug.SetGCPercent(tc.want)
			r1()
			r1() // a second call does nothing
			if got := debug.SetGCPercent(-1); got != tc.want {
				t.Errorf("one load still running: GC percent %d, want %d", got, tc.want)
			}
			debug.SetGCPercent(tc.want)
			r2()
			if got := debug.SetGCPercent(tc.before); got != tc.before {
				t.Errorf("after the loads: GC percent %d, want %d", got, tc.before)
			}
		})
	}
}
