package prefork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// worker is the child side: it waits for requests on its listener, serves
// them one at a time and reports to the master.
type worker struct {
	dispatcher // the Child and its hooks; hardCtx is cancelled by hardStop
	cfg        config
	sockets    []*socket
	turn       int // the socket to look at first for the next request
	status     *os.File
	board      *board.Board
	slot       int
	waiter     *sys.Waiter
	poller     *sys.Poller
	datagram   []byte

	hardStop context.CancelFunc // cancels hardCtx: the child must stop now

	park atomic.Bool // the master sent Park, and no Unpark since
	// look: the master sent Look, and the child has not tried to take a
	// request since.
	look atomic.Bool

	inHand inHand // the request being served, for the master's asks about it

	// The child's phase changes only in setPhase, under mu; serve reads
	// it without the lock.
	mu        sync.Mutex
	phase     atomic.Int32  // a childPhase
	stopping  chan struct{} // closed when the child is to leave: retiring, or stopping
	stopCause error         // why the child stops; written before the phase that publishes it
	timer     *time.Timer   // the deadline of the phase, if it has one

	maxRequests int // MaxRequests plus this child's jitter
	served      int
	reported    uint32 // the state last put on the board
	announced   bool   // the master knows the child is ready
	buf         [wire.RecordSize]byte
	spurious    int // wake-ups that found no request
	// rssAt is when the child last read its resident set size.
	rssAt time.Time
	// watcherBefore is 1 if os/signal's watcher goroutine ran before Run.
	watcherBefore int

	// Failures to accept for lack of resources: since when, how many
	// since the last warning, and when that was.
	shortSince  time.Time
	shortCount  int
	shortLogged time.Time
}

func runChild(ctx context.Context, cfg config, h *handover) (err error) {
	if h.err != nil {
		return h.err
	}
	if h.status == nil {
		return errors.New("prefork: Run called twice in a child")
	}
	status := h.status
	h.status = nil
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && cfg.childMaxProcs >= 0 {
		runtime.GOMAXPROCS(max(cfg.childMaxProcs, 1))
	}
	defer status.Close()
	defer h.board.Close()
	defer func() {
		if err != nil && !errors.Is(err, ErrMasterGone) {
			status.Write(wire.EncodeFailed(err.Error())) // for the master's log
		}
	}()
	// The parent-death signal covers the window before this check only
	// on Linux, and only while the master lives: a child that starts after
	// its master died must not serve.
	if os.Getppid() != h.masterPID {
		return ErrMasterGone
	}
	// Run's ctx ends in a graceful stop (see run), not in cancelled requests.
	hardCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	d, err := newDispatcher(cfg, cfg.logger.With("pid", os.Getpid()), hardCtx)
	if err != nil {
		return err
	}
	w := &worker{
		dispatcher:  d,
		cfg:         cfg,
		hardStop:    hardStop,
		status:      status,
		board:       h.board,
		slot:        h.slot,
		stopping:    make(chan struct{}),
		maxRequests: cfg.requestLimit(),
	}
	w.park.Store(h.parked) // the Park record that follows says it again
	err = w.run(ctx, h.masterPID, h.listeners)
	w.shutdown(err)
	var held uint64
	if w.waiter != nil {
		held = w.waiter.HeldWaits()
	}
	w.log.Debug("prefork: child exiting", "served", w.served, "spurious_wakeups", w.spurious, "held_waits", held, "err", err)
	return err
}

