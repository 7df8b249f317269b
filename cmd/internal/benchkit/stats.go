package benchkit

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Spread holds one metric's value from each run.
type Spread []float64

// Median is the middle value (the mean of the middle two for an even count).
func (s Spread) Median() float64 {
	if len(s) == 0 {
		return 0
	}
	v := slices.Clone([]float64(s))
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Format shows the median and, over several runs, the min–max spread, with
// f formatting one number.
func (s Spread) Format(f func(float64) string) string {
	if len(s) == 0 {
		return "n/a"
	}
	out := f(s.Median())
	if len(s) > 1 {
		out += " (" + f(slices.Min(s)) + "–" + f(slices.Max(s)) + ")"
	}
	return out
}

// FmtRate formats a rate per second: 6,543/s.
func FmtRate(v float64) string { return GroupThousands(int64(v+0.5)) + "/s" }

// FmtCount formats a count with thousands separators.
func FmtCount(v float64) string {
	return GroupThousands(int64(v + 0.5))
}

// FmtCores formats CPU use in cores.
func FmtCores(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " cores" }

// FmtMiB formats bytes in MiB.
func FmtMiB(v float64) string { return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB" }

// FmtKiB formats bytes in KiB.
func FmtKiB(v float64) string { return strconv.FormatFloat(v/(1<<10), 'f', 1, 64) + " KiB" }

// FmtMs formats a duration given in milliseconds.
func FmtMs(v float64) string {
	switch {
	case v >= 10000:
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + " s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
}

// GroupThousands formats n with a comma every three digits.
func GroupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// BoolPtr returns a pointer to v (Table.Add takes whether a target was met).
func BoolPtr(v bool) *bool { return &v }

// Millis is d in (fractional) milliseconds.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of sorted values by
// the nearest-rank method.
func Percentile[T int64 | float64 | time.Duration](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
