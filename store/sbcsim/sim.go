// Package sbcsim simulates the SIP devices behind a jambonz SBC and writes
// their registrations into Redis exactly as the SBC does (with
// store.RegisterAsSBC and store.UnregisterAsSBC): devices register, refresh
// before their expiry, move to a new address, un-register, or vanish and
// let their registration lapse; offices open in bursts.
//
// Sim makes every decision (which device does what, when, with which
// expires, protocol and addresses). It is a deterministic state machine:
// given a seed and the times it is stepped at, it always produces the same
// actions, so it is tested without Redis or a clock. Run paces a Sim at a
// rate and applies its actions to Redis.
package sbcsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/presencehub/presencehub/hub/heapq"
	"github.com/presencehub/presencehub/store"
)

// Config describes the simulated population and its behaviour.
type Config struct {
	// Realms are the SIP realms (one account each) the devices register in.
	Realms []string
	// Users is the number of devices per realm.
	Users int
	// Names gives, per realm, the names of its first devices (e.g. the demo
	// account's SIP clients). The others are user0001, user0002, … by their
	// position in the realm.
	Names map[string][]string
	// Rate is the number of changes written per second overall (registers,
	// refreshes, moves and un-registers; bursts come on top).
	Rate float64
	// MinExpires and MaxExpires bound the expires each device asks for.
	MinExpires, MaxExpires time.Duration
	// Seed makes a run reproducible.
	Seed uint64
	// Burst is how many devices (re-)register at once when an office
	// opens: at the start, and every BurstEvery if that is set.
	Burst      int
	BurstEvery time.Duration
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	switch {
	case len(c.Realms) == 0:
		return errors.New("no realm to register in")
	case c.Users < 1:
		return errors.New("users per realm must be at least 1")
	case c.Rate <= 0:
		return errors.New("rate must be positive")
	case c.MinExpires < time.Second:
		return errors.New("min expires must be at least 1s (SETEX counts whole seconds)")
	case c.MaxExpires < c.MinExpires:
		return errors.New("max expires must not be below min expires")
	case c.Burst < 0 || c.BurstEvery < 0:
		return errors.New("burst and burst interval must not be negative")
	}
	seen := make(map[string]bool, len(c.Realms))
	for _, r := range c.Realms {
		if r == "" {
			return errors.New("empty realm")
		}
		if seen[r] {
			return fmt.Errorf("realm %s given twice", r)
		}
		seen[r] = true
	}
	return nil
}

// Kind is what a device does.
type Kind int

// Kinds of action. Only Register, Refresh, Move and Unregister write to
// Redis; Vanish is a decision recorded in the statistics.
const (
	Register   Kind = iota + 1 // an offline (or lapsed) device registers
	Refresh                    // a registered device re-registers, same binding
	Move                       // a registered device re-registers from a new address
	Unregister                 // a registered device un-registers (Expires: 0)
	Vanish                     // a registered device goes away silently; its record lapses
)

