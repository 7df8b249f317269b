package sbcsim

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestChooseKind(t *testing.T) {
	tests := []struct {
		name                     string
		online, offline, lapsing int
		u                        float64
		want                     Kind
	}{
		{"nobody", 0, 0, 0, 0.5, 0},
		{"only lapsing devices", 0, 0, 5, 0.5, 0},
		{"all offline registers", 0, 10, 0, 0.0, Register},
		{"all offline registers, high u", 0, 10, 0, 0.999, Register},
		// 10 online, 0 offline: weights unregister 5, move 4, vanish 1 of 10.
		{"all online, low u unregisters", 10, 0, 0, 0.0, Unregister},
		{"all online, u below 5/10 unregisters", 10, 0, 0, 0.49, Unregister},
		{"all online, u past 5/10 moves", 10, 0, 0, 0.51, Move},
		{"all online, u below 9/10 moves", 10, 0, 0, 0.89, Move},
		{"all online, u past 9/10 vanishes", 10, 0, 0, 0.91, Vanish},
		// A tenth lapsing already: no more vanishing (5 + 4 of 9).
		{"enough lapsing, no vanish", 9, 0, 1, 0.99, Move},
		{"just under a tenth lapsing, vanish", 10, 0, 1, 0.99, Vanish},
		// 8 online, 2 offline: register 6, unregister 4, move 3.2, vanish 0.8 of 14.
		{"mixed, registers first", 8, 2, 0, 0.42, Register},
		{"mixed, then unregisters", 8, 2, 0, 0.43, Unregister},
		{"mixed, then moves", 8, 2, 0, 0.72, Move},
		{"mixed, vanishes last", 8, 2, 0, 0.95, Vanish},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chooseKind(tt.online, tt.offline, tt.lapsing, tt.u); got != tt.want {
				t.Errorf("chooseKind(%d, %d, %d, %v) = %v, want %v", tt.online, tt.offline, tt.lapsing, tt.u, got, tt.want)
			}
		})
	}
}

func TestPickProtocol(t *testing.T) {
	tests := []struct {
		u    float64
		want string
	}{
		{0, "udp"}, {0.399, "udp"}, {0.40, "tcp"}, {0.549, "tcp"},
		{0.55, "tls"}, {0.699, "tls"}, {0.70, "wss"}, {0.999, "wss"},
	}
	for _, tt := range tests {
		if got := pickProtocol(tt.u); got != tt.want {
			t.Errorf("pickProtocol(%v) = %q, want %q", tt.u, got, tt.want)
		}
	}
}

func TestProtocolField(t *testing.T) {
	tests := []struct {
		proto string
		u     float64
		want  string
	}{
		{"udp", 0.9, "udp"},
		{"tcp", 0.9, "tcp"},
		{"wss", 0.9, "wss"},
		{"tls", 0.1, "tls"}, // one in three TLS records says so
		{"tls", 0.34, ""},   // the others leave it out, as the SBC does
		{"tls", 0.99, ""},
	}
	for _, tt := range tests {
		if got := protocolField(tt.proto, tt.u); got != tt.want {
			t.Errorf("protocolField(%q, %v) = %q, want %q", tt.proto, tt.u, got, tt.want)
		}
	}
}

func TestRefreshAfter(t *testing.T) {
	s := time.Second
	tests := []struct {
		name    string
		proto   string
		expires time.Duration
		u       float64
		want    time.Duration
	}{
		{"tcp at half", "tcp", 600 * s, 0, 300 * s},
		{"tcp at 90%", "tcp", 600 * s, 1, 540 * s},
		{"wss in between", "wss", 100 * s, 0.5, 70 * s},
		{"udp 30s before", "udp", 3600 * s, 1, 3570 * s},
		{"udp 5s before", "udp", 3600 * s, 0, 3595 * s},
		{"udp short expires like the others", "udp", 30 * s, 0, 15 * s},
		{"never sooner than half a second", "tls", time.Second / 2, 0, time.Second / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := refreshAfter(tt.proto, tt.expires, tt.u)
			if got != tt.want {
				t.Errorf("refreshAfter(%q, %v, %v) = %v, want %v", tt.proto, tt.expires, tt.u, got, tt.want)
			}
		})
	}
}

func TestPickExpires(t *testing.T) {
	s := time.Second
	tests := []struct {
		lo, hi  time.Duration
		typical []time.Duration // the typical values expected to show up
	}{
		{60 * s, 3600 * s, []time.Duration{60 * s, 120 * s, 300 * s, 3600 * s}},
		{30 * s, 300 * s, []time.Duration{30 * s, 60 * s, 300 * s}},
		{45 * s, 50 * s, nil}, // no typical value inside: any second in range
		{90 * s, 90 * s, nil},
	}
	for _, tt := range tests {
		rng := rand.New(rand.NewPCG(1, 2))
		seen := map[time.Duration]int{}
		for range 2000 {
			e := pickExpires(rng, tt.lo, tt.hi)
			if e < tt.lo || e > tt.hi || e%time.Second != 0 {
				t.Fatalf("pickExpires(%v, %v) = %v: out of range or not whole seconds", tt.lo, tt.hi, e)
			}
			seen[e]++
		}
		for _, v := range tt.typical {
			if seen[v] == 0 {
				t.Errorf("pickExpires(%v, %v) never gave the typical %v", tt.lo, tt.hi, v)
			}
		}
	}
}

