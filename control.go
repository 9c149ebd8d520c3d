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
			if n > 0 {
				w.hardStop()
				continue
			}
			var cause error
			if os.Getppid() != masterPID { // the parent-death signal
				cause = ErrMasterGone
			}
			w.beginStop(cause)
		}
	})
	return func() {
		signal.Stop(hups)
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}
}

// beginStop starts a graceful stop, once: the child takes no new request,
// and its request context is cancelled after ShutdownTimeout. If the
// request still does not return, the child exits by itself a little later,
// so that it cannot outlive a master that is gone.
func (w *worker) beginStop(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopBegun || w.finished {
		return
	}
	w.stopBegun = true
	w.stopCause = cause
	close(w.stopping)
	w.waiter.Wake()
	w.timers = append(w.timers,
		time.AfterFunc(w.cfg.shutdownTimeout, w.hardStop),
		time.AfterFunc(w.cfg.shutdownTimeout+killGrace, func() {
			w.mu.Lock()
			finished := w.finished
			w.mu.Unlock()
			if !finished {
				w.log.Error("prefork: request did not end after ShutdownTimeout; exiting")
				os.Exit(2)
			}
		}))
}

// retire makes the child leave once it is idle, without hurrying the
// request in hand: the master has enough children without it.
func (w *worker) retire() {
	w.retired.Store(true)
	w.waiter.Wake()
}

func (w *worker) stopped() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

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
			w.beginStop(ErrMasterGone)
			return
		case rec.Kind == wire.Retire:
			w.retire()
		case rec.Kind == wire.Stop:
			w.beginStop(nil)
		case rec.Kind == wire.Park, rec.Kind == wire.Unpark:
			w.park.Store(rec.Kind == wire.Park)
			w.waiter.Wake() // to wait again, with or without the listener
		case rec.Kind == wire.Look:
			w.waiter.Wake() // its next wait sees a connection that waits
		}
	}
}