func (k Kind) String() string {
	switch k {
	case Register:
		return "register"
	case Refresh:
		return "refresh"
	case Move:
		return "move"
	case Unregister:
		return "unregister"
	case Vanish:
		return "vanish"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Action is one write to Redis.
type Action struct {
	Kind    Kind
	Realm   string
	User    string
	Record  store.SBCRecord // for Register, Refresh and Move
	Expires time.Duration   // for Register, Refresh and Move
}

// Stats counts what a Sim decided.
type Stats struct {
	Registered   uint64 // registrations of devices that were not registered
	Refreshed    uint64 // re-registrations with the same binding
	Moved        uint64 // re-registrations from a new address
	Unregistered uint64 // un-registrations
	LeftToLapse  uint64 // devices that vanished without un-registering
	Lapsed       uint64 // of those, the ones whose registration has lapsed by now
	Late         uint64 // refreshes that came after the expiry (rate too low for the population)
	Bursts       uint64 // office openings
	Online       int    // devices registered now and refreshing
	Lapsing      int    // vanished devices whose registration has not lapsed yet
	Devices      int
}

// Writes is the number of writes to Redis.
func (s Stats) Writes() uint64 { return s.Registered + s.Refreshed + s.Moved + s.Unregistered }

type state int

const (
	offline state = iota
	online        // registered and refreshing
	lapsing       // vanished; Redis still holds the record until expiresAt
)

// device is one simulated SIP device (one AOR).
type device struct {
	realm, user string
	index       int    // position in its realm
	proto       string // udp, tcp, tls or wss
	field       string // its record's "protocol" (see protocolField)
	state       state
	gen         uint64 // bumped on every registration, to discard stale heap entries
	expires     time.Duration
	expiresAt   time.Time // when Redis drops the record
	addr        address
	pos         int // position in the offline or online set
}

// address is where a device registers from.
type address struct {
	public     string // NAT public IP
	publicPort int
	private    string // the device's own (private) IP
	port       int    // the device's SIP port
	wsUser     string // random contact user part of a websocket client (JsSIP)
	wsHost     string // random contact host of a websocket client (JsSIP: *.invalid)
}

// Sim is the deterministic decision maker. It is not safe for concurrent use.
type Sim struct {
	cfg     Config
	rng     *rand.Rand
	devices []*device
	offline devSet
	online  devSet
	refresh heapq.Heap[timed] // online devices by refresh time
	lapses  heapq.Heap[timed] // lapsing devices by expiry
	stats   Stats
}

// New returns a Sim with every device offline. cfg must be valid.
func New(cfg Config) *Sim {
	s := &Sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed_5b_c0ffee))}
	for _, realm := range cfg.Realms {
		names := cfg.Names[realm]
		for i := 0; i < cfg.Users; i++ {
			d := &device{realm: realm, user: UserName(names, i), index: i}
			d.proto = pickProtocol(s.rng.Float64())
			d.field = protocolField(d.proto, s.rng.Float64())
			d.addr = s.newAddress(d.proto)
			s.devices = append(s.devices, d)
			s.offline.add(d)
		}
	}
	s.stats.Devices = len(s.devices)
	return s
}

// UserName is the name of device i of a realm whose first devices are named
// names: names[i], else user%04d of i+1.
func UserName(names []string, i int) string {
	if i < len(names) && names[i] != "" {
		return names[i]
	}
	return fmt.Sprintf("user%04d", i+1)
}

// Stats returns the counts so far.
func (s *Sim) Stats() Stats {
	st := s.stats
	st.Online = s.online.len()
	st.Lapsing = s.lapses.Len()
	return st
}

// Step decides the next write at now and applies it to the simulated state.
// Refreshes that are due come first; otherwise a device is picked by the mix
// of chooseKind. ok is false when no device can write (every device is
// lapsing), which is rare and passes.
func (s *Sim) Step(now time.Time) (a Action, ok bool) {
	s.settle(now)
	// A vanish writes nothing, so decide again; the bound only guards
	// against a population with no other choice.
	for range 8 {
		if d := s.dueRefresh(now); d != nil {
			if a, ok := s.onRefresh(d, now); ok {
				return a, true
			}
			continue
		}
		switch chooseKind(s.online.len(), s.offline.len(), s.lapses.Len(), s.rng.Float64()) {
		case Register:
			return s.register(s.offline.pick(s.rng), now), true
		case Unregister:
			return s.unregister(s.online.pick(s.rng)), true
		case Move:
			return s.move(s.online.pick(s.rng), now), true
		case Vanish:
			s.vanish(s.online.pick(s.rng))
		default:
			return Action{}, false
		}
	}
	return Action{}, false
}

