//go:build unix

package sys

import (
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A child serves one request at a time, so it waits far more often than a
// goroutine-per-connection server does: for the next connection, for each
// line of a request. Blocking in an ordinary system call costs a Go program
// more than the call itself: the runtime's monitor thread (sysmon) wakes to
// take the P from the blocked thread after 20 µs, polls every 20 µs for a
// millisecond after that, and the thread that returns from the call must
// find a P again. In a child that waits thousands of times a second this
// was a fifth of its CPU time and most of its context switches.
//
// So, on Linux, a Waiter waits with raw system calls, which the runtime
// does not see: the serving goroutine keeps its P, sysmon stays asleep. It
// waits in slices of holdSlice and yields between them, so that timers,
// signals and the runtime's own work (a stop-the-world interrupts the call
// with a signal) are late by at most a slice, and it holds the P for at most
// holdLimit per wait: a child that is idle for longer than that waits as
// any Go program does, and costs nothing while it sleeps.
//
// Holding the P starves every other goroutine of the child, so the Waiter
// holds it only while the child runs no goroutine beyond its own (see
// Pin): a handler that starts goroutines gets ordinary blocking waits.
const (
	holdSlice = 4 * time.Millisecond // below sysmon's 10 ms preemption
	holdLimit = 40 * time.Millisecond
)

// Waiter waits for descriptors for the one goroutine of a child that serves
// requests. Another goroutine can interrupt its waits with Wake.
type Waiter struct {
	wake     int // read end of a self-pipe: readable after Wake
	wakeW    int
	status   int          // a descriptor read by another goroutine through the netpoller
	baseline atomic.Int32 // goroutines of the child's own; 0 until Pin

	wakes   atomic.Uint64 // calls of Wake so far
	waiting atomic.Int32  // calls of WaitFD in progress
}

// sharedRecheck bounds a wait while another is in progress too: the other
// may empty the pipe before this one sees it.
const sharedRecheck = 50 * time.Millisecond

// NewWaiter returns a Waiter. status is a descriptor that another goroutine
// reads through the Go netpoller (a child's status socket): when it becomes
// readable while the Waiter holds the P, the Waiter lets that goroutine run.
// status may be -1.
func NewWaiter(status int) (*Waiter, error) {
	var p [2]int
	if err := pipe(&p); err != nil {
		return nil, os.NewSyscallError("pipe", err)
	}
	return &Waiter{wake: p[0], wakeW: p[1], status: status}, nil
}

// Pin lets the Waiter hold the P for as long as the process runs no more
// goroutines than it runs now. Call it once the child's own goroutines
// are running and before user code runs.
func (w *Waiter) Pin() { w.baseline.Store(int32(runtime.NumGoroutine())) }

// Wake makes the waits in progress return early, and the Poller's next
// wait too. It is safe from any goroutine.
func (w *Waiter) Wake() {
	w.wakes.Add(1)
	unix.Write(w.wakeW, []byte{1})
}

// drain empties the wake-up pipe. A waiter drains it before it looks again
// at whatever it was woken for, so no wake-up is lost to it.
func (w *Waiter) drain() {
	var b [64]byte
	for {
		if n, err := unix.Read(w.wake, b[:]); n <= 0 || err != nil {
			return
		}
	}
}

// Close releases the pipe.
func (w *Waiter) Close() {
	unix.Close(w.wake)
	unix.Close(w.wakeW)
}

// A hold is one wait's claim on the P: it lasts at most holdLimit, while
// the process runs only the child's own goroutines, and it ends when the
// status socket has a record, which only the netpoller can deliver to the
// goroutine that reads it.
type hold struct {
	w     *Waiter
	start time.Time
	off   bool
}

func (w *Waiter) hold() hold { return hold{w: w, start: time.Now()} }

func (h *hold) on() bool {
	return canHold && !h.off && runtime.NumGoroutine() <= int(h.w.baseline.Load()) &&
		time.Since(h.start) < holdLimit
}

// next returns how long the next poll may wait (-1: no limit) and whether
// it holds the P; ok is false once the deadline (zero: none) has passed.
func (h *hold) next(deadline time.Time) (ms int, raw, ok bool) {
	ms = -1
	if !deadline.IsZero() {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, false, false
		}
		ms = int((left + time.Millisecond - 1) / time.Millisecond)
	}
	if raw = h.on(); raw && (ms < 0 || ms > int(holdSlice/time.Millisecond)) {
		ms = int(holdSlice / time.Millisecond)
	}
	return ms, raw, true
}

// idle handles a poll that found nothing (n == 0) or was interrupted: it
// reports whether to poll again, and hands the P over between slices.
func (h *hold) idle(n int, err error, raw bool) bool {
	if err != unix.EINTR && (err != nil || n > 0) {
		return false
	}
	if raw {
		runtime.Gosched() // a slice is over, or the runtime wants the thread
	}
	return true
}

// Ready is what a wait for one descriptor found.
type Ready int

const (
	// FDReady: the descriptor is ready.
	FDReady Ready = iota
	// Woken: Wake was called; look again at what the wait was for.
	Woken
	// TimedOut: the deadline passed.
	TimedOut
)

// WaitFD waits until fd is ready for events (unix.POLLIN, unix.POLLOUT),
// Wake is called, or the deadline (zero: none) passes.
func (w *Waiter) WaitFD(fd int, events int16, deadline time.Time) (Ready, error) {
	wakes := w.wakes.Load()
	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	fds := [3]unix.PollFd{
		{Fd: int32(fd), Events: events},
		{Fd: int32(w.wake), Events: unix.POLLIN},
		{Fd: int32(w.status), Events: unix.POLLIN},
	}
	h := w.hold()
	for {
		if w.wakes.Load() != wakes {
			return Woken, nil
		}
		ms, raw, ok := h.next(deadline)
		if !ok {
			return TimedOut, nil
		}
		if w.waiting.Load() > 1 && (ms < 0 || ms > int(sharedRecheck/time.Millisecond)) {
			ms = int(sharedRecheck / time.Millisecond)
		}
		watch := fds[:2] // without the P held, the netpoller reads the status socket
		if raw {
			watch = fds[:]
		}
		n, err := poll(watch, ms, raw)
		switch {
		case h.idle(n, err, raw):
		case err != nil:
			return 0, os.NewSyscallError("poll", err)
		case fds[0].Revents != 0: // ready, or in error: the next call says which
			return FDReady, nil
		case fds[1].Revents != 0:
			w.drain() // then look at wakes again
		default: // a record on the status socket
			h.off = true
		}
	}
}
