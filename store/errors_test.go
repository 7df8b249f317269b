package store

import (
	"errors"
	"fmt"
	"testing"
)

// asError is err's *Error, or nil.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func TestErrorUnwrapsToItsSentinel(t *testing.T) {
	sentinels := []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnauthorized}
	tests := []struct {
		err      *Error
		sentinel error
		text     string
	}{
		{newError(KindNotFound, "", "account %s", "ab12"), ErrNotFound, "account ab12: not found"},
		{newError(KindConflict, "username", "the client's username already exists"), ErrConflict, "the client's username already exists: conflict"},
		{newError(KindInvalid, "password", "password is longer than %d bytes", 1024), ErrInvalid, "password is longer than 1024 bytes: invalid"},
		{newError(KindUnauthorized, "", "api key expired"), ErrUnauthorized, "api key expired: unauthorized"},
		{&Error{Kind: KindInvalid}, ErrInvalid, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.text {
				t.Errorf("Error() = %q, want %q (the text wrapping the sentinel with %%w gave)", got, tt.text)
			}
			wrapped := fmt.Errorf("outer: %w", tt.err)
			for _, s := range sentinels {
				if got, want := errors.Is(wrapped, s), s == tt.sentinel; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", wrapped, s, got, want)
				}
			}
			if got := asError(wrapped); got != tt.err {
				t.Errorf("errors.As through a wrap gave %v, want %v", got, tt.err)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		k    Kind
		want string
	}{
		{KindNotFound, "not found"}, {KindConflict, "conflict"}, {KindInvalid, "invalid"},
		{KindUnauthorized, "unauthorized"}, {Kind(0), "Kind(0)"}, {Kind(99), "Kind(99)"},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(tt.k), got, tt.want)
		}
	}
}