func (w *worker) run(ctx context.Context, masterPID int, handed []wire.Listener) error {
	err := w.listen(handed)
	defer w.closeSockets()
	if err != nil {
		return err
	}
	statusFD, err := sys.FD(w.status)
	if err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	if w.waiter, err = sys.NewWaiter(statusFD); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	defer w.waiter.Close()
	w.waiter.MarkWaits(w.board.Waiting(w.slot))
	fds := make([]int, len(w.sockets))
	for i, s := range w.sockets {
		fds[i] = s.fd
	}
	if w.poller, err = sys.NewPoller(fds, w.waiter); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	defer w.poller.Close()

	before := runtime.NumGoroutine()
	var reading sync.WaitGroup
	reading.Go(w.readRecords)
	undoSignals := func() {}
	if !w.cfg.noSignals {
		undoSignals = w.catchSignals(masterPID)
	}
	// The P may be held while the program runs no goroutines but the one
	// in Run and the child's own, started just now: any other, whether the
	// program started it before Run or a hook did, may need the P at once.
	// os/signal's watcher is one of the child's own even when the program
	// started it (a signal.Notify before Run): it only waits for signals.
	w.waiter.Pin(1 + runtime.NumGoroutine() - before + w.watcherBefore)
	stopOnCancel := context.AfterFunc(ctx, func() { w.setPhase(childStopping, context.Cause(ctx)) })
	defer func() {
		// Silence every source of a phase change, then the phase's
		// timer, so that nothing fires after run returns (before the
		// wake-up pipe closes, in the defers above).
		stopOnCancel()
		undoSignals()
		w.status.SetReadDeadline(time.Now()) // ends readRecords
		reading.Wait()
		w.setPhase(childFinished, nil)
	}()

	if err := w.initialize(); err != nil {
		return err
	}
	w.noteRSS()
	err = w.serve()
	w.report(board.Leaving)
	if err == nil {
		w.serveQueues()
	}
	return err
}

// socket is one of the sockets a child serves.
type socket struct {
	name    string // for Request.SocketName
	network string
	fd      int
	packet  bool     // a datagram socket
	own     *os.File // the socket the child bound (reuse-port mode), whose queue it serves before leaving; nil when inherited
}

// listen takes the inherited sockets, or in reuse-port mode binds sockets
// of the child's own, between the PreBind and PostBind hooks. The sockets
// it has taken are in w.sockets, also on failure, for closeSockets.
func (w *worker) listen(handed []wire.Listener) error {
	for _, ln := range handed {
		if sys.IsPacket(ln.Network) && w.datagram == nil {
			w.datagram = make([]byte, maxDatagram)
		}
	}
	if handed[0].FD != 0 {
		// All of them are the child's to close, whatever fails.
		for _, ln := range handed {
			w.sockets = append(w.sockets, &socket{name: ln.Name, network: ln.Network, fd: ln.FD, packet: sys.IsPacket(ln.Network)})
		}
		for _, s := range w.sockets {
			if err := sys.CheckListener(s.fd); err != nil {
				return fmt.Errorf("prefork: %w", err)
			}
		}
		return nil
	}
	if pb, ok := w.child.(PreBinder); ok {
		if err := guard("PreBind", func() error { return pb.PreBind(w.hardCtx) }); err != nil {
			return fmt.Errorf("prefork: PreBind: %w", err)
		}
	}
	for _, ln := range handed {
		f, addr, err := sys.Listen(ln.Network, ln.Addr, w.cfg.backlog, true)
		if err != nil {
			return fmt.Errorf("prefork: listen on %s %s: %w", ln.Network, ln.Addr, err)
		}
		s := &socket{name: ln.Name, network: ln.Network, packet: sys.IsPacket(ln.Network), own: f}
		w.sockets = append(w.sockets, s)
		if s.fd, err = sys.FD(f); err != nil {
			return fmt.Errorf("prefork: %w", err)
		}
		if pb, ok := w.child.(PostBinder); ok {
			if err := guard("PostBind", func() error { return pb.PostBind(w.hardCtx, addr) }); err != nil {
				return fmt.Errorf("prefork: PostBind: %w", err)
			}
		}
	}
	return nil
}

// closeSockets closes the sockets that listen took.
func (w *worker) closeSockets() {
	for _, s := range w.sockets {
		if s.own != nil {
			s.own.Close()
		} else {
			syscall.Close(s.fd)
		}
	}
}

