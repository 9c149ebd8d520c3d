package sys

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// SetTimerSlack sets the calling thread's timer slack, how late the kernel
// may end its timed sleeps (prctl(2), PR_SET_TIMERSLACK; d > 0). Processes
// that the thread starts inherit it, for every thread they create. The
// caller locks its goroutine to the thread.
func SetTimerSlack(d time.Duration) error {
	return os.NewSyscallError("prctl", unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0))
}

// TimerSlack returns the calling thread's timer slack.
func TimerSlack() (time.Duration, error) {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, os.NewSyscallError("prctl", err)
	}
	return time.Duration(ns), nil
}
