package store

import (
	"errors"
	"fmt"
)

// The store's error vocabulary. Every error the store means a client to see
// is an *Error whose Kind unwraps to one of these (test with errors.Is, or
// errors.As for the Kind, Field and Message); anything else is unexpected.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrInvalid      = errors.New("invalid")
	ErrUnauthorized = errors.New("unauthorized")
)

// Kind classifies an Error.
type Kind uint8

// Kinds of Error; each unwraps to the sentinel of the same name.
const (
	KindNotFound     Kind = iota + 1 // ErrNotFound: the thing does not exist
	KindConflict                     // ErrConflict: it collides with what exists (duplicate, still in use)
	KindInvalid                      // ErrInvalid: a value the store refuses
	KindUnauthorized                 // ErrUnauthorized: unknown or expired credentials
)

// Err returns the sentinel of k (nil for an unknown Kind).
func (k Kind) Err() error {
	switch k {
	case KindNotFound:
		return ErrNotFound
	case KindConflict:
		return ErrConflict
	case KindInvalid:
		return ErrInvalid
	case KindUnauthorized:
		return ErrUnauthorized
	}
	return nil
}

// String is the sentinel's text.
func (k Kind) String() string {
	if err := k.Err(); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Error is an error of the caller's making, typed so that no consumer needs
// to read its text: Kind says what class it is (the HTTP status follows
// from it), Field which input is at fault, and Message what to tell the
// client.
type Error struct {
	Kind Kind
	// Field is the input field at fault, named as in the store's JSON
	// ("username", "password", "sip_realm", "account_sid", …); "" when the
	// error is not about one field.
	Field string
	// Message says what is wrong, in the client's terms ("username is longer
	// than 64 characters"); "" when there is nothing to add to the Kind.
	Message string
}

// Error returns "Message: sentinel", or the sentinel's text alone.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Kind.String()
	}
	return e.Message + ": " + e.Kind.String()
}

// Unwrap returns the sentinel of e's Kind, so errors.Is(err, ErrInvalid)
// holds for every Error of KindInvalid.
func (e *Error) Unwrap() error { return e.Kind.Err() }

// newError returns an Error of kind about field with a formatted message.
func newError(kind Kind, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err: its *Error's, or that of the sentinel it
// wraps; 0 when err is nil or unexpected.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	case errors.Is(err, ErrConflict):
		return KindConflict
	case errors.Is(err, ErrInvalid):
		return KindInvalid
	case errors.Is(err, ErrUnauthorized):
		return KindUnauthorized
	}
	return 0
}
