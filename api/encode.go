package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/presencehub/presencehub/store"
)

// maxBody bounds every JSON request body (1 MiB).
const maxBody = 1 << 20

// encode writes v as JSON with status; headers are set before WriteHeader.
func encode(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"msg":"internal error"}`, http.StatusInternalServerError)
		return
	}
	writeJSON(w, status, b)
}

// writeJSON writes an already encoded JSON body.
func writeJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// msg is the jambonz error body.
type msg struct {
	Msg string `json:"msg"`
}

// apiError is an error with the status and message a client sees.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

var (
	errForbidden = &apiError{http.StatusForbidden, "insufficient permissions"}
	errNotFound  = &apiError{http.StatusNotFound, "not found"}
)

// fail answers err with a status and a {"msg": …} body (see problem).
// Unexpected errors are logged and answered with a generic 500.
func fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, message, ok := problem(err)
	var rl *rateLimited
	switch {
	case !ok:
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.As(err, &rl):
		rl.d.SetHeaders(w.Header())
	case status == http.StatusUnauthorized && errors.Is(err, store.ErrUnauthorized):
		unauthorized(w, "invalid_token", message)
		return
	}
	encode(w, status, msg{message})
}

// problem is the one place where an error becomes what a client is told: an
// HTTP status and a message. The stream derives its error codes from it.
// ok is false for an unexpected error (500, "internal error").
func problem(err error) (status int, message string, ok bool) {
	var (
		ae *apiError
		rl *rateLimited
		se *store.Error
	)
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.msg, true
	case errors.As(err, &rl):
		return http.StatusTooManyRequests, rl.msg, true
	}
	kind := store.KindOf(err)
	switch kind {
	case store.KindNotFound:
		status, message = http.StatusNotFound, "not found"
	case store.KindConflict:
		status, message = http.StatusConflict, "conflict"
	case store.KindInvalid:
		status, message = http.StatusBadRequest, "invalid request"
	case store.KindUnauthorized:
		// Never say which: unknown, expired or missing.
		return http.StatusUnauthorized, "invalid or expired token", true
	default:
		return http.StatusInternalServerError, "internal error", false
	}
	if errors.As(err, &se) && se.Message != "" {
		message = se.Message
	}
	return status, message, true
}

func unauthorized(w http.ResponseWriter, code, message string) {
	v := `Bearer realm="presencehub"`
	if code != "" {
		v += `, error="` + code + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	encode(w, http.StatusUnauthorized, msg{message})
}

// decode reads a JSON body of at most maxBody bytes into v. It rejects
// unknown fields, trailing data and wrong types with a 400 that says what is
// wrong.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return badRequest("request body must hold a single JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("request body must hold a single JSON value")
	}
	return nil
}

func decodeError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		big *http.MaxBytesError
	)
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty")
	case errors.As(err, &big):
		return badRequest("request body is larger than %d bytes", maxBody)
	case errors.As(err, &syn):
		return badRequest("request body is not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return badRequest("field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return badRequest("request body must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The name comes from the body: quoted, but not at any length.
		return badRequest("unknown field %s", truncate(strings.TrimPrefix(err.Error(), "json: unknown field "), 66))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON (truncated)")
	}
	return badRequest("request body could not be read: %s", truncate(err.Error(), 100))
}

func jsonKind(k string) string {
	switch k {
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "ptr", "interface":
		return "a value"
	}
	return "a number"
}
