package api

import (
	"encoding/json"
	"errors"
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

// parseClientFrame decodes and checks one client frame; everything it
// accepts is safe to act on (bounded, well-formed sids). It never panics
// and allocates in proportion to data, which the read limit bounds.
func parseClientFrame(data []byte) (wire.Request, *frameError) {
	var f wire.Request
	if err := json.Unmarshal(data, &f); err != nil {
		return wire.Request{}, &frameError{"", wire.CodeBadRequest, "frame is not a valid message: " + jsonProblem(err)}
	}
	if len(f.ID) > maxFrameID {
		return wire.Request{}, &frameError{"", wire.CodeBadRequest, "id is longer than " + strconv.Itoa(maxFrameID) + " bytes"}
	}
	switch f.Type {
	case wire.TypeUnsubscribe:
		return f, nil
	case wire.TypeSubscribe:
	default:
		return wire.Request{}, &frameError{f.ID, wire.CodeBadRequest, `type must be "subscribe" or "unsubscribe"`}
	}
	switch {
	case f.ID == "":
		return wire.Request{}, &frameError{"", wire.CodeBadRequest, "subscribe needs an id"}
	case !store.ValidSID(f.AccountSID):
		return wire.Request{}, &frameError{f.ID, wire.CodeBadRequest, "malformed account sid " + strconv.Quote(truncate(f.AccountSID, 64))}
	case f.Since != nil && len(f.Since.Epoch) > maxFrameEpoch:
		return wire.Request{}, &frameError{f.ID, wire.CodeBadRequest, "since.epoch is longer than " + strconv.Itoa(maxFrameEpoch) + " bytes"}
	}
	if _, err := checkNames(f.Users); err != nil {
		return wire.Request{}, &frameError{f.ID, wire.CodeBadRequest, err.Error()}
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
