package client

import (
	"testing"
)

func active(name string) *User   { return &User{Name: name, RegisteredStatus: "active"} }
func inactive(name string) *User { return &User{Name: name, RegisteredStatus: "inactive"} }

// TestApply: snapshots replace the state, changes apply in seq order, a jump
// in seq without "conflated" is a gap, with it is fine.
func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		watch     []string
		frames    []Frame
		wantUsers []string
		wantGaps  int
		wantSeq   uint64
	}{
		{"snapshot then changes", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 4, Users: []User{*active("a")}},
			{Type: "change", Seq: 5, Event: "registered", User: active("b")},
			{Type: "change", Seq: 6, Event: "unregistered", User: inactive("a")},
		}, []string{"b"}, 0, 6},
		{"gap detected", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 4},
			{Type: "change", Seq: 6, Event: "registered", User: active("b")},
		}, nil, 1, 4},
		{"conflated jump is not a gap", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 4},
			{Type: "change", Seq: 9, Conflated: true, Event: "refreshed", User: active("b")},
		}, []string{"b"}, 0, 9},
		{"duplicate is a gap", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 4},
			{Type: "change", Seq: 4, Event: "registered", User: active("b")},
		}, nil, 1, 4},
		{"resumed keeps state", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 1, Users: []User{*active("a")}},
			{Type: "resumed", Epoch: "e", Seq: 1},
			{Type: "change", Seq: 2, Event: "registered", User: active("c")},
		}, []string{"a", "c"}, 0, 2},
		{"resync snapshot replaces", nil, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 1, Users: []User{*active("a")}},
			{Type: "snapshot", Epoch: "e", Seq: 50, Resync: true, Users: []User{*active("z")}},
		}, []string{"z"}, 0, 50},
		{"watchlist keeps inactive users", []string{"a", "b"}, []Frame{
			{Type: "snapshot", Epoch: "e", Seq: 1, Users: []User{*active("a"), *inactive("b")}},
			{Type: "change", Seq: 2, Event: "expired", User: inactive("a")},
		}, []string{"a", "b"}, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Sub{Users: tt.watch, state: map[string]User{}, syncedCh: make(chan struct{})}
			for i := range tt.frames {
				s.apply(&tt.frames[i])
			}
			got := s.State()
			if len(got) != len(tt.wantUsers) {
				t.Errorf("state %v, want users %v", got, tt.wantUsers)
			}
			for _, u := range tt.wantUsers {
				if _, ok := got[u]; !ok {
					t.Errorf("state %v lacks %q", got, u)
				}
			}
			gaps, _, _ := s.Stats()
			if gaps != tt.wantGaps {
				t.Errorf("gaps = %d, want %d", gaps, tt.wantGaps)
			}
			if _, seq := s.Position(); seq != tt.wantSeq {
				t.Errorf("seq = %d, want %d", seq, tt.wantSeq)
			}
		})
	}
}
