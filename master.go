package prefork

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
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

// event is what a child's watcher, or the spawner, reports to the loop.
type event struct {
	c       *child
	started bool // the spawner started it (or failed to: err)
	rec     wire.Record
	bad     error // a malformed record
	exited  bool
	err     error // how the child exited, or why it could not start
}

type master struct {
	cfg config
	log *slog.Logger
	ctx context.Context
	// listeners are the sockets the master shares with its children, in
	// the order they are handed over; none in reuse-port mode.
	listeners []*listener
	board     *board.Board
	boardFD   *os.File // the board's file, for children to map
	slots     []bool   // which board slots belong to a child: the master's own record
	exe       string
	env       []string
	spawner   *spawner
	children  []*child // oldest first
	events    chan event
	askMu     sync.Mutex
	asked     []SignalAction // by Manager's methods, for the loop
	limits    *Limits        // by SetLimits, for the loop; the newest wins
	askWake   chan struct{}  // a buffer of one: the loop has asks to read
	// upgradeAsks are Manager.Upgrade's callers, for the loop.
	upgradeAsks []chan<- error
	upgrading   *successor    // the upgrade under way, if any
	upgradeDone chan error    // its outcome, for the loop
	handedOff   chan struct{} // the master this one succeeds has given it the sockets
	dismissed   []*os.Process // successors that will not take over, until they have exited
	sdWhere     string        // the sockets, for the service manager's STATUS lines
	done        chan struct{} // closed when Run returns
	watchers    sync.WaitGroup

	everReady    bool      // a child has been ready
	poolReady    bool      // MinServers children have been ready: PostInitChildren ran
	failures     int       // attempts in a row whose children failed to start, or died young
	retries      int       // children started since failures began
	firstFailure time.Time // when the first of them failed
	lastFailure  time.Time // when the last of them failed
	nextSpawn    time.Time // no start before this, after failures
	stopping     bool
	draining     <-chan time.Time // a stop waits for DrainDelay to pass
	drained      bool             // the drain is over: the next ActionStop stops
	restarting   bool             // some children are due for replacement
	stopErr      error            // what Run returns

	policy    policy
	begunGone uint64        // requests begun by children that have exited
	watching  bool          // the loop looks at the pool every tick: something is busy
	alarmAt   time.Time     // when a child last set off the board's alarm
	lookIn    time.Duration // until the loop's next look while it watches
	load      loadView      // what the master last saw of the machine
	atMax     bool          // connections waited that MaxServers kept from being served
	// queuedSince is when the looks began to see connections waiting,
	// without a look in between that saw none; zero while none wait.
	queuedSince time.Time
	reported    int // the number of children PoolResized last reported
	stats       statsBoard
	sd          notifier // tells the service manager (systemd)
}

