package sys

import (
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func socket(family, typ int) (int, error) {
	return unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
}

func socketpair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

// accept returns a non-blocking connection. On Linux it inherits the
// listener's TCP_NODELAY and keep-alive settings (see Listen). Package
// syscall's accept, unlike x/sys/unix's, does not ask the listener for its
// protocol at every call.
func accept(fd int) (int, syscall.Sockaddr, error) {
	return syscall.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
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
// A cred that is not nil is whom the child runs as: the new process sets
// its groups and ids before it executes the program. It sets the
// parent-death signal after them, so the change of user, which clears
// that signal, comes first.
func ChildAttr(sig syscall.Signal, cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig, Credential: cred}
}

// Poller waits for a connection on a child's listeners. Each listener is
// registered with EPOLLEXCLUSIVE, so the kernel wakes one waiting child per
// connection instead of all of them.
type Poller struct {
	epfd      int
	listeners []int
	listening bool
	waiter    *Waiter
	events    []unix.EpollEvent
}

// NewPoller watches the descriptors of w, and listeners once Listen says
// so.
func NewPoller(listeners []int, w *Waiter) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	p := &Poller{epfd: epfd, listeners: listeners, waiter: w, events: make([]unix.EpollEvent, len(listeners)+2)}
	add := func(fd int, events uint32) error {
		ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
		return os.NewSyscallError("epoll_ctl", unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev))
	}
	err = add(w.wake, unix.EPOLLIN)
	if err == nil && w.status >= 0 {
		// Edge-triggered: a record is news once; the netpoller delivers
		// it (see hold).
		err = add(w.status, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET)
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Listen adds the listeners to the descriptors Wait watches, or takes them
// out: a child that does not watch them is never woken for a connection,
// and the kernel wakes another. (EPOLLEXCLUSIVE cannot be changed in place:
// a listener is removed and added again.) It reports whether that changed
// anything.
func (p *Poller) Listen(on bool) (changed bool, err error) {
	if on == p.listening {
		return false, nil
	}
	for i, fd := range p.listeners {
		if on {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)}
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		} else {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		if err != nil {
			p.undo(i, on)
			return false, os.NewSyscallError("epoll_ctl", err)
		}
	}
	p.listening = on
	return true, nil
}

// undo takes back what Listen(on) did to the first n listeners, so that all
// of them stay in or out together.
func (p *Poller) undo(n int, on bool) {
	for _, fd := range p.listeners[:n] {
		if on {
			unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		} else {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)}
			unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		}
	}
}

// Wait blocks until a listener is ready (true) or the Waiter is woken
// (false). While it does not listen, it sleeps as any Go program does: a
// parked child expects nothing soon, and holding the P would cost it
// wake-ups for nothing.
func (p *Poller) Wait() (listener bool, err error) {
	h := p.waiter.hold()
	h.off = h.off || !p.listening
	for {
		ms, raw, _ := h.next(time.Time{})
		n, err := epollWait(p.epfd, p.events, ms, raw)
		if h.idle(n, err, raw) {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("epoll_wait", err)
		}
		woken := false
		for _, ev := range p.events[:n] {
			switch fd := int(ev.Fd); {
			case fd == p.waiter.wake:
				woken = true
			case fd == p.waiter.status: // a record on the status socket
				h.off = true
			default:
				listener = true
			}
		}
		if woken {
			p.waiter.drain()
		}
		if listener {
			h.done()
		}
		if listener || woken {
			return listener, nil
		}
	}
}

// Close releases the poller.
func (p *Poller) Close() { unix.Close(p.epfd) }

// setConnOptions gives a TCP listener the options that Go sets on each
// connection it accepts: no Nagle delay, keep-alive probes after 15 s of
// silence, every 15 s, 9 of them. Linux copies them to every connection
// accepted from the listener, which saves five system calls per connection.
func setConnOptions(fd int) error {
	for _, o := range [...]struct{ level, opt, value int }{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return err
		}
	}
	return nil
}

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

// CloseIntake makes the kernel stop taking new work on a listening socket
// that children share, without closing it, so that what is queued can
// still be served. On a TCP socket it drops connection requests (a SYN
// without ACK), which the client sends again a second later, to find the
// socket closed or another server listening; handshakes under way
// complete. On a datagram socket it drops every datagram. Those are socket
// filters, so they hold in every process that has the socket. A Unix
// socket's file is removed: clients find no server, or a new one. It gets
// a filter too, which keeps everything: it tells IntakeClosed in children
// that cannot see the file gone (a new server's file is at the path, or
// they run as a user who may not search its directory).
func CloseIntake(fd int, network string) error {
	if IsUnix(network) {
		if err := closeUnixIntake(fd); err != nil {
			return err
		}
	}
	const tcpSYN, tcpACK = 0x02, 0x10
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13}, // TCP flags
		{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: tcpSYN | tcpACK},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: tcpSYN, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // keep
	}
	switch {
	case IsUnix(network):
		filter = filter[4:5]
	case IsPacket(network):
		filter = filter[3:4]
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return os.NewSyscallError("setsockopt", unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog))
}

// IntakeClosed reports whether CloseIntake has been applied to the socket,
// by this process or another: whether the pool that shares it is stopping.
func IntakeClosed(fd int) bool {
	if unixIntakeClosed(fd) {
		return true
	}
	var blocks uint32 // a length of 0 asks for the number of instructions
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER, 0, uintptr(unsafe.Pointer(&blocks)), 0)
	return e == 0 && blocks > 0
}
