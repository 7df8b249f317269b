package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unique"

	"github.com/presencehub/presencehub/hub"
)

// recordJSON is the tolerant shape of a stored registration. Fields the hub
// shows (contact, protocol, proxy) and the SBC addresses must be strings or
// null: anything else makes the record malformed. The hooks are not shown
// anywhere, and a registration webhook may hand back an object for them, so
// they take any JSON. The flags follow JavaScript truthiness, because that is
// how jambonz reads them.
type recordJSON struct {
	Contact           string     `json:"contact"`
	SBCAddress        string     `json:"sbcAddress"`
	PrivateSBCAddress string     `json:"privateSbcAddress"`
	Protocol          string     `json:"protocol"`
	Proxy             string     `json:"proxy"`
	CallHook          anyText    `json:"callHook"`
	CallStatusHook    anyText    `json:"callStatusHook"`
	AllowDirectApp    truthy     `json:"allow_direct_app_calling"`
	AllowDirectQueue  truthy     `json:"allow_direct_queue_calling"`
	AllowDirectUser   truthy     `json:"allow_direct_user_calling"`
	ExpiryTime        epochMilli `json:"expiryTime"`
}

// MaxRecordBytes caps a registration value: larger ones are malformed.
const MaxRecordBytes = 64 << 10

// parseRecord turns the key and value of a registration into a Registration
// (Deadline left zero). The error says why the key is malformed.
func parseRecord(key string, value []byte) (hub.Registration, error) {
	if len(value) > MaxRecordBytes {
		// An SBC writes a few hundred bytes; a huge value would be kept and
		// copied to every subscriber.
		return hub.Registration{}, fmt.Errorf("value is %d bytes, above the %d-byte cap", len(value), MaxRecordBytes)
	}
	user, realm, ok := aorOfKey(key)
	if !ok {
		return hub.Registration{}, errors.New(`key is not "user:<user>@<realm>"`)
	}
	v := bytes.TrimSpace(value)
	if len(v) == 0 || v[0] != '{' {
		return hub.Registration{}, errors.New("value is not a JSON object")
	}
	var fast recordJSON // on the stack: json.Unmarshal's would escape
	if parseRecordFast(v, &fast) {
		return recordOf(user, realm, &fast, true), nil
	}
	var rec recordJSON
	if err := json.Unmarshal(v, &rec); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return hub.Registration{}, fmt.Errorf("field %q has the wrong JSON type (%s)", te.Field, te.Value)
		}
		return hub.Registration{}, fmt.Errorf("value is not valid JSON: %v", err)
	}
	return recordOf(user, realm, &rec, false), nil
}

// recordOf is the Registration of rec; interned says that the fields it
// interns are already (parseRecordFast interns them as it reads them).
func recordOf(user, realm string, rec *recordJSON, interned bool) hub.Registration {
	if !interned {
		rec.Protocol, rec.SBCAddress, rec.PrivateSBCAddress = intern(rec.Protocol), intern(rec.SBCAddress), intern(rec.PrivateSBCAddress)
		rec.CallHook, rec.CallStatusHook = anyText(intern(string(rec.CallHook))), anyText(intern(string(rec.CallStatusHook)))
	}
	return hub.Registration{
		User:              user,
		Realm:             realm,
		Contact:           rec.Contact,
		Protocol:          rec.Protocol,
		Proxy:             rec.Proxy,
		SBCAddress:        rec.SBCAddress,
		PrivateSBCAddress: rec.PrivateSBCAddress,
		CallHook:          string(rec.CallHook),
		CallStatusHook:    string(rec.CallStatusHook),
		AllowDirectApp:    int(rec.AllowDirectApp),
		AllowDirectQueue:  int(rec.AllowDirectQueue),
		AllowDirectUser:   int(rec.AllowDirectUser),
		ExpiryTime:        int64(rec.ExpiryTime),
	}
}

// intern returns the one copy of s kept for all registrations. The SBC
// addresses, the hooks and the protocol take a handful of values across
// every registration; kept once each they cost nothing per registration.
// unique drops a value when no registration uses it any more.
func intern(s string) string {
	if s == "" {
		return ""
	}
	if m := internCache.m.Load(); m != nil {
		if c, ok := (*m)[s]; ok {
			return c
		}
	}
	return internSlow(s)
}

// internBytes is intern for a value still in the record's bytes: a value
// seen before (the usual case: a handful of SBC addresses, protocols and
// hooks across every registration) costs a map lookup and no allocation.
// A cold start parses every record once, and allocated each of these
// fields only to drop it for the interned copy.
func internBytes(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if m := internCache.m.Load(); m != nil {
		if c, ok := (*m)[string(b)]; ok { // no allocation for the lookup
			return c
		}
	}
	return internSlow(string(b))
}

// internCacheMax bounds internCache: past it (values that are not the
// handful expected, say a hook per user), values are interned by unique
// alone, as before the cache.
const internCacheMax = 1024

// internCache maps the interned values to their one copy, for lookups by
// bytes. It is replaced, never modified, so readers need no lock; it only
// grows, up to internCacheMax entries, and keeps them for the process's
// life.
var internCache struct {
	mu sync.Mutex
	m  atomic.Pointer[map[string]string]
}

func internSlow(s string) string {
	c := unique.Make(s).Value()
	internCache.mu.Lock()
	defer internCache.mu.Unlock()
	old := internCache.m.Load()
	if old != nil && (len(*old) >= internCacheMax || (*old)[c] != "") {
		return c
	}
	m := make(map[string]string, 1+func() int {
		if old == nil {
			return 0
		}
		return len(*old)
	}())
	if old != nil {
		maps.Copy(m, *old)
	}
	m[c] = c
	internCache.m.Store(&m)
	return c
}

// aorOfKey splits "user:<user>@<realm>" (at the last '@', realm
// lower-cased).
func aorOfKey(key string) (user, realm string, ok bool) {
	aor, found := strings.CutPrefix(key, RedisUserPrefix)
	if !found {
		return "", "", false
	}
	return hub.SplitAOR(aor)
}

// truthy is 1 when the JSON value is truthy in JavaScript (true, a non-zero
// number, a non-empty string, an object or array) and 0 otherwise.
type truthy int

func (t *truthy) UnmarshalJSON(b []byte) error {
	*t = 0
	switch b[0] {
	case 'n', 'f': // null, false
	case 't', '{', '[':
		*t = 1
	case '"':
		if len(b) > 2 {
			*t = 1
		}
	default:
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return err
		}
		if f != 0 && !math.IsNaN(f) {
			*t = 1
		}
	}
	return nil
}

var typeInt64 = reflect.TypeFor[int64]()

// epochMilli accepts a JSON number (or null) of milliseconds.
type epochMilli int64

func (e *epochMilli) UnmarshalJSON(b []byte) error {
	if b[0] == 'n' {
		*e = 0
		return nil
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*e = epochMilli(n)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<62 {
		return &json.UnmarshalTypeError{Value: "non-number " + string(b[:min(len(b), 20)]), Type: typeInt64}
	}
	*e = epochMilli(f)
	return nil
}

// anyText keeps a JSON string as its text and any other value (an object
// hook, say) as its JSON encoding; null is "".
type anyText string

func (a *anyText) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case 'n':
		*a = ""
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = anyText(s)
	default:
		*a = anyText(b)
	}
	return nil
}
