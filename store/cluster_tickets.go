package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ticket is what a stream ticket stands for: the principal and the
// credential that asked for it (kept to re-check the credential while a
// stream opened with the ticket lasts).
type Ticket struct {
	Principal Principal `json:"p"`
	Token     string    `json:"-"` // sealed into "t": never stored in the clear
	Session   bool      `json:"s,omitempty"`
}

type ticketJSON struct {
	Ticket
	Sealed []byte `json:"t"`
}

// issueTicketScript keeps at most ARGV[4] tickets per key (a sorted set of
// the key's tickets by expiry, the expired ones dropped first) and stores
// the ticket with its TTL.
//
// KEYS: the key's set, the ticket. ARGV: id, now ms, ttl ms, cap, value.
var issueTicketScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[3])
return 1
`)

// IssueTicket stores a new single-use ticket for t with the given TTL in
// the cluster's Redis, so that any replica can redeem it; ok is false when
// t's key already holds perKey unused, unexpired tickets. The credential
// is sealed with ClusterOptions.Secret.
func (c *Cluster) IssueTicket(ctx context.Context, t Ticket, ttl time.Duration, perKey int) (id string, ok bool, err error) {
	if c.sealer == nil {
		return "", false, errors.New("cluster: tickets need ClusterOptions.Secret")
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	id = base64.RawURLEncoding.EncodeToString(b[:])
	v, err := json.Marshal(ticketJSON{Ticket: t, Sealed: c.sealer.seal(t.Token, id)})
	if err != nil {
		return "", false, err
	}
	n, err := issueTicketScript.Run(ctx, c.rdb, []string{c.kTicket + "key:" + t.Principal.KeySID, c.kTicket + id},
		id, time.Now().UnixMilli(), ttl.Milliseconds(), perKey, v).Int()
	if err != nil {
		return "", false, c.fail("ticket", err)
	}
	return id, n == 1, nil
}

// RedeemTicket takes the ticket id once (GETDEL: of replicas redeeming it
// at the same moment, one gets it); ok is false when it is unknown, used
// or expired.
func (c *Cluster) RedeemTicket(ctx context.Context, id string) (t Ticket, ok bool, err error) {
	if c.sealer == nil {
		return t, false, errors.New("cluster: tickets need ClusterOptions.Secret")
	}
	if len(id) > 64 {
		return t, false, nil
	}
	v, err := c.rdb.GetDel(ctx, c.kTicket+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return t, false, nil
	}
	if err != nil {
		return t, false, c.fail("ticket", err)
	}
	var j ticketJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return t, false, fmt.Errorf("cluster ticket: %w", err)
	}
	if j.Token, _, err = c.sealer.open(j.Sealed, id); err != nil {
		return t, false, fmt.Errorf("cluster ticket: %w", err)
	}
	// Its place in the key's count is free again.
	_ = c.rdb.ZRem(ctx, c.kTicket+"key:"+j.Principal.KeySID, id).Err()
	return j.Ticket, true, nil
}
