//go:build unix && !linux

package sys

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Outside Linux, descriptors are created and then marked close-on-exec. The
// master starts children from one goroutine, so the window matters only to
// programs that start other processes at the same time.

func socket(family, typ int) (int, error) {
	fd, err := unix.Socket(family, typ, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}

func socketpair() ([2]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	return fds, err
}

// accept returns a non-blocking connection, with the TCP_NODELAY and
// keep-alive that Go gives accepted TCP connections: whether a connection
// inherits them from its listener differs between systems.
func accept(fd int) (int, syscall.Sockaddr, error) {
	nfd, sa, err := syscall.Accept(fd)
	if err != nil {
		return -1, nil, err
	}
	unix.CloseOnExec(nfd)
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return -1, nil, err
	}
	switch sa.(type) {
	case *syscall.SockaddrInet4, *syscall.SockaddrInet6:
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		unix.SetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
	return nfd, sa, nil
}

func pipe(p *[2]int) error {
	if err := unix.Pipe(p[:]); err != nil {
		return err
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
	}
	return nil
}

// setConnOptions does nothing: accept sets the options on each connection.
func setConnOptions(int) error { return nil }

// Executable is the binary children run.
func Executable() (string, error) { return os.Executable() }

// ChildAttr sets whom the child runs as, if cred is not nil: the new
// process sets its groups and ids before it executes the program. There is
// no parent-death signal here: children notice the end of their status
// socket instead.
func ChildAttr(_ syscall.Signal, cred *syscall.Credential) *syscall.SysProcAttr {
	if cred == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: cred}
}

// Poller waits with poll(2). It wakes every waiting child for a connection:
// there is no exclusive wake-up outside Linux.
type Poller struct {
	fds       []unix.PollFd // the listeners, then the Waiter's wake-up pipe
	listeners []int
	listening bool
	waiter    *Waiter
}

// NewPoller watches the descriptors of w, and listeners once Listen says
// so.
func NewPoller(listeners []int, w *Waiter) (*Poller, error) {
	p := &Poller{listeners: listeners, waiter: w, fds: make([]unix.PollFd, len(listeners)+1)}
	p.fds[len(listeners)] = unix.PollFd{Fd: int32(w.wake), Events: unix.POLLIN}
	for i := range listeners {
		p.fds[i] = unix.PollFd{Fd: -1} // poll skips it until Listen
	}
	return p, nil
}

// Listen adds the listeners to the descriptors Wait watches, or takes them
// out. It reports whether that changed anything.
func (p *Poller) Listen(on bool) (changed bool, err error) {
	if on == p.listening {
		return false, nil
	}
	for i, fd := range p.listeners {
		p.fds[i] = unix.PollFd{Fd: -1} // poll skips it
		if on {
			p.fds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		}
	}
	p.listening = on
	return true, nil
}

// Wait blocks until a listener is ready (true) or the Waiter is woken
// (false).
func (p *Poller) Wait() (listener bool, err error) {
	for {
		_, err := poll(p.fds, -1, false)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		if p.fds[len(p.listeners)].Revents != 0 {
			p.waiter.drain()
		}
		for _, fd := range p.fds[:len(p.listeners)] {
			if fd.Revents != 0 {
				return true, nil
			}
		}
		return false, nil
	}
}

// Close releases the poller.
func (p *Poller) Close() {}

// SetProcessName does nothing: children run the program's own path, and
// have its name.
func SetProcessName(string) {}

// CloseIntake removes a Unix listener's file, so that clients can no
// longer reach it while what is queued is served. For TCP and UDP it does
// nothing here: new connections keep coming into the queue until the
// socket closes, and children leave it alone (see the Linux version and
// IntakeClosed).
func CloseIntake(fd int, network string) error {
	if IsUnix(network) {
		return closeUnixIntake(fd)
	}
	return nil
}

// IntakeClosed reports whether CloseIntake has removed a Unix listener's
// file.
func IntakeClosed(fd int) bool { return unixIntakeClosed(fd) }
