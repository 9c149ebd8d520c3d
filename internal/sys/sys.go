//go:build unix

// Package sys holds the system calls of the prefork machinery: the shared
// listening socket, the status socketpair, accepting without waking every
// child, and starting children that die with their master.
package sys

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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

// FD returns f's descriptor without changing its mode, which f.Fd() would
// make blocking for a non-blocking file.
func FD(f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	err = raw.Control(func(d uintptr) { fd = int(d) })
	return fd, err
}

// WriteNow writes b to the non-blocking socket f once, without waiting for
// room: it returns EAGAIN (wrapped) when the socket's buffer is full.
func WriteNow(f *os.File, b []byte) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), b)
		return true // done, whatever came of it: never wait
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("write", werr)
}

// CheckHandover verifies, without changing them, that the descriptors a
// child was handed are what its master hands over: an AF_UNIX stream socket
// for the status, a regular file for the scoreboard, and sockets for the
// listeners.
func CheckHandover(status, board int, listeners []int) error {
	if typ, err := unix.GetsockoptInt(status, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		return fmt.Errorf("descriptor %d is not a stream socket", status)
	}
	if sa, err := unix.Getsockname(status); err != nil {
		return fmt.Errorf("descriptor %d: %w", status, os.NewSyscallError("getsockname", err))
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return fmt.Errorf("descriptor %d is not a Unix socket", status)
	}
	var st unix.Stat_t
	if err := unix.Fstat(board, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("descriptor %d is not a regular file", board)
	}
	for _, fd := range listeners {
		if _, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			return fmt.Errorf("descriptor %d is not a socket", fd)
		}
	}
	return nil
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

// IsTemporary reports whether an accept error concerns only one
// connection, so that the child should go on accepting: on Linux, accept
// passes on a new connection's pending network error, and accept(2) says
// to treat those as EAGAIN.
func IsTemporary(err error) bool {
	for _, e := range []unix.Errno{unix.EINTR, unix.ECONNABORTED, unix.EPROTO, unix.ENETDOWN, unix.ENETUNREACH,
		unix.EHOSTDOWN, unix.EHOSTUNREACH, unix.ENOPROTOOPT, unix.EOPNOTSUPP} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// IsShortOfResources reports whether accept or recvmsg failed for lack of
// descriptors or memory: the process (EMFILE) or the system is out of them.
func IsShortOfResources(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// ReadFrom reads one datagram from the non-blocking socket fd into buf.
// truncated reports a datagram longer than buf, whose rest is lost.
// (Package syscall's recvmsg, unlike x/sys/unix's, does not ask the socket
// for its protocol at every call.)
func ReadFrom(fd int, buf []byte) (n int, from syscall.Sockaddr, truncated bool, err error) {
	n, _, flags, from, err := syscall.Recvmsg(fd, buf, nil, 0)
	return n, from, flags&unix.MSG_TRUNC != 0, err
}

// maxUnixgramPause bounds the sleep between two tries of a reply to a
// unixgram client whose queue is full.
const maxUnixgramPause = 50 * time.Millisecond

// WriteTo sends b as one datagram to the address to from the non-blocking
// socket fd. When the send buffer is full it waits for room, up to
// timeout.
func WriteTo(fd int, b []byte, to syscall.Sockaddr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := syscall.Sendto(fd, b, 0, to)
		if !errors.Is(err, unix.EAGAIN) {
			return os.NewSyscallError("sendto", err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return os.NewSyscallError("sendto", err)
		}
		if _, unixgram := to.(*syscall.SockaddrUnix); unixgram {
			// The receiver's queue is full, and poll would call an
			// unconnected AF_UNIX socket writable all the same: sleep,
			// longer each time, instead of spinning.
			time.Sleep(min(pause, wait))
			pause = min(2*pause, maxUnixgramPause)
			continue
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, int(wait/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return os.NewSyscallError("poll", err)
		}
	}
}
