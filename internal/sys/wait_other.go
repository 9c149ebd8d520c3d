//go:build unix && !linux

package sys

import "golang.org/x/sys/unix"

// canHold: outside Linux, waits are ordinary system calls (see Waiter).
const canHold = false

func poll(fds []unix.PollFd, ms int, _ bool) (int, error) { return unix.Poll(fds, ms) }
