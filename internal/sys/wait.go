//go:build unix

package sys

import (
	"os"
	"runtime"
	"sync"
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
// does not see: the serving goroutine keeps its P, and sysmon has no P to
// take back (it still wakes now and then, at most every 10 ms). It
// waits in slices of holdSlice and yields at least that often, so that
// timers, signals and the runtime's own work (a stop-the-world interrupts
// the call with a signal) are late by at most a slice, and it holds the P
// for at most holdLimit per wait: a child that is idle for longer than that
// waits as any Go program does, and costs nothing while it sleeps.
//
// A held wait is worth it only in a streak of short ones: while the P
// looks busy, sysmon stays awake, and its polls (about sixty in the first
// 40 ms, then one every 10 ms) cost more than the wait saves once the wait
// is long. So a Waiter holds the P only when the last wait that blocked
// ended within holdLimit. A new child, which may idle as a spare, or whose
// first client may keep its connection open and quiet, waits the ordinary
// way until a wait shows that work comes quickly; so does a child after an
// idle spell. In a new pool of 5 idle children, this took each child's
// context switches in its first second from about 140 to 30; after a
// burst of 30 clients that each hold a quiet connection, the CPU the 32
// children spent over the next 200 ms went from 30-45 ms to 3-10 ms.
//
// That holds while the child waits only here. A handler that waits
// through the netpoller (on a database connection of its own, say) leaves
// the P idle: sysmon goes into its deep sleep, the handler's next system
// call wakes it, and it polls every 20 µs again until the P is idle once
// more. Those are a few wake-ups per request, which a Waiter cannot
// prevent (it does not see the handler's waits); a timer slack spaces
// them out (see Manager.ChildTimerSlack).
//
// holdLimit is a ski-rental bound. Each slice that ends with nothing to do
// costs a wake-up; going back to an ordinary wait and out of it costs about
// fifty (sysmon polls every 20 µs for a millisecond once it is woken from
// its sleep). Holding for fifty slices before giving up costs at most twice
// what knowing the future would. Measured with 8 and 32 clients (short TCP
// connections, UDP), 200 ms did 5-15% more requests than 40 ms.
//
// Holding the P starves every other goroutine of the child, so the Waiter
// holds it only while the child runs no goroutine beyond its own (see
// Pin): while a goroutine that the program started before Run, or that a
// hook or handler started, is alive, waits are ordinary blocking ones.
const (
	holdSlice = 4 * time.Millisecond // below sysmon's 10 ms preemption
	holdLimit = 50 * holdSlice
)

// Waiter waits for descriptors for the one goroutine of a child that serves
// requests. Another goroutine can interrupt its waits with Wake.
//
// Wake counts and writes a byte to a self-pipe. The Poller, which has the
// pipe to itself between requests, empties it. A connection's waits, of
// which there can be several at once, compare the count with the one their
// caller saw; one that finds the pipe holding only wake-ups it has seen
// empties it if it is the only wait, and otherwise waits without the pipe,
// looking at the count every staleRecheck.
type Waiter struct {
	wake     int // read end of a self-pipe: readable after Wake
	wakeW    int
	status   int          // a descriptor read by another goroutine through the netpoller
	baseline atomic.Int32 // goroutines the P may be held with; 0 until Pin
	helpers  atomic.Int32 // more of them, for the request in hand (see Helpers)
	epoch    time.Time    // for deadlines on the monotonic clock; see Conn

	yielded atomic.Int64   // when a held wait last yielded, since epoch
	wakes   atomic.Uint64  // calls of Wake so far
	waiters atomic.Int32   // connection waits in progress (see Conn.wait)
	held    atomic.Uint64  // waits that held the P
	streak  atomic.Bool    // the last wait that blocked ended within holdLimit
	marks   *atomic.Int32  // counts connection waits in progress too, for another process to see; may be nil
	begun   *atomic.Uint32 // and those begun
	mu      sync.Mutex     // guards closed, against a Wake after Close
	closed  bool
}

// staleRecheck bounds a wait that cannot use the pipe (see Waiter).
const staleRecheck = 10 * time.Millisecond

// NewWaiter returns a Waiter. status is a descriptor that another goroutine
// reads through the Go netpoller (a child's status socket): when it becomes
// readable while the Waiter holds the P, the Waiter lets that goroutine run.
// status may be -1.
func NewWaiter(status int) (*Waiter, error) {
	var p [2]int
	if err := pipe(&p); err != nil {
		return nil, os.NewSyscallError("pipe", err)
	}
	return &Waiter{wake: p[0], wakeW: p[1], status: status, epoch: time.Now()}, nil
}

// Pin lets the Waiter hold the P while the process runs at most goroutines
// goroutines: the child's own, which need it only when a wait yields.
func (w *Waiter) Pin(goroutines int) { w.baseline.Store(int32(goroutines)) }

// Helpers lets the Waiter hold the P with n more goroutines than Pin's: a
// request's own, which wait only on its connection through this Waiter, or
// for each other. Helpers(0) ends that with the request.
func (w *Waiter) Helpers(n int) { w.helpers.Store(int32(n)) }

// MarkWaits makes connection waits count themselves, in progress and
// begun, in counters that another process can read (the child's slot on the
// scoreboard): a child that waits for its client is busy, but another child
// would not serve that client sooner, and one whose wait goes on has a
// client that sends nothing. Call it before the first wait.
func (w *Waiter) MarkWaits(inProgress *atomic.Int32, begun *atomic.Uint32) {
	w.marks, w.begun = inProgress, begun
}

// HeldWaits returns how many waits have held the P, for the child's log.
func (w *Waiter) HeldWaits() uint64 { return w.held.Load() }

// Wakes returns how many times Wake has been called. A caller loads it
// before it looks at what it will wait for, and passes it to WaitFD, so
// that a Wake in between is not lost.
func (w *Waiter) Wakes() uint64 { return w.wakes.Load() }

// Wake makes the waits in progress return early, and the Poller's next
// wait too. It is safe from any goroutine, and does nothing after Close.
func (w *Waiter) Wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.wakes.Add(1)
		unix.Write(w.wakeW, []byte{1})
	}
}

