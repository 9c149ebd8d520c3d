package prefork

import (
	"errors"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/wire"
)

// What makes a child stop or change course: its master's records and its
// own signals.

// catchSignals makes SIGINT and SIGTERM begin a graceful stop, and a second
// one a stop at once; SIGHUP is the master's business. It returns the
// function that undoes it.
func (w *worker) catchSignals(masterPID int) func() {
	hups := make(chan os.Signal, 1) // never read: SIGHUP does nothing here
	before := runtime.NumGoroutine()
	signal.Notify(hups, syscall.SIGHUP)
	if runtime.NumGoroutine() == before { // the first Notify starts os/signal's watcher
		w.watcherBefore = 1
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-sigs:
			case <-done:
				return
			}
			var cause error
			if os.Getppid() != masterPID { // the parent-death signal
				cause = ErrMasterGone
			}
			if n > 0 {
				w.setPhase(childHardStopping, cause)
				continue
			}
			w.setPhase(childStopping, cause)
		}
	})
	return func() {
		signal.Stop(hups)
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}
}

// childPhase is where a child is in its life. It only moves forward.
type childPhase int32

const (
	childServing      childPhase = iota
	childRetiring                // leave once idle: the master has enough children
	childStopping                // the pool stops: finish the request, within ShutdownTimeout
	childHardStopping            // ShutdownTimeout has passed, or a second signal came: cancel the request
	childFinished                // run is over: no more changes, no more timers
)

// setPhase moves the child to phase p (cause: why it stops) and does what
// the change needs. Retiring and stopping wake the child's wait, so that it
// takes no new request, and close the stopping channel that requests
// watch, so that a long-lived connection ends at a clean point. A stop
// gives the request in hand ShutdownTimeout; a hard stop cancels
// its context and gives it killGrace more, after which the child exits by
// itself (exitNow), so that it cannot outlive a master that is gone.
func (w *worker) setPhase(p childPhase, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	from := childPhase(w.phase.Load())
	if p <= from || from == childFinished {
		return
	}
	if from < childStopping && p >= childStopping {
		w.stopCause = cause // before the phase, which publishes it
	}
	if from < childRetiring && p >= childRetiring {
		close(w.stopping)
	}
	w.phase.Store(int32(p))
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	switch p {
	case childRetiring, childStopping:
		w.waiter.Wake()
		if p == childStopping {
			w.timer = time.AfterFunc(w.cfg.shutdownTimeout, func() { w.setPhase(childHardStopping, nil) })
		}
	case childHardStopping:
		w.waiter.Wake()
		w.hardStop()
		w.timer = time.AfterFunc(killGrace, w.exitNow)
	}
}

// exitNow ends the process of a child whose request did not return after
// its context was cancelled, and killGrace more: a handler that ignores its
// context must not keep a child alive after its master is gone, nor keep a
// stopping pool waiting. It is the one place where the package calls
// os.Exit.
func (w *worker) exitNow() {
	w.mu.Lock()
	finished := childPhase(w.phase.Load()) == childFinished
	w.mu.Unlock()
	if !finished {
		w.log.Error("prefork: request did not end after ShutdownTimeout; exiting")
		os.Exit(2)
	}
}

func (w *worker) stopped() bool { return childPhase(w.phase.Load()) >= childStopping }

// readRecords handles what the master sends, while the child waits and
// while it serves, until run ends.
func (w *worker) readRecords() {
	r := wire.NewReader(w.status)
	for {
		rec, err := r.Next()
		switch {
		case errors.Is(err, wire.ErrMalformed):
			w.log.Error("prefork: malformed record from the master", "err", err)
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, os.ErrClosed): // run is over
			return
		case err != nil: // end of stream: the master is gone
			w.setPhase(childStopping, ErrMasterGone)
			return
		case rec.Kind == wire.Retire:
			w.setPhase(childRetiring, nil)
		case rec.Kind == wire.Stop:
			w.setPhase(childStopping, nil)
		case rec.Kind == wire.Park, rec.Kind == wire.Unpark:
			w.park.Store(rec.Kind == wire.Park)
			w.waiter.Wake() // to wait again, with or without the listener
		case rec.Kind == wire.Look:
			w.look.Store(true)
			w.waiter.Wake()
		case rec.Kind == wire.Contended:
			w.inHand.letGo(rec.Served)
		case rec.Kind == wire.Slow:
			w.logSlow(rec.Served)
		}
	}
}