// Burst opens an office at now: a block of n devices (re-)register at once,
// as phones do when an office powers up or after an SBC failover. Offline
// and lapsing devices register, registered ones refresh.
func (s *Sim) Burst(now time.Time, n int) []Action {
	s.settle(now)
	n = min(n, len(s.devices))
	if n <= 0 {
		return nil
	}
	s.stats.Bursts++
	start := s.rng.IntN(len(s.devices))
	out := make([]Action, 0, n)
	for i := range n {
		d := s.devices[(start+i)%len(s.devices)]
		if d.state == online && now.Before(d.expiresAt) {
			out = append(out, s.refreshDevice(d, now))
			continue
		}
		out = append(out, s.register(d, now))
	}
	return out
}

// settle moves the devices whose registration has lapsed by now offline.
func (s *Sim) settle(now time.Time) {
	for s.lapses.Len() > 0 && !s.lapses.Min().at.After(now) {
		e := s.lapses.Pop()
		if e.d.state != lapsing || e.d.gen != e.gen {
			continue
		}
		e.d.state = offline
		s.offline.add(e.d)
		s.stats.Lapsed++
	}
}

// dueRefresh pops the online device whose refresh is due at now, if any.
func (s *Sim) dueRefresh(now time.Time) *device {
	for s.refresh.Len() > 0 && !s.refresh.Min().at.After(now) {
		e := s.refresh.Pop()
		if e.d.state == online && e.d.gen == e.gen {
			return e.d
		}
	}
	return nil
}

// onRefresh handles a due refresh: mostly a refresh, sometimes the device
// turns out to have moved (a phone that changed networks) or to be gone (it
// vanishes, ok false, and its record lapses).
func (s *Sim) onRefresh(d *device, now time.Time) (Action, bool) {
	if !now.Before(d.expiresAt) {
		// Too late: Redis dropped the record already, so this is a new
		// registration. It happens when the rate cannot keep up with the
		// population's refreshes.
		s.stats.Late++
		return s.register(d, now), true
	}
	switch u := s.rng.Float64(); {
	case u < pVanishOnRefresh:
		s.vanish(d)
		return Action{}, false
	case u < pVanishOnRefresh+pMoveOnRefresh:
		return s.move(d, now), true
	}
	return s.refreshDevice(d, now), true
}

// Probabilities of what a due refresh turns into.
const (
	pVanishOnRefresh = 0.03
	pMoveOnRefresh   = 0.02
)

// chooseKind picks a spontaneous change from the numbers of registered
// (online), offline and lapsing devices and a uniform u in [0,1). Offline
// devices register with weight 3 each; each registered device un-registers
// with weight 0.5 and moves with 0.4, so the population settles near
// 3/(3+0.5) ≈ 86% registered with changes of every kind flowing. Registered
// devices also vanish (weight 0.1), but only while fewer than a tenth of all
// devices are lapsing: a vanished device is stuck until its registration
// lapses, and at a high rate per device they would pile up. (Devices mostly
// vanish at refresh time, see onRefresh.) It returns 0 when there is no
// device to change.
func chooseKind(online, offline, lapsing int, u float64) Kind {
	wReg := 3 * float64(offline)
	wUnreg := 0.5 * float64(online)
	wMove := 0.4 * float64(online)
	wVanish := 0.0
	if 10*lapsing < online+offline+lapsing {
		wVanish = 0.1 * float64(online)
	}
	total := wReg + wUnreg + wMove + wVanish
	if total == 0 {
		return 0
	}
	x := u * total
	switch {
	case x < wReg:
		return Register
	case x < wReg+wUnreg:
		return Unregister
	case x < wReg+wUnreg+wMove:
		return Move
	}
	return Vanish
}

func (s *Sim) register(d *device, now time.Time) Action {
	switch d.state {
	case offline:
		s.offline.remove(d)
	case online:
		s.online.remove(d)
	}
	d.expires = pickExpires(s.rng, s.cfg.MinExpires, s.cfg.MaxExpires)
	s.stats.Registered++
	return s.bind(d, Register, now)
}

func (s *Sim) refreshDevice(d *device, now time.Time) Action {
	s.online.remove(d)
	s.stats.Refreshed++
	return s.bind(d, Refresh, now)
}

