package benchkit

import "time"

// LongestPause returns the longest pause between two consecutive times of
// times (sorted) within [from, to], the time before from counting as the
// start of a pause that ends inside, and where that pause began and ended.
// It is zero when fewer than two times fall in or around the window.
func LongestPause(times []time.Time, from, to time.Time) (d time.Duration, start, end time.Time) {
	var prev time.Time
	for _, at := range times {
		if at.Before(from) {
			prev = at
			continue
		}
		if at.After(to) {
			break
		}
		if !prev.IsZero() && at.Sub(prev) > d {
			d, start, end = at.Sub(prev), prev, at
		}
		prev = at
	}
	return d, start, end
}