func newMaster(ctx context.Context, cfg config) *master {
	ms := &master{
		cfg:         cfg,
		lookIn:      watchInterval,
		log:         cfg.logger,
		ctx:         ctx,
		events:      make(chan event, 64),
		askWake:     make(chan struct{}, 1),
		upgradeDone: make(chan error, 1),
		handedOff:   make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	ms.stats.pub = Stats{Queued: -1, MaxQueued: -1, Exits: map[ExitReason]uint64{}}
	return ms
}

// ask hands an action to the master's loop. It never blocks, so that a
// hook, which runs on the loop, can call Manager's methods too.
func (ms *master) ask(a SignalAction) {
	ms.askMu.Lock()
	ms.asked = append(ms.asked, a)
	ms.askMu.Unlock()
	ms.wake()
}

// wake makes the loop read the asks.
func (ms *master) wake() {
	select {
	case ms.askWake <- struct{}{}:
	default: // the loop will read this ask with the others
	}
}

func (ms *master) run() error {
	ctx, cfg := ms.ctx, ms.cfg
	defer cfg.predecessor.release() // a master that fails before its pool is ready leaves the sockets to the old one
	hooks := cfg.hooks
	var handed []wire.Listener
	if cfg.reusePort {
		// Each child binds; the master only settles which ports they share.
		for _, s := range cfg.sockets {
			addr, err := sys.ReservePort(s.network, s.addr)
			if err != nil {
				return fmt.Errorf("prefork: resolve %s %s: %w", s.network, s.addr, err)
			}
			handed = append(handed, wire.Listener{Name: cmp.Or(s.name, s.network+" "+addr), Network: s.network, Addr: addr})
			ms.log.Info("prefork: children listen with SO_REUSEPORT", "network", s.network, "addr", addr, "pid", os.Getpid())
		}
	} else {
		if err := ms.listen(); err != nil {
			return err
		}
		// The sockets stay open until every child is gone (connections
		// waiting in their queues would be reset).
		defer ms.closeListeners()
		for i, l := range ms.listeners {
			handed = append(handed, wire.Listener{Name: l.name, Network: l.network, Addr: l.addr.String(), FD: wire.FDFirstListener + i})
		}
		for _, l := range ms.listeners {
			if hooks.PostBind != nil {
				if err := guard("PostBind", func() error { return hooks.PostBind(ctx, l.addr) }); err != nil {
					return fmt.Errorf("prefork: PostBind hook: %w", err)
				}
			}
			ms.log.Info("prefork: listening", "socket", l.name, "network", l.network, "addr", l.addr.String(), "pid", os.Getpid())
		}
	}
	for _, h := range cfg.unusedHanded {
		ms.log.Info("prefork: closing a socket the previous master handed over, which this pool was not told to serve", "socket", h.Name)
		syscall.Close(h.FD)
	}
	if len(cfg.unusedPassed) > 0 {
		ms.log.Info("prefork: not serving sockets that systemd passed, which this pool was not told to serve", "sockets", cfg.unusedPassed)
	}
	ms.counted(func(p *Stats) {
		p.Network, p.Addr = handed[0].Network, handed[0].Addr
		for _, h := range handed {
			p.Sockets = append(p.Sockets, SocketStats{Name: h.Name, Network: h.Network, Addr: h.Addr, Queued: -1, MaxQueued: -1})
		}
		p.Limits = Limits{cfg.minServers, cfg.maxServers, cfg.minSpare, cfg.maxSpare}
		p.MaxRequests = cfg.maxRequests
	})
	ms.warnRecycling()

	if err := callHook("PreSignalSetup", hooks.PreSignalSetup, ctx); err != nil {
		return err
	}
	signals := make(chan os.Signal, 4)
	if !cfg.noSignals {
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU)
		defer signal.Stop(signals)
	}
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
	ms.env = childEnv(handed, ms.cfg.childMaxProcs)
	ms.sdWhere = where(handed)
	if !cfg.predecessor.pending() { // until it takes over, the old master speaks for the service
		ms.sd.open(ms.log, ms.sdWhere)
	}
	defer ms.sd.close()
	ms.spawner = startSpawner(cfg.maxServers, cfg.childTimerSlack)
	defer ms.spawner.stop()

	// Parking needs every queue to watch: a parked child takes nothing
	// from them, and the master unparks it when connections wait.
	_, allQueues := ms.readQueues()
	ms.policy = policy{
		minServers: cfg.minServers, maxServers: cfg.maxServers,
		minSpare: cfg.minSpare, maxSpare: cfg.maxSpare,
		canPark: allQueues,
	}
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
	// While children are busy the loop looks at the pool every
	// watchInterval; while none is, the board's alarm wakes it.
	watchTick := time.NewTicker(watchInterval)
	defer watchTick.Stop()
	var timeoutTick <-chan time.Time
	if ms.cfg.requestTimeout > 0 {
		t := time.NewTicker(timeoutCheckInterval)
		defer t.Stop()
		timeoutTick = t.C
	}
	var killTimer, spawnTimer <-chan time.Time
	ctxDone := ms.ctx.Done()
	signalStops := 0

	ms.takeAsks() // a Shutdown or Close during start-up: no child starts
	for !ms.stopping || len(ms.children) > 0 {
		spawnTimer = ms.maintain(spawnTimer)
		ms.publish(time.Now())
		ms.reportSize()
		ms.notifyPool()
		if ms.watching {
			watchTick.Reset(ms.lookIn)
		} else {
			watchTick.Stop()
		}
		if !ms.poolReady && !ms.stopping && ms.readyCount() >= ms.cfg.minServers {
			ms.poolReady = true
			ms.log.Info("prefork: pool ready", "children", len(ms.children))
			err := callHook("PostInitChildren", hooks.PostInitChildren, ms.ctx)
			if err == nil {
				err = callHook("PreLoop", hooks.PreLoop, ms.ctx)
			}
			if err != nil {
				ms.stop(ActionStopNow, err)
				continue
			}
			ms.notifyReady()
			ms.takeOver()
		}
		select {
		case ev := <-ms.events:
			ms.handle(ev)
		case sig := <-signals:
			switch sig {
			case syscall.SIGUSR1:
				ms.logStats()
				continue
			case syscall.SIGTTIN, syscall.SIGTTOU:
				if !ms.stopping {
					ms.stepSize(sig.(syscall.Signal))
				}
				continue
			}
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
		case <-retireTick.C: // the loop looks at the pool at least once a second
		case <-watchTick.C:
		case <-timeoutTick:
			ms.enforceRequestTimeout()
		case <-ms.askWake:
			ms.takeAsks()
		case err := <-ms.upgradeDone:
			ms.upgraded(err)
		case <-ms.handedOff:
			ms.tookOver()
		case <-spawnTimer:
			spawnTimer = nil
		case <-ms.sd.watchdogTicks(): // read anew: a master that takes over starts it then
			ms.sd.tell("WATCHDOG=1", "")
		case <-ms.draining:
			ms.draining, ms.drained = nil, true
			ms.stop(ActionStop, nil)
		case <-killTimer:
			ms.log.Warn("prefork: children still running after ShutdownTimeout; killing them", "children", len(ms.children))
			ms.killAll()
		}
		if ms.stopping && killTimer == nil {
			killTimer = time.After(ms.cfg.shutdownTimeout + killGrace)
		}
	}
	if ms.upgrading != nil { // the stop has cut short the wait for the new master
		ms.upgraded(<-ms.upgradeDone)
	}
	ms.cfg.predecessor.release()
	ms.watchers.Wait()
	ms.publish(time.Now())
	ms.reportSize() // none left
	ms.notifyPool()
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

// takeAsks acts on what Manager's methods asked.
func (ms *master) takeAsks() {
	ms.askMu.Lock()
	asked, limits, upgrades := ms.asked, ms.limits, ms.upgradeAsks
	ms.asked, ms.limits, ms.upgradeAsks = nil, nil, nil
	ms.askMu.Unlock()
	if limits != nil && !ms.stopping {
		ms.setLimits(*limits)
	}
	for _, w := range upgrades {
		ms.beginUpgrade(w)
	}
	for _, a := range asked {
		ms.log.Info("prefork: asked", "action", a.String())
		ms.stop(a, nil)
	}
}

// stop begins a stop, or escalates one to ActionStopNow. err, if not nil and no
// error was recorded before, is what Run will return.
func (ms *master) stop(action SignalAction, err error) {
	if ms.stopErr == nil {
		ms.stopErr = err
	}
	switch action {
	case ActionStop:
		switch {
		case ms.stopping, ms.draining != nil:
		case ms.cfg.drainDelay > 0 && !ms.drained && ms.poolReady && !ms.cfg.predecessor.pending(): // no drain for a pool never in rotation
			// Lame duck: serve on while load balancers take the pool
			// out of rotation; the loop stops it when the delay is over.
			ms.draining = time.After(ms.cfg.drainDelay)
			ms.log.Info("prefork: draining before the stop", "delay", ms.cfg.drainDelay)
			ms.notifyStopping()
		default:
			ms.stopping = true
			ms.closeIntake()
			for _, c := range ms.children {
				ms.setPhase(c, stopping)
			}
		}
	case ActionStopNow:
		ms.stopping = true
		ms.killAll()
	case ActionRestart:
		ms.beginRestart()
		ms.notifyReloading()
	case ActionUpgrade:
		ms.beginUpgrade(nil)
	}
	if ms.stopping || ms.draining != nil {
		ms.abandonUpgrade(action == ActionStopNow)
	}
	if ms.stopping {
		ms.notifyStopping()
	}
}

func (ms *master) killAll() {
	for _, c := range ms.children {
		ms.setPhase(c, killed)
	}
}

func (ms *master) handle(ev event) {
	c := ev.c
	if !slices.Contains(ms.children, c) {
		return
	}
	switch {
	case ev.started:
		ms.started(c, ev.err)
	case ev.exited:
		ms.exited(c, ev.err)
	case ev.bad != nil:
		ms.log.Error("prefork: child sent a malformed status record; killing it", "pid", c.pid, "err", ev.bad)
		ms.setPhase(c, killed)
	case ev.rec.Kind.FromMaster():
		ms.log.Error("prefork: child sent a master's record; killing it", "pid", c.pid)
		ms.setPhase(c, killed)
	case ev.rec.Kind == wire.Failed:
		c.failed = ev.rec.Text
	case ev.rec.Kind == wire.Idle:
		if c.readyAt.IsZero() {
			c.readyAt = time.Now()
			ms.everReady = true
			if ms.failures > 0 && c.started.After(ms.lastFailure) {
				ms.retries = 0 // children start again: back to the first steps
			}
			ms.log.Debug("prefork: child ready", "pid", c.pid)
		}
		ms.setPhase(c, c.startPhase) // one told to leave before it was ready stays leaving
	case ev.rec.Kind == wire.Busy:
		ms.watching = true // the alarm: the loop looks at the pool now
		ms.alarmAt = time.Now()
	case ev.rec.Kind == wire.Retiring:
		c.leftAt = time.Now()
		ms.setPhase(c, leaving)
	}
}

func (ms *master) exited(c *child, err error) {
	ms.children = slices.DeleteFunc(ms.children, func(x *child) bool { return x == c })
	c.status.Close()
	reason := ms.exitReason(c, err)
	ms.counted(func(p *Stats) { p.Exits[reason]++ })
	if hook := ms.cfg.hooks.ChildExited; hook != nil {
		if perr := guard("ChildExited", func() error { hook(c.pid, reason, err); return nil }); perr != nil {
			logPanic(ms.log, perr)
		}
	}
	_, served, begun := ms.board.State(c.slot)
	ms.begunGone += begun
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
	case !c.ready() && !ms.stopping:
		ms.log.Warn("prefork: child exited before it was ready", "pid", c.pid, "how", how)
		// A SIGKILL the master did not send (the OOM killer, as the
		// child's Initialize grows) fails the start as a crash does; the
		// master's own fails it only if it was for StartTimeout.
		if c.phase != killed || c.failed != "" {
			ms.startFailed(c.started, fmt.Errorf("child %d: %s", c.pid, how))
		}
	case (err != nil || c.failed != "") && c.untold() && !ms.stopping:
		ms.log.Warn("prefork: child died", "pid", c.pid, "how", how, "served", served)
		if time.Since(c.started) < youngDeath && !killedBySignal(err) {
			// A child that crashes at once, on every request say, must
			// not turn each request into a fork. SIGKILL comes from
			// outside (an operator, the OOM killer): that is not the
			// child's fault, and is not paced.
			ms.startFailed(c.started, fmt.Errorf("child %d died %v after it started: %s", c.pid, time.Since(c.started).Round(time.Millisecond), how))
		}
	default:
		ms.log.Debug("prefork: child exited", "pid", c.pid, "how", how, "served", served)
	}
	if c.untold() && !ms.stopping {
		ms.lookAgain()
	}
}

// lookAgain asks idle children to look at the listener again when
// connections wait after a child died by itself: the kernel may have woken
// that child for one of them, and will not wake another for it.
func (ms *master) lookAgain() {
	n, _ := ms.readQueues()
	for _, c := range ms.children {
		if n > 0 && ms.idle(c) {
			ms.send(c, wire.Look)
			n--
		}
	}
}

// killedBySignal reports whether a child's exit error says SIGKILL ended it.
func killedBySignal(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	status, ok := exit.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == syscall.SIGKILL
}
