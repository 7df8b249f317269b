package api

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sendQueue is the number of bytes in the socket's send queue (ioctl
// SIOCOUTQ: for TCP, bytes written and not yet acknowledged by the peer,
// sent or not).
func sendQueue(rc syscall.RawConn) (int, error) {
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}