func (w *worker) serve() error {
	// After a request, the next one may be queued already: the child
	// takes it without a wait, which under load saves a sleep and a
	// wake-up per request.
	queued := false
	for {
		switch childPhase(w.phase.Load()) {
		case childStopping, childHardStopping:
			return w.stopCause
		case childRetiring:
			return nil
		}
		if w.maxRequests > 0 && w.served >= w.maxRequests {
			w.log.Debug("prefork: child reached MaxRequests", "served", w.served)
			return nil
		}
		// A child the master parked finishes the request in hand and takes
		// no more, however many wait: under load the queue seldom empties.
		queued = queued && !w.park.Load()
		if !queued {
			parked, changed, err := w.followPark()
			if err != nil {
				return err
			}
			if parked && changed {
				// The kernel may have woken this child for a connection
				// just before it stopped listening, and will not wake
				// another for it: take it.
				r, err := w.next()
				if err != nil {
					return err
				}
				if r != nil {
					if err := w.serveOne(r); err != nil {
						return err
					}
					continue
				}
			}
			if parked {
				w.report(board.Parked)
			} else {
				w.report(board.Idle)
			}
			listenerReady, err := w.poller.Wait()
			if err != nil {
				return fmt.Errorf("prefork: %w", err)
			}
			// A child that is leaving still takes the connection it was
			// woken for: the kernel woke no other child for it. One the
			// master asked to look tries to take one even though its wait
			// saw none: the kernel tells one waiter of a connection, and
			// if that one died, no other wait will see it.
			if !listenerReady && !w.look.Swap(false) {
				continue
			}
		}
		r, err := w.next()
		if err != nil {
			return err
		}
		if r == nil && !queued {
			w.spurious++ // another child took it
		}
		if queued = r != nil; queued {
			if err := w.serveOne(r); err != nil {
				return err
			}
		}
	}
}

// followPark makes the child watch the listener, or stop watching it, as the
// master last asked; it reports whether the child is parked, and whether it
// has just stopped or started watching.
func (w *worker) followPark() (parked, changed bool, err error) {
	parked = w.park.Load()
	changed, err = w.poller.Listen(!parked)
	if err != nil {
		return false, false, fmt.Errorf("prefork: %w", err)
	}
	return parked, changed, nil
}

// serveQueues serves what is still queued before the child leaves. A
// child that leaves a socket of its own serves what is queued on it, which
// would be lost. When the pool stops, the children serve what is queued on
// the shared sockets too, once the master has closed them to new
// connections (see master.closeIntake); a child that stops alone (its own
// signal, RequestTimeout) leaves the queues to the others. It serves until
// the queues are empty, for at most killGrace: under steady load a queue
// that still takes connections never empties.
func (w *worker) serveQueues() {
	var left []*socket
	for _, s := range w.sockets {
		if s.own != nil || w.stopped() && sys.IntakeClosed(s.fd) {
			left = append(left, s)
		}
	}
	deadline := time.Now().Add(killGrace)
	for len(left) > 0 && w.hardCtx.Err() == nil && time.Now().Before(deadline) {
		s := left[0]
		r, err := w.nextFrom(s)
		if err != nil || r != nil && w.serveOne(r) != nil {
			return
		}
		if r == nil {
			left = left[1:] // empty
			continue
		}
		w.board.SetLeaving(w.slot, w.served)
		left = append(left[1:], s) // the others' turn
	}
}

func (w *worker) serveOne(r *Request) error {
	ip, port, ok := ipPort(r.RemoteAddr)
	w.board.SetRemote(w.slot, ip, port, ok) // before Busy: the master reads it then
	w.report(board.Busy)
	w.inHand.begin(r, uint64(w.served)+1, w.cfg.slowRequest > 0) // the board's count of requests begun
	defer w.inHand.end()
	if r.Conn != nil {
		r.waiter = w.waiter
		defer w.waiter.Helpers(0)
	}
	err := w.handle(r)
	w.served++
	w.noteRSS()
	return err
}

