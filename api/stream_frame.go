package api

import (
	"bytes"
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
// and allocates a bounded amount whatever the frame's size; a big
// watchlist is not even scanned by encoding/json (see decodeFrame).
func parseClientFrame(data []byte) (clientFrame, *frameError) {
	f, err := decodeFrame(data)
	if err != nil {
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

// decodeFrame decodes a client frame. encoding/json would scan the
// watchlist twice (validating the whole frame, then skipping the value to
// hand it to rawNames): most of the cost of a 64 KB frame. When the frame
// is an object whose keys are plain and only one is exactly "users",
// encoding/json gets the frame with that value cut out (replaced by null),
// and the value itself is only counted here; it is validated when it is
// decoded (clientFrame.users). Anything else goes through encoding/json
// whole.
func decodeFrame(data []byte) (clientFrame, error) {
	var f clientFrame
	start, end, ok := findUsers(data)
	if !ok || start < 0 || end-start < 256 {
		err := json.Unmarshal(data, &f)
		return f, err
	}
	head := make([]byte, 0, len(data)-(end-start)+4)
	head = append(append(append(head, data[:start]...), "null"...), data[end:]...)
	if err := json.Unmarshal(head, &f); err != nil {
		return clientFrame{}, err
	}
	if err := f.Users.UnmarshalJSON(data[start:end]); err != nil {
		return clientFrame{}, err
	}
	return f, nil
}

// findUsers finds the value of the key "users" in a frame that is a JSON
// object: data[start:end] (start -1: no such key). ok is false when the
// frame is anything this scan does not vouch for (not an object, a key with
// an escape, a key encoding/json would also match to "users" such as
// "Users", "users" twice, a value it cannot delimit): then the frame goes
// to encoding/json whole. It does not validate; encoding/json does, for
// everything but the users value.
func findUsers(data []byte) (start, end int, ok bool) {
	start = -1
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return -1, -1, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return -1, -1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return -1, -1, false
		}
		k := i + 1
		for k < len(data) && data[k] != '"' {
			if data[k] == '\\' {
				return -1, -1, false
			}
			k++
		}
		if k >= len(data) {
			return -1, -1, false
		}
		key := data[i+1 : k]
		i = skipSpace(data, k+1)
		if i >= len(data) || data[i] != ':' {
			return -1, -1, false
		}
		i = skipSpace(data, i+1)
		v := i
		i = skipValue(data, i)
		if i < 0 {
			return -1, -1, false
		}
		switch {
		case string(key) == "users":
			if start >= 0 {
				return -1, -1, false
			}
			start, end = v, i
		case bytes.EqualFold(key, []byte("users")):
			return -1, -1, false
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return -1, -1, false
		}
		switch data[i] {
		case '}':
			return start, end, true
		case ',':
			i = skipSpace(data, i+1)
		default:
			return -1, -1, false
		}
	}
}

// skipValue returns the end of the JSON value at data[i] (-1 when it cannot
// find one); it does not validate what is inside.
func skipValue(data []byte, i int) int {
	depth := 0
	for ; i < len(data); i++ {
		switch c := data[i]; c {
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			if i >= len(data) {
				return -1
			}
		case '[', '{':
			depth++
		case ']', '}':
			if depth == 0 {
				return i // a literal or number ends here
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
		if depth == 0 && (data[i] == '"' || data[i] == ']' || data[i] == '}') {
			return i + 1
		}
	}
	if depth == 0 {
		return i
	}
	return -1
}

func jsonProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return "field " + strconv.Quote(typ.Field) + " has the wrong type"
	}
	return "not a JSON object"
}
