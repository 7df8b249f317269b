package wire

import "encoding/json"

// User is a user object as a reader decodes it: the 9 jambonz fields, and
// EventTime, which only the stream carries (nil in REST answers, and in the
// stream for a user with no event yet).
type User struct {
	Name                    string  `json:"name"`
	Contact                 *string `json:"contact"`
	ExpiryTime              int64   `json:"expiryTime"`
	Protocol                *string `json:"protocol"`
	AllowDirectAppCalling   int     `json:"allow_direct_app_calling"`
	AllowDirectQueueCalling int     `json:"allow_direct_queue_calling"`
	AllowDirectUserCalling  int     `json:"allow_direct_user_calling"`
	RegisteredStatus        string  `json:"registered_status"`
	Proxy                   *string `json:"proxy"`
	EventTime               *int64  `json:"event_time"`
}

// Frame is any frame the server sends, decoded; which fields are set depends
// on Type.
type Frame struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	AccountSID string `json:"account_sid"`
	Epoch      string `json:"epoch"`
	Seq        uint64 `json:"seq"`
	Resumed    *bool  `json:"resumed"`
	Resync     bool   `json:"resync"`
	Conflated  bool   `json:"conflated"`
	Users      []User `json:"users"`
	Event      string `json:"event"`
	User       *User  `json:"user"`
	Code       string `json:"code"`
	Msg        string `json:"msg"`
	// Raw is the frame as received (set by the reader; never decoded).
	Raw json.RawMessage `json:"-"`
}

// Request is a frame a client sends: subscribe (ID, AccountSID, optional
// Users watchlist, optional Since to resume) or unsubscribe (ID).
type Request struct {
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	AccountSID string    `json:"account_sid,omitempty"`
	Users      []string  `json:"users,omitempty"`
	Since      *Position `json:"since,omitempty"`
}

// Position is a point in an account's change history: the hub's epoch and
// the last sequence number applied.
type Position struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}
