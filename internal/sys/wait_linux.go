package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// canHold: Linux lets a goroutine wait in a system call the runtime does
// not see (see Waiter).
const canHold = true

// poll is poll(2) with a timeout in milliseconds (-1: none). If raw, the
// call is made without telling the runtime, so that the goroutine keeps its
// P; the caller bounds such calls (see hold).
func poll(fds []unix.PollFd, ms int, raw bool) (int, error) {
	if !raw {
		return unix.Poll(fds, ms)
	}
	var ts *unix.Timespec
	if ms >= 0 {
		t := unix.NsecToTimespec(int64(ms) * 1e6)
		ts = &t
	}
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollWait is epoll_wait(2), raw as poll is.
func epollWait(epfd int, events []unix.EpollEvent, ms int, raw bool) (int, error) {
	if !raw {
		return unix.EpollWait(epfd, events, ms)
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