func TestDueAndNextTick(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		elapsed time.Duration
		rate    float64
		want    int64
	}{
		{0, 5, 0},
		{-time.Second, 5, 0},
		{199 * time.Millisecond, 5, 0},
		{200 * time.Millisecond, 5, 1},
		{time.Second, 5, 5},
		{10 * time.Second, 0.5, 5},
		{time.Second, 5000, 5000},
	}
	for _, tt := range tests {
		if got := Due(tt.elapsed, tt.rate); got != tt.want {
			t.Errorf("Due(%v, %v) = %d, want %d", tt.elapsed, tt.rate, got, tt.want)
		}
	}
	if got, want := NextTick(start, 0, 5), start.Add(200*time.Millisecond); !got.Equal(want) {
		t.Errorf("NextTick(0, 5) = %v, want %v", got, want)
	}
	if got, want := NextTick(start, 4, 0.5), start.Add(10*time.Second); !got.Equal(want) {
		t.Errorf("NextTick(4, 0.5) = %v, want %v", got, want)
	}
}

func TestUserName(t *testing.T) {
	demo := []string{"alice", "bob"}
	tests := []struct {
		names []string
		i     int
		want  string
	}{
		{demo, 0, "alice"}, {demo, 1, "bob"}, {demo, 2, "user0003"},
		{nil, 0, "user0001"}, {nil, 41, "user0042"},
	}
	for _, tt := range tests {
		if got := UserName(tt.names, tt.i); got != tt.want {
			t.Errorf("UserName(%v, %d) = %q, want %q", tt.names, tt.i, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Realms: []string{"a.example"}, Users: 1, Rate: 1, MinExpires: time.Second, MaxExpires: time.Second}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no realm", func(c *Config) { c.Realms = nil }},
		{"empty realm", func(c *Config) { c.Realms = []string{""} }},
		{"same realm twice", func(c *Config) { c.Realms = []string{"a", "a"} }},
		{"no users", func(c *Config) { c.Users = 0 }},
		{"zero rate", func(c *Config) { c.Rate = 0 }},
		{"sub-second expires", func(c *Config) { c.MinExpires = time.Second / 2 }},
		{"max below min", func(c *Config) { c.MinExpires, c.MaxExpires = 2*time.Second, time.Second }},
		{"negative burst", func(c *Config) { c.Burst = -1 }},
	}
	for _, tt := range tests {
		c := good
		c.Realms = append([]string(nil), good.Realms...)
		tt.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tt.name, c)
		}
	}
}

// steps runs a Sim for d, one Step every tick, and returns the actions with
// the time each was taken.
func steps(s *Sim, start time.Time, d, tick time.Duration) (acts []Action, at []time.Time) {
	for now := start; now.Before(start.Add(d)); now = now.Add(tick) {
		if a, ok := s.Step(now); ok {
			acts = append(acts, a)
			at = append(at, now)
		}
	}
	return acts, at
}

func testConfig() Config {
	return Config{
		Realms:     []string{"a.example", "b.example", "demo.example"},
		Users:      20,
		Names:      map[string][]string{"demo.example": {"alice", "bob"}},
		Rate:       10,
		MinExpires: 30 * time.Second,
		MaxExpires: 300 * time.Second,
		Seed:       42,
	}
}

func TestSimIsDeterministic(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	a, _ := steps(New(testConfig()), start, 5*time.Minute, 100*time.Millisecond)
	b, _ := steps(New(testConfig()), start, 5*time.Minute, 100*time.Millisecond)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two runs with the same seed differ")
	}
	cfg := testConfig()
	cfg.Seed = 43
	c, _ := steps(New(cfg), start, 5*time.Minute, 100*time.Millisecond)
	if reflect.DeepEqual(a, c) {
		t.Fatal("runs with different seeds are equal")
	}
}

