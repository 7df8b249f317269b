package benchkit

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 4s test @ http://127.0.0.1:8080
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms    2.01ms  40.00ms   93.00%
    Req/Sec    12.00k     1.00k   14.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    2.00ms
     99%   11.50ms
  96000 requests in 4.00s, 30.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  23999.50
Transfer/sec:      7.50MB
`
	got, err := ParseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{RPS: 23999.5, P50: 812 * time.Microsecond, P99: 11500 * time.Microsecond, Non2xx: 3}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := ParseWrk("garbage"); err == nil {
		t.Errorf("parseWrk of garbage gave no error")
	}
}
