package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// worker is the child side: it waits for connections on the inherited
// listener, serves them one at a time and reports to the master.
type worker struct {
	cfg      config
	log      *slog.Logger
	child    Child
	listener listenerFD
	status   *os.File
	wake     *sys.Wakeup
	poller   *sys.Poller

	// hardCtx is cancelled when the child must stop now.
	hardCtx  context.Context
	hardStop context.CancelFunc

	stopOnce  sync.Once
	stopping  chan struct{} // closed when a graceful stop begins
	stopCause error         // why; written before stopping is closed
	timers    []*time.Timer

	served   int
	reported wire.Kind
	buf      [wire.RecordSize]byte
	spurious int // wake-ups that found no connection
}

func runChild(ctx context.Context, cfg config, h *handover) error {
	if h.err != nil {
		return h.err
	}
	if h.status == nil {
		return errors.New("prefork: Run called twice in a child")
	}
	status := h.status
	h.status = nil
	// The parent-death signal covers the window before this check only
	// on Linux, and only while the master lives: a child that starts after
	// its master died must not serve.
	if os.Getppid() != h.masterPID {
		return ErrMasterGone
	}
	if len(h.listeners) != 1 {
		return fmt.Errorf("prefork: child was handed %d listeners, want 1", len(h.listeners))
	}
	ln := h.listeners[0]
	defer syscall.Close(ln.fd)
	if err := sys.CheckListener(ln.fd); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	user := cfg.newChild()
	if user == nil {
		return invalid("Manager.NewChild returned nil")
	}

	w := &worker{
		cfg:      cfg,
		log:      cfg.logger.With("pid", os.Getpid()),
		child:    user,
		listener: ln,
		status:   status,
		stopping: make(chan struct{}),
	}
	w.hardCtx, w.hardStop = context.WithCancel(ctx)
	defer w.hardStop()
	var err error
	if w.wake, err = sys.NewWakeup(); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	defer w.wake.Close()
	if w.poller, err = sys.NewPoller(ln.fd, w.wake.FD()); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	defer w.poller.Close()
	var reading sync.WaitGroup
	reading.Go(w.readRecords)
	defer reading.Wait()
	defer status.Close() // ends readRecords

	defer w.catchSignals(h.masterPID)()
	defer context.AfterFunc(ctx, func() { w.beginStop(context.Cause(ctx)) })()
	defer func() {
		for _, t := range w.timers {
			t.Stop()
		}
	}()

	if init, ok := user.(Initializer); ok {
		if err := init.Initialize(w.hardCtx); err != nil {
			err = fmt.Errorf("prefork: Initialize: %w", err)
			w.log.Error("prefork: child cannot initialize", "err", err)
			w.shutdown(err)
			return err
		}
	}
	err = w.serve()
	w.report(wire.Retiring)
	w.shutdown(err)
	w.log.Debug("prefork: child exiting", "served", w.served, "spurious_wakeups", w.spurious, "err", err)
	return err
}

// catchSignals makes SIGINT and SIGTERM begin a graceful stop, and a second
// one a stop at once; SIGHUP is the master's business. It returns the
// function that undoes it.
func (w *worker) catchSignals(masterPID int) func() {
	signal.Ignore(syscall.SIGHUP)
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
	w.stopOnce.Do(func() {
		w.stopCause = cause
		close(w.stopping)
		w.wake.Wake()
		w.timers = append(w.timers,
			time.AfterFunc(w.cfg.shutdownTimeout, w.hardStop),
			time.AfterFunc(w.cfg.shutdownTimeout+killGrace, func() {
				w.log.Error("prefork: request did not end after ShutdownTimeout; exiting")
				os.Exit(2)
			}))
	})
}

func (w *worker) serve() error {
	for {
		select {
		case <-w.stopping:
			return w.stopCause
		default:
		}
		if w.cfg.maxRequests > 0 && w.served >= w.cfg.maxRequests {
			w.log.Debug("prefork: child reached MaxRequests", "served", w.served)
			return nil
		}
		w.report(wire.Idle)
		listenerReady, _, err := w.poller.Wait()
		if err != nil {
			return fmt.Errorf("prefork: %w", err)
		}
		if !listenerReady {
			continue
		}
		select {
		case <-w.stopping: // leave the connection to a child that goes on
			continue
		default:
		}
		conn, err := sys.Accept(w.listener.fd)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			w.spurious++ // another child took it
			continue
		case err != nil && sys.IsTemporary(err):
			w.log.Warn("prefork: accept", "err", err)
			time.Sleep(10 * time.Millisecond) // let a shortage of descriptors pass
			continue
		case err != nil:
			return fmt.Errorf("prefork: accept: %w", err)
		}
		w.report(wire.Busy)
		w.handle(conn)
		w.served++
	}
}

// readRecords handles what the master sends, while the child waits and
// while it serves, until the status socket is closed.
func (w *worker) readRecords() {
	r := wire.NewReader(w.status)
	for {
		rec, err := r.Next()
		switch {
		case errors.Is(err, wire.ErrMalformed):
			w.log.Error("prefork: malformed record from the master", "err", err)
		case errors.Is(err, os.ErrClosed): // the child is done
			return
		case err != nil: // end of stream: the master is gone
			w.beginStop(ErrMasterGone)
			return
		case rec.Kind == wire.Retire:
			w.beginStop(nil)
		}
	}
}

// report tells the master the child's state, once per change.
func (w *worker) report(kind wire.Kind) {
	if w.reported == kind {
		return
	}
	w.reported = kind
	rec := wire.Record{Kind: kind, Served: uint32(w.served)}
	if _, err := w.status.Write(wire.Encode(&w.buf, rec)); err != nil {
		w.beginStop(ErrMasterGone)
	}
}

// handle runs one request through the Child's hooks.
func (w *worker) handle(conn net.Conn) {
	r := &Request{Conn: conn, RemoteAddr: conn.RemoteAddr(), Network: w.listener.network, Served: w.served, stopping: w.stopping}
	ctx := w.hardCtx
	// Once the stop cannot wait any longer, a handler that watches ctx has
	// half of killGrace to write a last word; then its reads and writes
	// fail too, for handlers that do not watch ctx, so that the child can
	// still exit by itself before it is killed.
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now().Add(killGrace / 2)) })()
	defer conn.Close() // again after PostProcessRequest's Close: harmless

	err := w.process(ctx, r)
	conn.Close()
	if pp, ok := w.child.(PostProcessor); ok {
		pp.PostProcessRequest(ctx, r, err)
	}
}

// process runs the hooks between accept and close, and returns why the
// request ended.
func (w *worker) process(ctx context.Context, r *Request) error {
	if pa, ok := w.child.(PostAccepter); ok {
		if err := pa.PostAccept(ctx, r); err != nil {
			w.log.Warn("prefork: PostAccept", "remote", r.RemoteAddr.String(), "err", err)
			return fmt.Errorf("prefork: PostAccept: %w", err)
		}
	}
	if ad, ok := w.child.(AllowDenier); ok && !ad.AllowDeny(ctx, r) {
		if rd, ok := w.child.(RequestDenier); ok {
			rd.RequestDenied(ctx, r)
		}
		return ErrRequestDenied
	}
	err := w.child.ProcessRequest(ctx, r)
	if err != nil {
		w.log.Warn("prefork: request failed", "remote", r.RemoteAddr.String(), "err", err)
	}
	return err
}

func (w *worker) shutdown(err error) {
	if s, ok := w.child.(Shutdowner); ok {
		s.Shutdown(w.hardCtx, err)
	}
}
