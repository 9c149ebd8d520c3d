package sys

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func socket(family, typ int) (int, error) {
	return unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
}

func socketpair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

func accept(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	return nfd, err
}

func pipe(p *[2]int) error {
	return unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK)
}

// Executable is the binary children run. /proc/self/exe is the file the
// master is running even when a deploy has replaced the file at its path.
func Executable() (string, error) { return "/proc/self/exe", nil }

// ChildAttr asks the kernel to send sig to the child when the thread that
// started it exits. The caller starts every child from one locked thread
// that lives as long as the master, so that means: when the master dies.
func ChildAttr(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig}
}

// Poller waits for a connection on a shared listener and for other
// descriptors. The listener is registered with EPOLLEXCLUSIVE, so the kernel
// wakes one waiting child per connection instead of all of them.
type Poller struct {
	epfd     int
	listener int
	events   [4]unix.EpollEvent
}

// NewPoller watches listener and the other descriptors for input.
func NewPoller(listener int, others ...int) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	p := &Poller{epfd: epfd, listener: listener}
	add := func(fd int, events uint32) error {
		ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
		return os.NewSyscallError("epoll_ctl", unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev))
	}
	if err := add(listener, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
		p.Close()
		return nil, err
	}
	for _, fd := range others {
		if err := add(fd, unix.EPOLLIN|unix.EPOLLRDHUP); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// Wait blocks until a watched descriptor is ready, and reports whether the
// listener is.
func (p *Poller) Wait() (listener bool, err error) {
	for {
		n, err := unix.EpollWait(p.epfd, p.events[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("epoll_wait", err)
		}
		for _, ev := range p.events[:n] {
			listener = listener || int(ev.Fd) == p.listener
		}
		return listener, nil
	}
}

// Close releases the poller.
func (p *Poller) Close() { unix.Close(p.epfd) }

// setReusePort lets several sockets bind one address; Linux spreads
// connections and datagrams across them.
func setReusePort(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// SetProcessName sets the name that ps and top show for this process (the
// main thread's comm, at most 15 bytes). A child started through
// /proc/self/exe is otherwise called "exe". Call it on the main thread,
// as package initialization runs.
func SetProcessName(name string) {
	b := make([]byte, 16)
	copy(b[:15], name)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}
