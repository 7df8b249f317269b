//go:build !linux

package api

import (
	"errors"
	"syscall"
)

// sendQueue is not known outside Linux: the heartbeat always pings.
func sendQueue(syscall.RawConn) (int, error) { return 0, errors.ErrUnsupported }
