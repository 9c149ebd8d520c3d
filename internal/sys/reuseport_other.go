//go:build unix && !linux && !freebsd

package sys

import "golang.org/x/sys/unix"

// setReusePort sets SO_REUSEPORT. On macOS and the other BSDs it lets
// sockets share an address but does not balance: one socket gets the
// traffic.
func setReusePort(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}
