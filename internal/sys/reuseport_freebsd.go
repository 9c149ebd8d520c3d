package sys

import "golang.org/x/sys/unix"

// setReusePort uses SO_REUSEPORT_LB: plain SO_REUSEPORT on FreeBSD lets
// sockets share an address but gives all traffic to one of them.
func setReusePort(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT_LB, 1)
}
