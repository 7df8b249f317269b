package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis names shared with the jambonz SBC (jambonz-mw-registrar).
const (
	// RedisUserPrefix starts the key of every registration: "user:<user>@<realm>".
	RedisUserPrefix = "user:"
	// RedisActiveUserSet is the sorted set indexing registrations by expiryTime.
	RedisActiveUserSet = "active-user"
)

// SBCRecord is what a jambonz SBC (sbc-sip-sidecar) stores for a REGISTER.
type SBCRecord struct {
	Contact           string // URI of the first Contact header
	SBCAddress        string // public host:port of the SBC that took the REGISTER
	PrivateSBCAddress string // private host:port of that SBC
	Protocol          string // udp|tcp|tls|ws|wss; "" leaves the field out
	Proxy             string // sip:<source ip>:<source port>
	CallHook          string
	CallStatusHook    string
	AllowDirectApp    bool
	AllowDirectQueue  bool
	AllowDirectUser   bool
}

// sbcJSON lays the record out field by field as the SBC's JSON.stringify does.
// A field the SBC leaves undefined (protocol, hooks and private address when
// unknown) is absent, not null. The flags are written as the SBC writes them
// for a locally authenticated client: `grant.flag || false`, i.e. 1 or false.
type sbcJSON struct {
	Contact           string `json:"contact"`
	SBCAddress        string `json:"sbcAddress"`
	PrivateSBCAddress string `json:"privateSbcAddress,omitempty"`
	Protocol          string `json:"protocol,omitempty"`
	Proxy             string `json:"proxy"`
	CallHook          string `json:"callHook,omitempty"`
	CallStatusHook    string `json:"callStatusHook,omitempty"`
	AllowDirectApp    any    `json:"allow_direct_app_calling"`
	AllowDirectQueue  any    `json:"allow_direct_queue_calling"`
	AllowDirectUser   any    `json:"allow_direct_user_calling"`
	ExpiryTime        int64  `json:"expiryTime"`
}

func sbcFlag(b bool) any {
	if b {
		return 1
	}
	return false
}

// SBCValue returns the JSON a jambonz SBC stores for rec with the given
// expiryTime (epoch ms).
func SBCValue(rec SBCRecord, expiryTime int64) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // JSON.stringify does not escape <, > and &
	_ = enc.Encode(sbcJSON{
		Contact:           rec.Contact,
		SBCAddress:        rec.SBCAddress,
		PrivateSBCAddress: rec.PrivateSBCAddress,
		Protocol:          rec.Protocol,
		Proxy:             rec.Proxy,
		CallHook:          rec.CallHook,
		CallStatusHook:    rec.CallStatusHook,
		AllowDirectApp:    sbcFlag(rec.AllowDirectApp),
		AllowDirectQueue:  sbcFlag(rec.AllowDirectQueue),
		AllowDirectUser:   sbcFlag(rec.AllowDirectUser),
		ExpiryTime:        expiryTime,
	})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// RegisterAsSBC stores a registration exactly as jambonz-mw-registrar's add()
// does for the SBC: expiryTime = now + expires (ms), then
// SETEX user:<user>@<realm> <expires s> <json>, then
// ZADD active-user <expiryTime> user:<user>@<realm>. The realm is kept as
// given, like the SBC keeps the realm the device sent. expires is truncated to
// whole seconds (SETEX's unit) and must be at least one second.
//
// rdb may be a Pipeliner to write many registrations in one round trip; the
// errors then come from its Exec.
func RegisterAsSBC(ctx context.Context, rdb redis.Cmdable, user, realm string, rec SBCRecord, expires time.Duration) (expiryTime int64, err error) {
	secs := int64(expires / time.Second)
	if secs < 1 {
		return 0, fmt.Errorf("%w: register %s@%s: expires %v is less than a second", ErrInvalid, user, realm, expires)
	}
	if user == "" || realm == "" {
		return 0, fmt.Errorf("%w: register %q@%q: empty user or realm", ErrInvalid, user, realm)
	}
	key := RedisUserPrefix + user + "@" + realm
	expiryTime = time.Now().UnixMilli() + secs*1000
	if err := rdb.SetEx(ctx, key, SBCValue(rec, expiryTime), time.Duration(secs)*time.Second).Err(); err != nil {
		return 0, fmt.Errorf("register %s: %w", key, err)
	}
	if err := rdb.ZAdd(ctx, RedisActiveUserSet, redis.Z{Score: float64(expiryTime), Member: key}).Err(); err != nil {
		return 0, fmt.Errorf("register %s: index: %w", key, err)
	}
	return expiryTime, nil
}

// UnregisterAsSBC removes a registration as jambonz-mw-registrar's remove()
// does for an un-REGISTER: DEL user:<user>@<realm>, then ZREM active-user.
func UnregisterAsSBC(ctx context.Context, rdb redis.Cmdable, user, realm string) error {
	key := RedisUserPrefix + user + "@" + realm
	if err := rdb.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("unregister %s: %w", key, err)
	}
	if err := rdb.ZRem(ctx, RedisActiveUserSet, key).Err(); err != nil {
		return fmt.Errorf("unregister %s: index: %w", key, err)
	}
	return nil
}
