//go:build unix

// Package sys holds the system calls of the prefork machinery: the shared
// listening socket, the status socketpair, accepting without waking every
// child, and starting children that die with their master.
package sys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Listen binds a stream socket for network ("tcp", "tcp4" or "tcp6") and
// address and listens on it with the given backlog. The returned file is in
// non-blocking mode, which is the mode every child expects; os/exec can hand
// it to children without changing that (see the comment in the body).
func Listen(network, address string, backlog int) (*os.File, net.Addr, error) {
	tcpAddr, err := net.ResolveTCPAddr(network, address)
	if err != nil {
		return nil, nil, err
	}
	family, sa, err := sockaddr(network, tcpAddr)
	if err != nil {
		return nil, nil, err
	}
	fd, err := socket(family, unix.SOCK_STREAM)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) (*os.File, net.Addr, error) {
		unix.Close(fd)
		return nil, nil, os.NewSyscallError(call, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	if family == unix.AF_INET6 {
		v6only := 0
		if network == "tcp6" {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	// os.NewFile on a blocking descriptor makes a File that os/exec's call
	// to Fd() leaves alone. Had the descriptor been non-blocking already,
	// NewFile would have made it pollable and Fd() would switch the shared
	// socket to blocking mode at every spawn, under the children's feet.
	f := os.NewFile(uintptr(fd), "prefork-listener")
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return f, tcpAddrOf(bound), nil
}

// sockaddr picks the address family: IPv4 for "tcp4" and IPv4 addresses,
// IPv6 for "tcp6" and IPv6 addresses, and for a "tcp" wildcard a dual-stack
// IPv6 socket where the host has IPv6, as the net package does.
func sockaddr(network string, a *net.TCPAddr) (int, unix.Sockaddr, error) {
	ip4 := a.IP.To4()
	wildcard := len(a.IP) == 0 || a.IP.IsUnspecified()
	switch {
	case network == "tcp4" || (network == "tcp" && ip4 != nil && !wildcard):
		if !wildcard && ip4 == nil {
			return 0, nil, fmt.Errorf("address %v is not IPv4", a.IP)
		}
		sa := &unix.SockaddrInet4{Port: a.Port}
		if !wildcard {
			copy(sa.Addr[:], ip4)
		}
		return unix.AF_INET, sa, nil
	case wildcard && (network == "tcp6" || supportsIPv6()):
		return unix.AF_INET6, &unix.SockaddrInet6{Port: a.Port}, nil
	case wildcard:
		return unix.AF_INET, &unix.SockaddrInet4{Port: a.Port}, nil
	case ip4 != nil && network == "tcp6":
		return 0, nil, fmt.Errorf("address %v is not IPv6", a.IP)
	}
	sa := &unix.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	if a.Zone != "" {
		if ifi, err := net.InterfaceByName(a.Zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(a.Zone); err == nil {
			sa.ZoneId = uint32(n)
		}
	}
	return unix.AF_INET6, sa, nil
}

func supportsIPv6() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func tcpAddrOf(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if sa.ZoneId != 0 {
			a.Zone = strconv.Itoa(int(sa.ZoneId))
		}
		return a
	}
	return nil
}

// Socketpair returns the two ends of a status socket. The master's end is
// non-blocking, so reading it parks a goroutine instead of a thread; the
// child's end is blocking until the child takes it (see InheritedStatus),
// so that os/exec passes it on unchanged.
func Socketpair() (master, child *os.File, err error) {
	fds, err := socketpair()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(fds[0]), "prefork-status"), os.NewFile(uintptr(fds[1]), "prefork-status"), nil
}

// Inherited checks a descriptor handed over by the master and marks it
// close-on-exec, so that programs the child starts do not hold it.
func Inherited(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return fmt.Errorf("descriptor %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return nil
}

// InheritedStatus returns the child's end of the status socket, in
// non-blocking mode so that a goroutine can read it through the netpoller
// and Close can interrupt that read. The mode is the child's own: each end
// of a socketpair is a file description of its own.
func InheritedStatus(fd int) (*os.File, error) {
	if err := Inherited(fd); err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(fd), "prefork-status"), nil
}

// CheckListener verifies that fd is a listening socket in non-blocking mode.
func CheckListener(fd int) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		return errors.New("listener is in blocking mode; the master must hand it over non-blocking")
	}
	return nil
}

// Accept takes one connection from the non-blocking listener fd. It returns
// a net.Conn driven by the Go netpoller, or an error; unix.EAGAIN means that
// another child was faster.
func Accept(fd int) (net.Conn, error) {
	nfd, err := accept(fd)
	if err != nil {
		return nil, err
	}
	// The new descriptor is blocking, so os.NewFile does not register it
	// with the netpoller only for net.FileConn to register its duplicate.
	f := os.NewFile(uintptr(nfd), "")
	defer f.Close()
	return net.FileConn(f)
}

// IsTemporary reports whether an accept error concerns only one connection
// or a passing shortage, so that the child should go on accepting.
func IsTemporary(err error) bool {
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR),
		errors.Is(err, unix.ECONNABORTED), errors.Is(err, unix.EPROTO),
		errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE),
		errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
		return true
	}
	return false
}

// Wakeup is a self-pipe: Wake makes the read end readable, so a goroutine
// blocked in Poller.Wait in a system call returns.
type Wakeup struct{ r, w int }

// NewWakeup creates the pipe.
func NewWakeup() (*Wakeup, error) {
	var p [2]int
	if err := pipe(&p); err != nil {
		return nil, os.NewSyscallError("pipe", err)
	}
	return &Wakeup{r: p[0], w: p[1]}, nil
}

// FD is the descriptor to poll.
func (w *Wakeup) FD() int { return w.r }

// Wake makes FD readable until Close. It is safe from any goroutine.
func (w *Wakeup) Wake() { unix.Write(w.w, []byte{1}) }

// Close closes both ends.
func (w *Wakeup) Close() {
	unix.Close(w.r)
	unix.Close(w.w)
}