// TestSimBehavesLikeDevices replays an hour of the simulation against a model
// of what Redis holds and checks that every write is one a real device and
// SBC could make.
func TestSimBehavesLikeDevices(t *testing.T) {
	cfg := testConfig()
	start := time.Unix(1_700_000_000, 0)
	sim := New(cfg)
	acts, at := steps(sim, start, time.Hour, 100*time.Millisecond)
	if len(acts) < 30000 {
		t.Fatalf("only %d writes in an hour at 10/s", len(acts))
	}

	type binding struct {
		expiresAt time.Time
		contact   string
		proxy     string
		protocol  string
	}
	held := map[string]binding{} // AOR → what Redis holds, until expiresAt
	kinds := map[Kind]int{}
	protocols := map[string]int{}
	users := map[string]bool{}
	for i, a := range acts {
		now := at[i]
		aor := a.User + "@" + a.Realm
		users[aor] = true
		kinds[a.Kind]++
		b, present := held[aor]
		present = present && now.Before(b.expiresAt)
		switch a.Kind {
		case Register:
			if present {
				t.Fatalf("%v: register of %s, which is still registered until %v", now, aor, b.expiresAt)
			}
		case Refresh:
			if !present {
				t.Fatalf("%v: refresh of %s, which is not registered", now, aor)
			}
			if a.Record.Contact != b.contact || a.Record.Proxy != b.proxy || a.Record.Protocol != b.protocol {
				t.Fatalf("%v: refresh of %s changed the binding %s %s → %s %s", now, aor, b.contact, b.protocol, a.Record.Contact, a.Record.Protocol)
			}
		case Move:
			if !present {
				t.Fatalf("%v: move of %s, which is not registered", now, aor)
			}
			if a.Record.Proxy == b.proxy {
				t.Fatalf("%v: move of %s kept its NAT address %s", now, aor, b.proxy)
			}
		case Unregister:
			if !present {
				t.Fatalf("%v: unregister of %s, which is not registered", now, aor)
			}
			delete(held, aor)
			continue
		default:
			t.Fatalf("unexpected action kind %v", a.Kind)
		}
		if a.Expires < cfg.MinExpires || a.Expires > cfg.MaxExpires || a.Expires%time.Second != 0 {
			t.Fatalf("expires %v outside [%v, %v]", a.Expires, cfg.MinExpires, cfg.MaxExpires)
		}
		r := a.Record
		if !strings.HasPrefix(r.Contact, "sip:") || !strings.HasPrefix(r.Proxy, "sip:") || r.SBCAddress == "" || r.PrivateSBCAddress == "" {
			t.Fatalf("malformed record %+v", r)
		}
		switch r.Protocol {
		case "udp", "tcp", "wss", "tls", "":
		default:
			t.Fatalf("protocol %q", r.Protocol)
		}
		protocols[r.Protocol]++
		held[aor] = binding{expiresAt: now.Add(a.Expires), contact: r.Contact, proxy: r.Proxy, protocol: r.Protocol}
	}

	st := sim.Stats()
	if got := uint64(len(acts)); st.Writes() != got {
		t.Errorf("stats count %d writes, the run made %d", st.Writes(), got)
	}
	for _, k := range []Kind{Register, Refresh, Move, Unregister} {
		if kinds[k] == 0 {
			t.Errorf("no %v in an hour", k)
		}
	}
	if st.LeftToLapse == 0 || st.Lapsed == 0 {
		t.Errorf("no device vanished and lapsed: %+v", st)
	}
	for _, p := range []string{"udp", "tcp", "wss", "tls", ""} {
		if protocols[p] == 0 {
			t.Errorf("protocol %q never used", p)
		}
	}
	if len(users) != len(cfg.Realms)*cfg.Users {
		t.Errorf("%d of %d devices ever wrote", len(users), len(cfg.Realms)*cfg.Users)
	}
	for _, want := range []string{"alice@demo.example", "bob@demo.example", "user0003@demo.example", "user0020@a.example"} {
		if !users[want] {
			t.Errorf("%s never registered", want)
		}
	}
	if users["user0001@demo.example"] {
		t.Error("demo realm's first device is not named after the demo client")
	}
	if frac := float64(st.Online) / float64(st.Devices); frac < 0.5 || frac > 0.97 {
		t.Errorf("%.0f%% of devices registered at the end; the mix should settle near 80%%", 100*frac)
	}
	if st.Late != 0 {
		t.Errorf("%d refreshes came late at a rate that covers the population", st.Late)
	}
}

// TestSimLateRefreshes: a rate far too low for the population's refreshes
// shows up as late refreshes, which become new registrations.
func TestSimLateRefreshes(t *testing.T) {
	cfg := testConfig()
	cfg.Users = 200
	cfg.Rate = 1
	cfg.MaxExpires = 30 * time.Second
	sim := New(cfg)
	start := time.Unix(1_700_000_000, 0)
	if n := len(sim.Burst(start, 600)); n != 600 {
		t.Fatalf("burst of 600 gave %d actions", n)
	}
	steps(sim, start, 2*time.Minute, time.Second)
	if sim.Stats().Late == 0 {
		t.Fatal("no late refresh reported")
	}
}

func TestBurst(t *testing.T) {
	cfg := testConfig()
	sim := New(cfg)
	now := time.Unix(1_700_000_000, 0)
	first := sim.Burst(now, 25)
	if len(first) != 25 {
		t.Fatalf("burst gave %d actions, want 25", len(first))
	}
	for _, a := range first {
		if a.Kind != Register {
			t.Fatalf("first burst: %v, want only registers", a.Kind)
		}
	}
	// Everyone online: a burst over the whole population re-registers.
	sim.Burst(now, 1000)
	again := sim.Burst(now.Add(time.Second), 60)
	for _, a := range again {
		if a.Kind != Refresh {
			t.Fatalf("burst of registered devices: %v, want refresh", a.Kind)
		}
	}
	st := sim.Stats()
	if st.Bursts != 3 || st.Online != st.Devices {
		t.Fatalf("stats after bursts: %+v", st)
	}
	if sim.Burst(now, 0) != nil {
		t.Fatal("empty burst wrote")
	}
}
