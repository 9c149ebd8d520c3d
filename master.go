package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// killGrace is how long after ShutdownTimeout a child may take to return
// from its cancelled request before it is killed.
const killGrace = time.Second

// child is the master's record of one child process. Whether it is idle
// or busy is on the board, in its slot.
type child struct {
	pid      int
	slot     int
	cmd      *exec.Cmd
	status   *os.File  // the master's end of the status socket
	ready    bool      // it has reported for duty
	leaving  bool      // it said it is leaving (Retiring)
	told     wire.Kind // Retire or Stop, once sent
	timedOut bool      // stopped by the master for RequestTimeout
	old      bool      // to be replaced by RestartChildren
	failed   string    // the error the child reported before it exited

	started    time.Time
	readyAt    time.Time
	begun      uint64    // the board's count of requests begun, when last seen
	busySince  time.Time // when the master first saw the current request
	terminated time.Time // when the master sent SIGTERM for RequestTimeout
	killed     bool
}

// active reports whether the child takes requests, or will once ready.
func (c *child) active() bool { return c.told == 0 && !c.leaving && !c.timedOut }

// event is what a child's watcher goroutine reports to the master's loop.
type event struct {
	pid    int
	rec    wire.Record
	bad    error // a malformed record
	exited bool
	err    error // how the child exited, when exited
}

type master struct {
	cfg      config
	log      *slog.Logger
	ctx      context.Context
	listener *os.File
	board    *board.Board
	boardFD  *os.File // the board's file, for children to map
	slots    []bool   // which board slots belong to a child: the master's own record
	exe      string
	env      []string
	spawner  *spawner
	children map[int]*child
	events   chan event
	askMu    sync.Mutex
	asked    []SignalAction // by Manager's methods, for the loop
	askWake  chan struct{}  // a buffer of one: the loop has asks to read
	done     chan struct{}  // closed when Run returns
	watchers sync.WaitGroup

	everReady   bool
	failures    int       // children in a row that failed to start, or died young
	lastFailure time.Time // when the last of them exited
	nextSpawn   time.Time // no start before this, after failures
	stopping    bool
	restarting  bool  // some children are due for replacement
	stopErr     error // what Run returns
}

