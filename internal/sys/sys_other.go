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

func accept(fd int) (int, error) {
	nfd, _, err := unix.Accept(fd)
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(nfd)
	// Accepted sockets inherit O_NONBLOCK from the listener on the BSDs;
	// Accept's contract is a blocking descriptor.
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
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

// Executable is the binary children run.
func Executable() (string, error) { return os.Executable() }

// ChildAttr returns nil: there is no parent-death signal here. Children
// notice the end of their status socket instead.
func ChildAttr(syscall.Signal) *syscall.SysProcAttr { return nil }

// Poller waits with poll(2). It wakes every waiting child for a connection:
// there is no exclusive wake-up outside Linux.
type Poller struct {
	fds []unix.PollFd
}

// NewPoller watches listener and the other descriptors for input.
func NewPoller(listener int, others ...int) (*Poller, error) {
	p := &Poller{fds: []unix.PollFd{{Fd: int32(listener), Events: unix.POLLIN}}}
	for _, fd := range others {
		p.fds = append(p.fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	return p, nil
}

// Wait blocks until a watched descriptor is ready, and reports whether the
// listener is.
func (p *Poller) Wait() (listener bool, err error) {
	for {
		_, err := unix.Poll(p.fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		return p.fds[0].Revents != 0, nil
	}
}

// Close releases the poller.
func (p *Poller) Close() {}

// SetProcessName does nothing: children run the program's own path, and
// have its name.
func SetProcessName(string) {}
