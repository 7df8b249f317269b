//go:build !race

package api_test

// raceEnabled: the race detector is on (its instrumented frames are larger).
const raceEnabled = false