// next takes one request from the sockets, or returns nil if there is
// none (another child took it, or a datagram was dropped). It looks at the
// sockets in turn, from the one after the socket of the last request, so
// that a socket whose queue never empties does not starve the others.
func (w *worker) next() (*Request, error) {
	for k := range w.sockets {
		i := (w.turn + k) % len(w.sockets)
		r, err := w.nextFrom(w.sockets[i])
		if r != nil || err != nil {
			w.turn = (i + 1) % len(w.sockets)
			return r, err
		}
	}
	return nil, nil
}

// nextFrom takes one request from socket s, or returns nil if there is
// none.
func (w *worker) nextFrom(s *socket) (*Request, error) {
	if s.packet {
		return w.nextDatagram(s)
	}
	conn, err := sys.Accept(s.fd, s.network, w.waiter)
	if err != nil {
		return nil, w.acceptError("accept", err)
	}
	w.shortSince = time.Time{}
	// Reply writes to Conn: no reply function to make.
	return &Request{Conn: conn, RemoteAddr: conn.RemoteAddr(), Network: s.network, SocketName: s.name, Served: w.served, stopping: w.stopping}, nil
}

// sickAfter is how long a child may go on failing to accept for lack of
// descriptors or memory before it leaves to be replaced: a shortage of the
// whole system may pass, but a process that has run out of descriptors
// (a handler that leaks them) stays out, and takes nothing from the queue
// while the board calls it idle.
const sickAfter = 500 * time.Millisecond

// errSick ends a child that has failed to accept for sickAfter.
var errSick = errors.New("prefork: child cannot take requests for lack of resources; leaving to be replaced")

// acceptError sorts an error of accept or recvmsg: nil if the child should
// go on waiting, the error if it cannot.
func (w *worker) acceptError(call string, err error) error {
	switch {
	case errors.Is(err, syscall.EAGAIN): // nothing left, or another child took it
		return nil
	case sys.IsTemporary(err):
		return nil
	case sys.IsShortOfResources(err):
		now := time.Now()
		if w.shortSince.IsZero() {
			w.shortSince = now
		}
		if w.shortCount++; now.Sub(w.shortLogged) >= time.Second { // a line a second at most
			w.log.Warn("prefork: "+call, "err", err, "times", w.shortCount)
			w.shortLogged, w.shortCount = now, 0
		}
		if now.Sub(w.shortSince) >= sickAfter {
			return fmt.Errorf("%w: %s: %w", errSick, call, err)
		}
		time.Sleep(10 * time.Millisecond) // let the shortage pass
		return nil
	}
	return fmt.Errorf("prefork: %s: %w", call, err)
}

// report records the child's state on the scoreboard, once per change. The
// master hears of it over the status socket only when the child becomes
// ready, when it leaves, and when it takes a request that sets off the
// board's alarm (the first request after a quiet spell, or one that takes
// the last idle slot while the pool could grow): the requests in between
// cost the master nothing.
func (w *worker) report(state uint32) {
	if state == board.Busy {
		w.board.SetBusy(w.slot) // for every request: RequestTimeout counts from here
		if w.reported == board.Leaving {
			return // serving its own socket's queue on the way out
		}
		w.reported = state
		if w.board.Alarm() {
			w.send(wire.Busy)
		}
		return
	}
	if w.reported == state {
		return
	}
	w.reported = state
	switch state {
	case board.Idle, board.Parked:
		if state == board.Idle {
			w.board.SetIdle(w.slot, w.served)
		} else {
			w.board.SetParked(w.slot, w.served)
		}
		if !w.announced {
			w.announced = true
			w.send(wire.Idle)
		}
	case board.Leaving:
		w.board.SetLeaving(w.slot, w.served)
		w.send(wire.Retiring)
	}
}

// send writes a record to the master.
func (w *worker) send(kind wire.Kind) {
	rec := wire.Record{Kind: kind, Served: uint32(w.served)}
	if _, err := w.status.Write(wire.Encode(&w.buf, rec)); err != nil {
		w.setPhase(childStopping, ErrMasterGone)
	}
}