func (s *Sim) move(d *device, now time.Time) Action {
	s.online.remove(d)
	d.addr = s.newAddress(d.proto)
	d.expires = pickExpires(s.rng, s.cfg.MinExpires, s.cfg.MaxExpires)
	s.stats.Moved++
	return s.bind(d, Move, now)
}

// bind makes d registered (it is in no set) and schedules its refresh.
func (s *Sim) bind(d *device, kind Kind, now time.Time) Action {
	d.gen++
	d.state = online
	d.expiresAt = now.Add(d.expires)
	s.online.add(d)
	at := now.Add(refreshAfter(d.proto, d.expires, s.rng.Float64()))
	s.refresh.Push(timed{at: at, d: d, gen: d.gen})
	return Action{Kind: kind, Realm: d.realm, User: d.user, Record: s.record(d), Expires: d.expires}
}

func (s *Sim) unregister(d *device) Action {
	s.online.remove(d)
	d.gen++
	d.state = offline
	s.offline.add(d)
	s.stats.Unregistered++
	return Action{Kind: Unregister, Realm: d.realm, User: d.user}
}

func (s *Sim) vanish(d *device) {
	s.online.remove(d)
	d.gen++
	d.state = lapsing
	s.lapses.Push(timed{at: d.expiresAt, d: d, gen: d.gen})
	s.stats.LeftToLapse++
}

// typicalExpires are the values SIP phones and softphones commonly ask for.
var typicalExpires = []time.Duration{
	30 * time.Second, 60 * time.Second, 120 * time.Second, 180 * time.Second, 300 * time.Second,
	600 * time.Second, 900 * time.Second, 1800 * time.Second, 3600 * time.Second,
}

// pickExpires returns the expires a device asks for: mostly one of the
// typical values within [lo, hi], otherwise any whole number of seconds in
// it.
func pickExpires(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	lo = lo.Truncate(time.Second)
	hi = hi.Truncate(time.Second)
	var in []time.Duration
	for _, e := range typicalExpires {
		if lo <= e && e <= hi {
			in = append(in, e)
		}
	}
	if len(in) > 0 && rng.Float64() < 0.8 {
		return in[rng.IntN(len(in))]
	}
	span := int64((hi - lo) / time.Second)
	return lo + time.Duration(rng.Int64N(span+1))*time.Second
}

// refreshAfter is how long after registering a device refreshes, for a
// uniform u in [0,1). Most user agents re-register at 50–90% of the granted
// expires. A UDP client is told Expires: 30 by the SBC and sends REGISTERs
// every ~30 s, but the SBC answers those from its cache and only writes Redis
// again once the record has 30 s or less left; so for UDP the Redis refresh
// comes 5–30 s before the expiry.
func refreshAfter(proto string, expires time.Duration, u float64) time.Duration {
	var d time.Duration
	if proto == "udp" && expires > 30*time.Second {
		before := 5*time.Second + time.Duration(u*float64(25*time.Second))
		d = expires - before
	} else {
		d = time.Duration((0.5 + 0.4*u) * float64(expires))
	}
	return max(d, time.Second/2)
}

// pickProtocol picks a device's transport for a uniform u in [0,1): 40% UDP
// desk phones, 15% TCP, 15% TLS, 30% browser and mobile clients on WSS.
func pickProtocol(u float64) string {
	switch {
	case u < 0.40:
		return "udp"
	case u < 0.55:
		return "tcp"
	case u < 0.70:
		return "tls"
	}
	return "wss"
}

// protocolField is the record's "protocol" for a transport. A real SBC
// derives it from the Via and leaves it out for TLS (it knows only udp, tcp,
// ws and wss); presencehub also accepts "tls", so one TLS device in three
// (u < 1/3) carries it.
func protocolField(proto string, u float64) string {
	if proto == "tls" && u >= 1.0/3 {
		return ""
	}
	return proto
}

