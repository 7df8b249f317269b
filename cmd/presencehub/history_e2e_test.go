package main

import (
	"testing"
	"time"
)

// TestRegistrationHistoryFollowsRedis: what the SBC writes into Redis
// becomes registration sessions in PostgreSQL, answered by
// RegistrationHistory and Presence.
func TestRegistrationHistoryFollowsRedis(t *testing.T) {
	in := startInstance(t)
	sid, key := in.account("hist.example.com")
	in.register("alice", "hist.example.com", "wss", time.Hour)
	in.register("bob", "hist.example.com", "udp", time.Hour)
	// The hub re-reads a notified key: a key deleted before that read never
	// appears at all. Wait for alice to be seen first.
	in.eventually("alice registered", 5*time.Second, func() bool {
		var one map[string]any
		in.call(key, "GET", "/v1/Accounts/"+sid+"/RegisteredSipUsers/alice", nil, 200, &one)
		return one["registered_status"] == "active"
	})
	in.unregister("alice", "hist.example.com")

	type session struct {
		Name      string  `json:"name"`
		Protocol  *string `json:"protocol"`
		EndedAt   *int64  `json:"ended_at"`
		EndReason *string `json:"end_reason"`
	}
	var page struct {
		Sessions []session `json:"sessions"`
	}
	in.eventually("both sessions recorded, alice's ended", 5*time.Second, func() bool {
		in.call(key, "GET", "/v1/Accounts/"+sid+"/RegistrationHistory", nil, 200, &page)
		if len(page.Sessions) != 2 {
			return false
		}
		for _, s := range page.Sessions {
			if s.Name == "alice" && (s.EndReason == nil || *s.EndReason != "unregistered" || s.EndedAt == nil) {
				return false
			}
			if s.Name == "bob" && (s.EndedAt != nil || s.Protocol == nil || *s.Protocol != "udp") {
				return false
			}
		}
		return true
	})
	var p struct {
		Status   string `json:"registered_status"`
		LastSeen *int64 `json:"last_seen"`
		Sessions int    `json:"sessions_24h"`
	}
	in.call(key, "GET", "/v1/Accounts/"+sid+"/Presence/alice", nil, 200, &p)
	if p.Status != "inactive" || p.LastSeen == nil || p.Sessions != 1 {
		t.Errorf("Presence/alice = %+v, want inactive, last seen, 1 session in 24h", p)
	}
}
