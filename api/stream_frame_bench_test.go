package api

import (
	"fmt"
	"strings"
	"testing"
)

func hostileTestFrame() []byte {
	var b strings.Builder
	b.WriteString(`{"type":"subscribe","id":"h1","account_sid":"` + sidA + `","users":[`)
	for i := range 8000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"x%04d"`, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkParseClientFrame8000 is the cost of a subscribe frame of 8,000
// names that the connection's caps refuse: parsed, names counted, not
// decoded (issue #9's hostile key sends 300 of them).
func BenchmarkParseClientFrame8000(b *testing.B) {
	frame := hostileTestFrame()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ferr := parseClientFrame(frame); ferr != nil {
			b.Fatal(ferr)
		}
	}
}

// BenchmarkDecodeUsers8000 is the decode a subscribe that passed the
// checks adds.
func BenchmarkDecodeUsers8000(b *testing.B) {
	frame := hostileTestFrame()
	f, _ := parseClientFrame(frame)
	b.ReportAllocs()
	for b.Loop() {
		if _, ferr := f.users(); ferr != nil {
			b.Fatal(ferr)
		}
	}
}