// SBC addresses the simulated devices register through (RFC 5737
// documentation addresses publicly, RFC 1918 privately).
var sbcs = []struct{ public, private string }{
	{"192.0.2.10", "10.0.0.10"},
	{"192.0.2.11", "10.0.0.11"},
}

func sbcPort(proto string) int {
	switch proto {
	case "tls":
		return 5061
	case "wss":
		return 8443
	}
	return 5060
}

// record is what the SBC stores for d's REGISTER.
func (s *Sim) record(d *device) store.SBCRecord {
	a := d.addr
	var contact string
	switch d.proto {
	case "udp":
		contact = "sip:" + d.user + "@" + a.private + ":" + strconv.Itoa(a.port)
	case "tcp", "tls":
		contact = "sip:" + d.user + "@" + a.private + ":" + strconv.Itoa(a.port) + ";transport=" + d.proto
	default: // wss: JsSIP's random contact
		contact = "sip:" + a.wsUser + "@" + a.wsHost + ";transport=ws"
	}
	sbc := sbcs[d.index%len(sbcs)]
	port := strconv.Itoa(sbcPort(d.proto))
	return store.SBCRecord{
		Contact:           contact,
		SBCAddress:        sbc.public + ":" + port,
		PrivateSBCAddress: sbc.private + ":5060",
		Protocol:          d.field,
		Proxy:             "sip:" + a.public + ":" + strconv.Itoa(a.publicPort),
		AllowDirectApp:    true,
		AllowDirectQueue:  d.index%2 == 0,
		AllowDirectUser:   true,
	}
}

// newAddress returns where a device is now: a public NAT address (RFC 5737
// documentation ranges) and a private one (RFC 1918).
func (s *Sim) newAddress(proto string) address {
	r := s.rng
	publicNets := []string{"198.51.100.", "203.0.113."}
	a := address{
		public:     publicNets[r.IntN(len(publicNets))] + strconv.Itoa(1+r.IntN(254)),
		publicPort: 1024 + r.IntN(64512),
	}
	switch r.IntN(3) {
	case 0:
		a.private = "192.168." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(2+r.IntN(253))
	case 1:
		a.private = "10." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(2+r.IntN(253))
	default:
		a.private = "172." + strconv.Itoa(16+r.IntN(16)) + "." + strconv.Itoa(r.IntN(256)) + "." + strconv.Itoa(2+r.IntN(253))
	}
	switch proto {
	case "udp":
		a.port = 5060
		if r.IntN(4) == 0 { // softphones bind a random port
			a.port = 1024 + r.IntN(64512)
		}
	case "tls":
		a.port = 1024 + r.IntN(64512)
	case "tcp":
		a.port = 1024 + r.IntN(64512)
	default:
		a.wsUser = randomToken(r, 8)
		a.wsHost = randomToken(r, 12) + ".invalid"
	}
	return a
}

func randomToken(r *rand.Rand, n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

// devSet is a set of devices with O(1) add, remove and random pick; a
// device is in at most one set (its pos is its index there).
type devSet struct{ items []*device }

func (s *devSet) len() int { return len(s.items) }

func (s *devSet) add(d *device) {
	d.pos = len(s.items)
	s.items = append(s.items, d)
}

func (s *devSet) remove(d *device) {
	i := d.pos
	if i >= len(s.items) || s.items[i] != d {
		return
	}
	last := len(s.items) - 1
	s.items[i] = s.items[last]
	s.items[i].pos = i
	s.items[last] = nil
	s.items = s.items[:last]
}

// pick returns a random member (the set must not be empty).
func (s *devSet) pick(r *rand.Rand) *device { return s.items[r.IntN(len(s.items))] }

// timed is a device's scheduled event; gen tells whether it still applies.
type timed struct {
	at  time.Time
	d   *device
	gen uint64
}

// Less orders the refresh and lapse heaps, earliest first.
func (e timed) Less(o timed) bool { return e.at.Before(o.at) }
