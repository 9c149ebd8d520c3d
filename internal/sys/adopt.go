//go:build unix

package sys

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Adopt takes a socket that this process did not create, such as one that
// systemd passed or one of the program's own, for the master to serve and
// hand to children: it returns a duplicate of fd, close-on-exec, in the
// mode Listen gives its sockets, with the socket's network and the address
// it is bound to. fd itself stays open and its owner's; the socket's mode
// is shared with it (see listenerFile). A TCP socket gets the options
// Listen sets (see setConnOptions), which accepted connections inherit.
//
// The network is learned from the socket: its address family (from
// getsockname, which every Unix system has, unlike SO_DOMAIN) and type.
// An IPv4 socket is "tcp4" or "udp4", an IPv6 one "tcp6" or "udp6" with
// IPV6_V6ONLY set and "tcp" or "udp" without it (it serves IPv4 too); a
// Unix socket is "unix" or "unixgram". A stream socket must be listening:
// a connected one is one client's, not a listener.
func Adopt(fd int) (f *os.File, network string, addr net.Addr, err error) {
	network, sa, err := socketNetwork(fd)
	if err != nil {
		return nil, "", nil, err
	}
	// Go names an unbound Unix socket "@", as an abstract name of no bytes.
	if addr = Addr(network, sa); addr == nil || addr.String() == "@" {
		return nil, "", nil, fmt.Errorf("descriptor %d is an unbound %s socket", fd, network)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, "", nil, os.NewSyscallError("fcntl", err)
	}
	if network == "tcp" || network == "tcp4" || network == "tcp6" {
		if err := setConnOptions(dup); err != nil {
			unix.Close(dup)
			return nil, "", nil, os.NewSyscallError("setsockopt", err)
		}
	}
	if f, err = listenerFile(dup); err != nil {
		return nil, "", nil, err
	}
	return f, network, addr, nil
}

// socketNetwork names the network of the socket fd, and returns the
// address it is bound to.
func socketNetwork(fd int) (string, syscall.Sockaddr, error) {
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", nil, fmt.Errorf("descriptor %d is not a socket: %w", fd, os.NewSyscallError("getsockopt", err))
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return "", nil, fmt.Errorf("descriptor %d: %w", fd, os.NewSyscallError("getsockname", err))
	}
	var family string
	switch sa.(type) {
	case *syscall.SockaddrInet4:
		family = "4"
	case *syscall.SockaddrInet6:
		family = "6"
		if v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err == nil && v6only == 0 {
			family = ""
		}
	case *syscall.SockaddrUnix:
		family = "unix"
	default:
		return "", nil, fmt.Errorf("descriptor %d is a socket of an address family prefork does not serve (TCP, UDP and Unix sockets only)", fd)
	}
	switch {
	case sotype == unix.SOCK_STREAM:
		if listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || listening == 0 {
			return "", nil, fmt.Errorf("descriptor %d is a stream socket that does not listen (a connection? systemd passes those with Accept=yes; use Accept=no)", fd)
		}
		if family == "unix" {
			return "unix", sa, nil
		}
		return "tcp" + family, sa, nil
	case sotype == unix.SOCK_DGRAM && family == "unix":
		return "unixgram", sa, nil
	case sotype == unix.SOCK_DGRAM:
		return "udp" + family, sa, nil
	}
	return "", nil, fmt.Errorf("descriptor %d is a socket of a type prefork does not serve (%s); use a stream or datagram socket", fd, sotypeName(sotype))
}

func sotypeName(sotype int) string {
	if sotype == unix.SOCK_SEQPACKET {
		return "SOCK_SEQPACKET"
	}
	return fmt.Sprintf("type %d", sotype)
}
