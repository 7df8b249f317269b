package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"

	"github.com/presencehub/presencehub/hub/wire"
	"github.com/presencehub/presencehub/store"
)

// Limits of a client frame's fields.
const (
	maxFrameID    = 128 // bytes of a subscription id
	maxFrameEpoch = 64  // bytes of since.epoch (the hub's are 12)
)

// frameError is the error frame a client frame is answered with.
type frameError struct {
	id, code, msg string
}

// clientFrame is a client frame as parseClientFrame leaves it: everything
// but the watchlist decoded and checked. The watchlist is only counted
// (numUsers); users decodes it, once the subscribe has passed the
// connection's caps and rate limits, so that a subscribe that is refused
// costs no string per name.
type clientFrame struct {
	Type       string         `json:"type"`
	ID         string         `json:"id"`
	AccountSID string         `json:"account_sid,omitempty"`
	Since      *wire.Position `json:"since,omitempty"`
	Users      rawNames       `json:"users,omitempty"`
}

// rawNames is the "users" array as sent: a slice of the frame (valid JSON:
// encoding/json checks the whole frame before it calls UnmarshalJSON), with
// its elements counted. It refers to the frame's buffer and is only good
// while the frame is handled.
type rawNames struct {
	raw []byte // nil: absent, null or empty
	n   int
}

func (r *rawNames) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 4 && string(b) == "null":
		*r = rawNames{}
		return nil
	case len(b) == 0 || b[0] != '[':
		return &json.UnmarshalTypeError{Value: "not an array", Type: reflect.TypeFor[[]string](), Field: "users"}
	}
	n := countElements(b)
	if n == 0 {
		*r = rawNames{}
		return nil
	}
	*r = rawNames{raw: b, n: n}
	return nil
}

// countElements counts the elements of a valid JSON array without decoding
// them: the commas at its top level, plus one unless it is empty.
func countElements(b []byte) int {
	if i := skipSpace(b, 1); i >= len(b) || b[i] == ']' {
		return 0
	}
	depth, commas := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth == 1 {
				commas++
			}
		}
	}
	return commas + 1
}

// users decodes and checks the watchlist (nil: the whole realm).
func (f *clientFrame) users() ([]string, *frameError) {
	if f.Users.raw == nil {
		return nil, nil
	}
	if f.Users.n > maxNames {
		return nil, &frameError{f.ID, wire.CodeBadRequest, "at most " + strconv.Itoa(maxNames) + " usernames per request, got " + strconv.Itoa(f.Users.n)}
	}
	names, ok := scanNames(f.Users.raw)
	if !ok {
		names = make([]string, 0, f.Users.n)
		if err := json.Unmarshal(f.Users.raw, &names); err != nil {
			return nil, &frameError{f.ID, wire.CodeBadRequest, `frame is not a valid message: field "users" has the wrong type`}
		}
	}
	if _, err := checkNames(names); err != nil {
		return nil, &frameError{f.ID, wire.CodeBadRequest, err.Error()}
	}
	if len(names) == 0 {
		return nil, nil
	}
	return names, nil
}

// parseClientFrame decodes and checks one client frame but for its
// watchlist, which it only counts (see clientFrame.users); everything it
// accepts is safe to act on (bounded, well-formed sids). It never panics
// and allocates a bounded amount whatever the frame's size.
func parseClientFrame(data []byte) (clientFrame, *frameError) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return clientFrame{}, &frameError{"", wire.CodeBadRequest, "frame is not a valid message: " + jsonProblem(err)}
	}
	if len(f.ID) > maxFrameID {
		return clientFrame{}, &frameError{"", wire.CodeBadRequest, "id is longer than " + strconv.Itoa(maxFrameID) + " bytes"}
	}
	switch f.Type {
	case wire.TypeUnsubscribe:
		return f, nil
	case wire.TypeSubscribe:
	default:
		return clientFrame{}, &frameError{f.ID, wire.CodeBadRequest, `type must be "subscribe" or "unsubscribe"`}
	}
	switch {
	case f.ID == "":
		return clientFrame{}, &frameError{"", wire.CodeBadRequest, "subscribe needs an id"}
	case !store.ValidSID(f.AccountSID):
		return clientFrame{}, &frameError{f.ID, wire.CodeBadRequest, "malformed account sid " + strconv.Quote(truncate(f.AccountSID, 64))}
	case f.Since != nil && len(f.Since.Epoch) > maxFrameEpoch:
		return clientFrame{}, &frameError{f.ID, wire.CodeBadRequest, "since.epoch is longer than " + strconv.Itoa(maxFrameEpoch) + " bytes"}
	case f.Users.n > maxNames:
		return clientFrame{}, &frameError{f.ID, wire.CodeBadRequest, "at most " + strconv.Itoa(maxNames) + " usernames per request, got " + strconv.Itoa(f.Users.n)}
	}
	return f, nil
}

func jsonProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return "field " + strconv.Quote(typ.Field) + " has the wrong type"
	}
	return "not a JSON object"
}