// drain empties the wake-up pipe.
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
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	unix.Close(w.wake)
	unix.Close(w.wakeW)
}

// A hold is one wait's claim on the P: it is made only in a streak of
// short waits, it lasts at most holdLimit, while the process runs only the
// child's own goroutines, and it ends when the status socket has a record,
// which only the netpoller can deliver to the goroutine that reads it.
type hold struct {
	w       *Waiter
	start   time.Time
	off     bool
	counted bool
}

func (w *Waiter) hold() hold { return hold{w: w, start: time.Now(), off: !w.streak.Load()} }

// blockedAfter tells a wait that blocked from one that found its
// descriptor ready at once, which says nothing about how long waits take.
const blockedAfter = 50 * time.Microsecond

// done records a wait that ran its course (its descriptor became ready, or
// its deadline passed; not one that Wake cut short): one that blocked
// starts a streak if it was short, and ends it if it was not. Waits in
// progress at once (a request's goroutines on its connection) each record
// their own end, the last one's standing: a streak is a hint, and the
// worst a wrong one costs is one ordinary wait, or one hold of holdLimit.
func (h *hold) done() {
	if d := time.Since(h.start); d >= blockedAfter {
		h.w.streak.Store(d < holdLimit)
	}
}

func (h *hold) on() bool {
	base := h.w.baseline.Load()
	return canHold && !h.off && base > 0 && runtime.NumGoroutine() <= int(base+h.w.helpers.Load()) &&
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
		ms = int((min(left, time.Hour) + time.Millisecond - 1) / time.Millisecond)
	}
	if raw = h.on(); raw {
		if !h.counted {
			h.counted = true
			h.w.held.Add(1)
		}
		if ms < 0 || ms > int(holdSlice/time.Millisecond) {
			ms = int(holdSlice / time.Millisecond)
		}
		// Waits that find work at once never yield in idle; yield here
		// before sysmon finds the P busy for 10 ms and interrupts it.
		if time.Since(h.w.epoch)-time.Duration(h.w.yielded.Load()) >= holdSlice {
			h.w.yield()
		}
	}
	return ms, raw, true
}

// yield lets the other goroutines and the runtime have the P.
func (w *Waiter) yield() {
	runtime.Gosched()
	w.yielded.Store(int64(time.Since(w.epoch)))
}

// idle handles a poll that found nothing (n == 0) or was interrupted: it
// reports whether to poll again, and hands the P over between slices.
func (h *hold) idle(n int, err error, raw bool) bool {
	if err != unix.EINTR && (err != nil || n > 0) {
		return false
	}
	if raw {
		h.w.yield() // a slice is over, or the runtime wants the thread
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
// the deadline (zero: none) passes, or Wake has been called since Wakes
// returned seen.
func (w *Waiter) WaitFD(fd int, events int16, deadline time.Time, seen uint64) (Ready, error) {
	fds := [3]unix.PollFd{
		{Fd: int32(fd), Events: events},
		{Fd: int32(w.wake), Events: unix.POLLIN},
		{Fd: int32(w.status), Events: unix.POLLIN},
	}
	stale := false // the pipe holds only wake-ups seen already
	h := w.hold()
	for {
		if w.wakes.Load() != seen {
			return Woken, nil
		}
		ms, raw, ok := h.next(deadline)
		if !ok {
			h.done()
			return TimedOut, nil
		}
		watch := fds[:]
		if !raw {
			watch = fds[:2] // the netpoller reads the status socket meanwhile
		}
		if stale {
			fds[1].Fd = -1 // poll skips it
			if ms < 0 || ms > int(staleRecheck/time.Millisecond) {
				ms = int(staleRecheck / time.Millisecond)
			}
		}
		n, err := poll(watch, ms, raw)
		switch {
		case h.idle(n, err, raw):
		case err != nil:
			return 0, os.NewSyscallError("poll", err)
		case fds[0].Revents != 0: // ready, or in error: the next call says which
			h.done()
			return FDReady, nil
		case fds[1].Revents != 0 && w.wakes.Load() != seen:
		case fds[1].Revents != 0 && w.waiters.Load() <= 1:
			// Wake-ups seen already, and no other wait that may not have
			// seen them (a wait counts itself before it loads seen).
			w.drain()
		case fds[1].Revents != 0:
			stale = true
		default: // a record on the status socket
			h.off = true
		}
	}
}