func newMaster(ctx context.Context, cfg config) *master {
	return &master{
		cfg:      cfg,
		log:      cfg.logger,
		ctx:      ctx,
		children: make(map[int]*child),
		events:   make(chan event, 64),
		askWake:  make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// ask hands an action to the master's loop. It never blocks, so that a
// hook, which runs on the loop, can call Manager's methods too.
func (ms *master) ask(a SignalAction) {
	ms.askMu.Lock()
	ms.asked = append(ms.asked, a)
	ms.askMu.Unlock()
	select {
	case ms.askWake <- struct{}{}:
	default: // the loop will read this ask with the others
	}
}

func (ms *master) run() error {
	ctx, cfg := ms.ctx, ms.cfg
	hooks := cfg.hooks
	var handed wire.Listener
	if cfg.reusePort {
		// Each child binds; the master only settles which port they share.
		addr, err := sys.ReservePort(cfg.network, cfg.addr)
		if err != nil {
			return fmt.Errorf("prefork: resolve %s %s: %w", cfg.network, cfg.addr, err)
		}
		handed = wire.Listener{Network: cfg.network, Addr: addr}
		ms.log.Info("prefork: children listen with SO_REUSEPORT", "network", cfg.network, "addr", addr, "pid", os.Getpid())
	} else {
		if err := callHook("PreBind", hooks.PreBind, ctx); err != nil {
			return err
		}
		listener, addr, err := sys.Listen(cfg.network, cfg.addr, cfg.backlog, false)
		if err != nil {
			return fmt.Errorf("prefork: listen on %s %s: %w", cfg.network, cfg.addr, err)
		}
		ms.listener = listener
		// The socket stays open until every child is gone (connections
		// waiting in its queue would be reset), and its file goes with it.
		defer sys.RemoveSocketFile(cfg.network, cfg.addr)
		defer listener.Close()
		handed = wire.Listener{Network: cfg.network, Addr: addr.String(), FD: wire.FDFirstListener}
		if hooks.PostBind != nil {
			if err := guard("PostBind", func() error { return hooks.PostBind(ctx, addr) }); err != nil {
				return fmt.Errorf("prefork: PostBind hook: %w", err)
			}
		}
		ms.log.Info("prefork: listening", "network", cfg.network, "addr", addr.String(), "pid", os.Getpid())
	}

	if err := callHook("PreSignalSetup", hooks.PreSignalSetup, ctx); err != nil {
		return err
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)
	if err := callHook("PostSignalSetup", hooks.PostSignalSetup, ctx); err != nil {
		return err
	}

	var err error
	if ms.board, ms.boardFD, err = board.Create(cfg.maxServers); err != nil {
		return fmt.Errorf("prefork: scoreboard: %w", err)
	}
	ms.slots = make([]bool, cfg.maxServers)
	defer ms.boardFD.Close()
	defer ms.board.Close()
	if ms.exe, err = sys.Executable(); err != nil {
		return fmt.Errorf("prefork: cannot find the program to run as children: %w", err)
	}
	ms.env = childEnv([]wire.Listener{handed}, ms.cfg.childMaxProcs)
	ms.spawner = startSpawner(ms.cfg.childTimerSlack)
	defer ms.spawner.stop()

	if err := callHook("PreInitChildren", hooks.PreInitChildren, ctx); err != nil {
		return err
	}
	return ms.loop(signals)
}

func callHook(name string, hook func(context.Context) error, ctx context.Context) error {
	if hook == nil {
		return nil
	}
	if err := guard(name, func() error { return hook(ctx) }); err != nil {
		return fmt.Errorf("prefork: %s hook: %w", name, err)
	}
	return nil
}

// loop keeps the pool sized until a stop is complete. It owns all of the
// master's state: the watchers and the spawner only send it events.
func (ms *master) loop(signals <-chan os.Signal) error {
	hooks := ms.cfg.hooks
	retireTick := time.NewTicker(retireInterval)
	defer retireTick.Stop()
	var timeoutTick <-chan time.Time
	if ms.cfg.requestTimeout > 0 {
		t := time.NewTicker(timeoutCheckInterval)
		defer t.Stop()
		timeoutTick = t.C
	}
	var killTimer, spawnTimer <-chan time.Time
	ctxDone := ms.ctx.Done()
	initialized := false
	signalStops := 0

	for !ms.stopping || len(ms.children) > 0 {
		ms.replaceOld()
		spawnTimer = ms.scale(spawnTimer)
		if !initialized && !ms.stopping && ms.census().ready >= ms.cfg.minServers {
			initialized = true
			ms.log.Info("prefork: pool ready", "children", len(ms.children))
			err := callHook("PostInitChildren", hooks.PostInitChildren, ms.ctx)
			if err == nil {
				err = callHook("PreLoop", hooks.PreLoop, ms.ctx)
			}
			if err != nil {
				ms.stop(ActionStopNow, err)
				continue
			}
		}
		select {
		case ev := <-ms.events:
			ms.handle(ev)
		case sig := <-signals:
			decide := hooks.Signal
			if decide == nil {
				decide = DefaultSignal
			}
			// Only an earlier signal makes this one a second: a context
			// cancelled by the same SIGTERM (signal.NotifyContext) must not
			// turn it into a stop at once.
			stopping := signalStops > 0
			var action SignalAction
			if err := guard("Signal", func() error { action = decide(sig, stopping); return nil }); err != nil {
				logPanic(ms.log, err)
				action = DefaultSignal(sig, stopping)
			}
			ms.log.Info("prefork: signal", "signal", sig.String(), "action", action.String())
			if action == ActionStop || action == ActionStopNow {
				signalStops++
			}
			ms.stop(action, nil)
		case <-ctxDone:
			ctxDone = nil
			ms.log.Info("prefork: context done, stopping", "cause", context.Cause(ms.ctx))
			ms.stop(ActionStop, nil)
		case <-retireTick.C:
			ms.retireSurplus()
		case <-timeoutTick:
			ms.enforceRequestTimeout()
		case <-ms.askWake:
			ms.askMu.Lock()
			asked := ms.asked
			ms.asked = nil
			ms.askMu.Unlock()
			for _, a := range asked {
				ms.log.Info("prefork: asked", "action", a.String())
				ms.stop(a, nil)
			}
		case <-spawnTimer:
			spawnTimer = nil
		case <-killTimer:
			ms.log.Warn("prefork: children still running after ShutdownTimeout; killing them", "children", len(ms.children))
			ms.killAll()
		}
		if ms.stopping && killTimer == nil {
			killTimer = time.After(ms.cfg.shutdownTimeout + killGrace)
		}
	}
	ms.watchers.Wait()
	if hooks.PreServerClose != nil {
		err := guard("PreServerClose", func() error { hooks.PreServerClose(context.WithoutCancel(ms.ctx)); return nil })
		if err != nil {
			logPanic(ms.log, err)
			if ms.stopErr == nil {
				ms.stopErr = err
			}
		}
	}
	ms.log.Info("prefork: stopped")
	return ms.stopErr
}

// stop begins a stop, or escalates one to ActionStopNow. err, if not nil and no
// error was recorded before, is what Run will return.
func (ms *master) stop(action SignalAction, err error) {
	if ms.stopErr == nil {
		ms.stopErr = err
	}
	switch action {
	case ActionStop:
		if !ms.stopping {
			ms.stopping = true
			ms.closeIntake()
			for _, c := range ms.children {
				ms.tell(c, wire.Stop)
			}
		}
	case ActionStopNow:
		ms.stopping = true
		ms.killAll()
	case ActionRestart:
		ms.beginRestart()
	}
}

func (ms *master) killAll() {
	for _, c := range ms.children {
		c.cmd.Process.Kill()
	}
}

func (ms *master) handle(ev event) {
	c := ms.children[ev.pid]
	switch {
	case c == nil:
	case ev.exited:
		ms.exited(c, ev.err)
	case ev.bad != nil:
		ms.log.Error("prefork: child sent a malformed status record; killing it", "pid", c.pid, "err", ev.bad)
		c.cmd.Process.Kill()
	case ev.rec.Kind == wire.Retire || ev.rec.Kind == wire.Stop:
		ms.log.Error("prefork: child sent a master's record; killing it", "pid", c.pid)
		c.cmd.Process.Kill()
	case ev.rec.Kind == wire.Failed:
		c.failed = ev.rec.Text
	case ev.rec.Kind == wire.Idle:
		if !c.ready {
			c.ready, c.readyAt = true, time.Now()
			ms.everReady = true
			ms.log.Debug("prefork: child ready", "pid", c.pid)
		}
	case ev.rec.Kind == wire.Busy:
		// Idle children run short: the loop's next call to scale acts.
	case ev.rec.Kind == wire.Retiring:
		c.leaving = true
	}
}

func (ms *master) exited(c *child, err error) {
	delete(ms.children, c.pid)
	c.status.Close()
	_, served, _ := ms.board.State(c.slot)
	ms.board.Release(c.slot)
	ms.slots[c.slot] = false
	how := "exit status 0"
	if err != nil {
		how = err.Error()
	}
	if c.failed != "" {
		how += ": " + c.failed
	}
	switch {
	case !c.ready && !ms.stopping:
		ms.log.Warn("prefork: child exited before it was ready", "pid", c.pid, "how", how)
		if !killed(err) { // see below
			ms.startFailed(fmt.Errorf("child %d: %s", c.pid, how))
		}
	case (err != nil || c.failed != "") && c.told == 0 && !c.timedOut && !ms.stopping:
		ms.log.Warn("prefork: child died", "pid", c.pid, "how", how, "served", served)
		if time.Since(c.started) < youngDeath && !killed(err) {
			// A child that crashes at once, on every request say, must
			// not turn each request into a fork. SIGKILL comes from
			// outside (an operator, the OOM killer): that is not the
			// child's fault, and is not paced.
			ms.startFailed(fmt.Errorf("child %d died %v after it started: %s", c.pid, time.Since(c.started).Round(time.Millisecond), how))
		}
	default:
		ms.log.Debug("prefork: child exited", "pid", c.pid, "how", how, "served", served)
	}
}

// closeIntake stops new connections from entering the shared listener's
// queue, before the children are told to stop: they serve what is queued
// before they leave, and the listener closes with nothing in it to reset.
func (ms *master) closeIntake() {
	if ms.listener == nil {
		return
	}
	if err := sys.CloseIntake(int(ms.listener.Fd()), ms.cfg.network); err != nil {
		ms.log.Warn("prefork: cannot refuse new connections while stopping; those that come will be reset", "err", err)
	}
}

// tell sends a child Retire or Stop. Either makes it leave the pool; Stop
// also goes to a child already told to retire, whose request in hand must
// now learn that the pool stops.
func (ms *master) tell(c *child, kind wire.Kind) {
	if c.told == kind || c.told == wire.Stop {
		return
	}
	c.told = kind
	var b [wire.RecordSize]byte
	// A child that cannot be told (it just died) is reaped all the same.
	c.status.Write(wire.Encode(&b, wire.Record{Kind: kind}))
}

// killed reports whether a child's exit error says SIGKILL ended it.
func killed(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	status, ok := exit.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == syscall.SIGKILL
}
