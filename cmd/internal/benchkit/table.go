package benchkit

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Table is one benchmark's results: rows of metric, value, target and
// whether the target was met.
type Table struct {
	rows []row
}

type row struct {
	metric, value, target, ok string
}

// Add records a row; met is nil when the metric has no target.
func (t *Table) Add(metric, value, target string, met *bool) {
	ok := "-"
	if met != nil {
		ok = "yes"
		if !*met {
			ok = "NO"
		}
	}
	if target == "" {
		target = "-"
	}
	t.rows = append(t.rows, row{metric, value, target, ok})
}

// Print writes the rows with the benchmark's name, as aligned columns under
// a header or, with tsv, as tab-separated lines without one (make bench
// joins those of every benchmark into one table).
func (t *Table) Print(w io.Writer, name string, tsv bool) {
	if len(t.rows) == 0 {
		return
	}
	if tsv {
		for _, r := range t.rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", name, r.metric, r.value, r.target, r.ok)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tmetric\tvalue\ttarget\tok?")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, r.metric, r.value, r.target, r.ok)
	}
	_ = tw.Flush()
}
