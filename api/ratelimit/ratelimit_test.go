package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr bool
	}{
		{"20:40", Spec{20, 40}, false},
		{"0.5:3", Spec{0.5, 3}, false},
		{"10", Spec{10, 10}, false},
		{"0", Spec{0, 1}, false},
		{"0.2", Spec{0.2, 1}, false},
		{"", Spec{}, true},
		{"-1:3", Spec{}, true},
		{"5:0", Spec{}, true},
		{"5:x", Spec{}, true},
		{"NaN", Spec{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSpec(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("ParseSpec(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAllowBurstThenRetryAfter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Spec{Rate: 2, Burst: 3}, 10)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if d := l.Allow("k"); !d.OK || d.Remaining != 2-i {
			t.Fatalf("request %d: got %+v, want allowed with %d left", i, d, 2-i)
		}
	}
	d := l.Allow("k")
	if d.OK || d.RetryAfter != 500*time.Millisecond {
		t.Fatalf("4th request: got %+v, want refused, retry after 500ms", d)
	}
	h := http.Header{}
	d.SetHeaders(h)
	for k, want := range map[string]string{"Retry-After": "1", "RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "1"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if d := l.Allow("other"); !d.OK {
		t.Errorf("another key is limited by k's bucket: %+v", d)
	}
	now = now.Add(500 * time.Millisecond)
	if d := l.Peek("k"); !d.OK {
		t.Errorf("after refill, Peek = %+v", d)
	}
	if d := l.Peek("k"); !d.OK {
		t.Errorf("Peek took a token: %+v", d)
	}
	if d := l.Allow("k"); !d.OK {
		t.Errorf("after refill: %+v", d)
	}
	if d := l.Peek("k"); d.OK {
		t.Errorf("Peek on an empty bucket: %+v", d)
	}
}

func TestDisabled(t *testing.T) {
	var nilLim *Limiter
	for name, l := range map[string]*Limiter{"nil": nilLim, "zero rate": New(Spec{}, 1)} {
		for range 100 {
			if d := l.Allow("k"); !d.OK || !d.Disabled {
				t.Fatalf("%s: %+v", name, d)
			}
		}
		h := http.Header{}
		l.Allow("k").SetHeaders(h)
		if len(h) != 0 {
			t.Errorf("%s: headers %v", name, h)
		}
	}
}

// TestKeysBounded: a flood of distinct keys never grows the map past its cap.
func TestKeysBounded(t *testing.T) {
	l := New(Spec{Rate: 1, Burst: 5}, 1000)
	for i := range 100_000 {
		l.Allow(fmt.Sprint("ip-", i))
		if n := l.Len(); n > 1000 {
			t.Fatalf("after %d keys the limiter tracks %d, cap 1000", i+1, n)
		}
	}
	// A key in use keeps its empty bucket across evictions of idle keys.
	l = New(Spec{Rate: 0.001, Burst: 1}, 10)
	l.Allow("hot")
	for i := range 9 {
		l.Allow(fmt.Sprint("idle-", i))
	}
	if l.Allow("hot").OK {
		t.Fatal("hot key allowed twice")
	}
}

func TestClientIP(t *testing.T) {
	ps, err := ParseProxies("10.0.0.0/8, 192.0.2.7 ,::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ps     Proxies
		remote string
		xff    []string
		want   string
	}{
		{"no proxies: header ignored", nil, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer: header ignored", ps, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"trusted peer", ps, "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed left part is not believed", ps, "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", ps, "10.1.2.3:4000", []string{"198.51.100.1, 192.0.2.7", "10.9.9.9"}, "198.51.100.1"},
		{"trusted peer without header", ps, "10.1.2.3:4000", nil, "10.1.2.3"},
		{"garbage stops the walk", ps, "10.1.2.3:4000", []string{"198.51.100.1, nonsense"}, "10.1.2.3"},
		{"IPv4-mapped peer", ps, "[::ffff:10.1.2.3]:4000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"IPv6 loopback proxy", ps, "[::1]:4000", []string{"2001:db8::1"}, "2001:db8::1"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tt.ps.ClientIP(r); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
	if _, err := ParseProxies("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}
