package benchkit

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseMetric finds the value of an unlabelled sample in Prometheus text.
func ParseMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not found", name)
}
