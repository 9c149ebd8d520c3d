package prefork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// A Manager runs a prefork server. Configure it, then call Run. Every field
// is optional but NewChild and Addr; zero selects the default. Run never
// writes to the Manager.
type Manager struct {
	// Network is "tcp" (the default: IPv4 and IPv6), "tcp4", "tcp6",
	// "udp", "udp4", "udp6", "unix" or "unixgram".
	Network string
	// Addr is the host:port to listen on, or for Unix sockets the path of
	// the socket file (removed when Run returns; a file left by a server
	// that crashed is replaced). Port 0 picks a free port;
	// ManagerHooks.PostBind receives the bound address.
	Addr string
	// ReusePort makes each child bind a socket of its own with
	// SO_REUSEPORT (TCP and UDP only), instead of sharing one socket
	// bound by the master. On Linux the kernel then spreads connections
	// evenly over the children, but it does so by hash, busy or not, and a
	// connection still queued on a child's socket when that child exits
	// is lost. The master binds nothing and does not call
	// ManagerHooks.PreBind and PostBind; each child calls its own PreBind
	// and PostBind hooks (PreBinder, PostBinder). Port 0 is resolved once,
	// so that all children share one port.
	ReusePort bool
	// Backlog is the length of the listen queue. Zero means SOMAXCONN;
	// the system caps it (on Linux at net.core.somaxconn).
	Backlog int

	// MinServers is the least number of children (default 5) and
	// MaxServers the most (default 20).
	MinServers, MaxServers int
	// MinSpareServers is the least number of idle children (default 2):
	// when fewer are idle, the master starts more at once, up to
	// MaxServers. MaxSpareServers is the most (default 10): surplus idle
	// children are retired once a second, never below MinServers.
	MinSpareServers, MaxSpareServers int
	// MaxRequests is how many requests a child serves before it exits and
	// is replaced. Zero means no limit. Denied requests count.
	MaxRequests int

	// MaxRequestsJitter adds a random 0..MaxRequestsJitter to each
	// child's MaxRequests, so that children started together do not all
	// retire at once. Zero means none.
	MaxRequestsJitter int

	// RequestTimeout bounds one request, when positive. The request's ctx
	// carries that deadline, and its connection's reads and writes fail
	// half a second after it; a child still busy a second after the
	// deadline gets SIGTERM, and SIGKILL a second later, and is replaced.
	// It is the defence against clients and handlers that hold children
	// forever. Zero means no limit.
	RequestTimeout time.Duration

	// ShutdownTimeout bounds a graceful stop (default 30s): when it has
	// run out, children's request contexts are cancelled, and a second
	// later the children that are left are killed.
	ShutdownTimeout time.Duration

	// Logger receives the master's and the children's logs. Nil means
	// slog.Default().
	Logger *slog.Logger

	// NewChild returns the Child that serves requests in a child process.
	// It is called once in each child, never in the master.
	NewChild func() Child

	// Hooks are the master's lifecycle hooks.
	Hooks ManagerHooks

	mu      sync.Mutex
	running *master // while Run runs in the master
}

// Run runs the prefork server and blocks until it stops.
//
// In the master, Run checks the configuration (an error wrapping
// ErrInvalidConfig says what to change), binds the listener, starts the
// children and keeps the pool sized. A SIGINT or SIGTERM, or the
// cancellation of ctx, stops it gracefully; Run then returns nil once every
// child has exited and the listener is closed. Otherwise Run returns why it
// could not go on: a hook's error, a listen error, or ErrChildStart.
//
// In a child, Run serves requests and returns when the child is done: nil
// after a normal end, the error of Child.Initialize if it failed,
// ErrMasterGone if the master died. The program should then exit.
func (m *Manager) Run(ctx context.Context) error {
	cfg, err := m.config()
	if err != nil {
		return err
	}
	if inherited != nil {
		return runChild(ctx, cfg, inherited)
	}
	ms := newMaster(ctx, cfg)
	m.mu.Lock()
	if m.running != nil {
		m.mu.Unlock()
		return errors.New("prefork: Run called while the Manager is running")
	}
	m.running = ms
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = nil
		m.mu.Unlock()
		close(ms.done)
	}()
	return ms.run()
}

// master returns the master that Run runs in this process, or nil.
func (m *Manager) master() *master {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running
}

// Shutdown stops the pool gracefully, as SIGTERM does, and waits until Run
// has returned. If ctx is done first, it kills the children that are left,
// as Close does, waits for Run to return, and returns ctx's error. It
// returns nil at once if Run is not running in this process's master.
// Do not call it from a hook, which Run waits for: return an action from
// ManagerHooks.Signal, or call Close, instead.
func (m *Manager) Shutdown(ctx context.Context) error {
	ms := m.master()
	if ms == nil {
		return nil
	}
	ms.ask(ActionStop)
	select {
	case <-ms.done:
		return nil
	case <-ctx.Done():
		ms.ask(ActionStopNow)
		<-ms.done
		return ctx.Err()
	}
}

// Close kills every child at once and makes Run return. It does not wait.
func (m *Manager) Close() error {
	if ms := m.master(); ms != nil {
		ms.ask(ActionStopNow)
	}
	return nil
}

// RestartChildren replaces every child with a fresh one, a few at a time,
// without failing a request: each old child is retired when it is idle and
// replaced as the pool needs. Use it after a change that children read
// when they start, for example from the SIGHUP handler (or return the
// ActionRestart from ManagerHooks.Signal). It returns at once, and
// does nothing when Run is not running in this process's master.
func (m *Manager) RestartChildren() {
	if ms := m.master(); ms != nil {
		ms.ask(ActionRestart)
	}
}

// killGrace is how long after ShutdownTimeout a child may take to return
// from its cancelled request before it is killed.
const killGrace = time.Second

// retireInterval paces the retirement of surplus idle children, so that a
// pool does not shrink and grow again with every ripple of load.
const retireInterval = time.Second

// Start-up failures: a child that exits before it is ready makes the
// master wait before the next start, doubling the wait each time; if no
// child has ever become ready after maxStartFailures such exits, Run gives
// up with ErrChildStart.
const (
	firstBackoff     = 50 * time.Millisecond
	maxBackoff       = 5 * time.Second
	maxStartFailures = 5
)

// child is the master's record of one child process. Whether it is idle
// or busy is on the board, in its slot.
type child struct {
	pid     int
	slot    int
	cmd     *exec.Cmd
	status  *os.File // the master's end of the status socket
	ready   bool     // it has reported for duty
	leaving bool     // it said it is leaving (Retiring)
	retire  bool     // Retire or Stop was sent
	old     bool     // to be replaced by RestartChildren
	failed  string   // the error the child reported before it exited

	terminated time.Time // when the master sent SIGTERM for RequestTimeout
	killed     bool
}

// active reports whether the child takes requests, or will once ready.
func (c *child) active() bool { return !c.leaving && !c.retire }

// idle reports whether a ready child waits for a request.
func (ms *master) idle(c *child) bool {
	state, _, _ := ms.board.State(c.slot)
	return c.ready && state == board.Idle
}

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

	everReady bool
	failures  int       // start-up failures in a row
	nextSpawn time.Time // no start before this, after start-up failures
	stopping  bool
	stopErr   error // what Run returns
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
	ms.env = childEnv([]wire.Listener{handed})
	ms.spawner = startSpawner()
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

// childEnv is the master's environment with the handover variables.
func childEnv(listeners []wire.Listener) []string {
	env := []string{
		wire.EnvChild + "=" + strconv.Itoa(wire.Version),
		wire.EnvMasterPID + "=" + strconv.Itoa(os.Getpid()),
		wire.EnvListeners + "=" + wire.EncodeListeners(listeners),
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != wire.EnvChild && name != wire.EnvMasterPID && name != wire.EnvListeners && name != wire.EnvBoard {
			env = append(env, kv)
		}
	}
	return env
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
		if !initialized && !ms.stopping && ms.ready() >= ms.cfg.minServers {
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

// starting counts the children that have not reported yet.
func (ms *master) starting() int {
	n := 0
	for _, c := range ms.children {
		if !c.ready && c.active() {
			n++
		}
	}
	return n
}

// ready counts the children that have reported idle or busy.
func (ms *master) ready() int {
	n := 0
	for _, c := range ms.children {
		if c.ready && c.active() {
			n++
		}
	}
	return n
}

// scale starts the children the pool lacks: enough to reach MinServers and
// MinSpareServers idle ones (a starting child counts as idle), up to
// MaxServers processes. After start-up failures it starts one at a time, paced by the
// back-off; it returns the timer that ends the current back-off.
func (ms *master) scale(timer <-chan time.Time) <-chan time.Time {
	if ms.stopping {
		return nil
	}
	active, idle := 0, 0
	for _, c := range ms.children {
		if c.active() {
			active++
			if !c.ready || ms.idle(c) {
				idle++
			}
		}
	}
	// MaxServers bounds processes: a retiring child finishing its last
	// request still counts.
	n := min(max(ms.cfg.minServers-active, ms.cfg.minSpare-idle), ms.cfg.maxServers-len(ms.children))
	if n <= 0 {
		return timer
	}
	if ms.failures > 0 {
		if wait := time.Until(ms.nextSpawn); wait > 0 {
			if timer == nil {
				timer = time.After(wait)
			}
			return timer
		}
		if ms.starting() > 0 { // wait for it to be ready or fail
			return timer
		}
		n = 1
	}
	for range n {
		if err := ms.spawn(); err != nil {
			ms.log.Error("prefork: cannot start a child", "err", err)
			ms.startFailed(err)
			return nil
		}
	}
	return timer
}

// startFailed records a child that did not come up, and gives up if none
// ever has.
func (ms *master) startFailed(cause error) {
	ms.failures++
	if !ms.everReady && ms.failures >= maxStartFailures {
		ms.log.Error("prefork: children keep failing to start; giving up", "failures", ms.failures, "last", cause)
		ms.stop(ActionStopNow, fmt.Errorf("%w: %d in a row, the last: %w", ErrChildStart, ms.failures, cause))
		return
	}
	wait := min(firstBackoff<<(ms.failures-1), maxBackoff)
	ms.nextSpawn = time.Now().Add(wait)
	ms.log.Warn("prefork: waiting before starting another child", "wait", wait, "failures", ms.failures)
}

func (ms *master) spawn() error {
	status, childStatus, err := sys.Socketpair()
	if err != nil {
		return err
	}
	slot := slices.Index(ms.slots, false)
	if slot < 0 { // cannot happen: MaxServers bounds both
		childStatus.Close()
		status.Close()
		return errors.New("no free slot on the scoreboard")
	}
	ms.slots[slot] = true
	ms.board.Reset(slot)
	cmd := &exec.Cmd{
		Path:        ms.exe,
		Args:        os.Args,
		Env:         append(ms.env[:len(ms.env):len(ms.env)], wire.EnvBoard+"="+strconv.Itoa(slot)+","+strconv.Itoa(ms.board.Len())),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{childStatus, ms.boardFD}, // fds 3 and 4
		SysProcAttr: sys.ChildAttr(syscall.SIGTERM),
	}
	if ms.listener != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, ms.listener) // fd 5
	}
	err = ms.spawner.start(cmd)
	childStatus.Close() // or the master would never see EOF from the child
	if err != nil {
		status.Close()
		ms.board.Release(slot)
		ms.slots[slot] = false
		return err
	}
	ms.board.SetPID(slot, cmd.Process.Pid)
	c := &child{pid: cmd.Process.Pid, slot: slot, cmd: cmd, status: status}
	ms.children[c.pid] = c
	ms.log.Debug("prefork: child started", "pid", c.pid)
	ms.watchers.Add(1)
	go ms.watch(c)
	return nil
}

// watch reads a child's status records until the child closes its end,
// then reaps it.
func (ms *master) watch(c *child) {
	defer ms.watchers.Done()
	r := wire.NewReader(c.status)
	for {
		rec, err := r.Next()
		if errors.Is(err, wire.ErrMalformed) {
			ms.events <- event{pid: c.pid, bad: err}
			continue
		}
		if err != nil {
			break
		}
		ms.events <- event{pid: c.pid, rec: rec}
	}
	err := c.cmd.Wait()
	ms.events <- event{pid: c.pid, exited: true, err: err}
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
			c.ready = true
			ms.everReady = true
			ms.failures = 0
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
		ms.startFailed(fmt.Errorf("child %d: %s", c.pid, how))
	case (err != nil || c.failed != "") && !c.retire && !ms.stopping:
		ms.log.Warn("prefork: child died", "pid", c.pid, "how", how, "served", served)
	default:
		ms.log.Debug("prefork: child exited", "pid", c.pid, "how", how, "served", served)
	}
}

// retireSurplus asks idle children above MaxSpareServers to exit, keeping
// at least MinServers; children due for replacement go first.
func (ms *master) retireSurplus() {
	if ms.stopping {
		return
	}
	active, idle := 0, 0
	for _, c := range ms.children {
		if c.active() {
			active++
			if ms.idle(c) {
				idle++
			}
		}
	}
	n := min(idle-ms.cfg.maxSpare, active-ms.cfg.minServers)
	for _, old := range []bool{true, false} {
		for _, c := range ms.children {
			if n > 0 && c.old == old && c.active() && ms.idle(c) {
				ms.tell(c, wire.Retire)
				n--
			}
		}
	}
}

// beginRestart marks every child for replacement by replaceOld.
func (ms *master) beginRestart() {
	if ms.stopping {
		return
	}
	n := 0
	for _, c := range ms.children {
		if c.active() {
			c.old = true
			n++
		}
	}
	ms.log.Info("prefork: restarting children", "children", n)
}

// replaceOld retires children marked by beginRestart, as many at a time as
// MinSpareServers (at least one), and only while no replacement is still
// starting: the pool keeps its capacity, and the shared socket keeps every
// waiting connection for the children that go on.
func (ms *master) replaceOld() {
	if ms.stopping {
		return
	}
	retiring, batch := 0, max(1, ms.cfg.minSpare)
	for _, c := range ms.children {
		if !c.ready && c.active() {
			return // a replacement is starting
		}
		if c.old && !c.active() {
			retiring++
		}
	}
	for _, c := range ms.children {
		if retiring >= batch {
			return
		}
		if c.old && c.active() && ms.idle(c) {
			ms.tell(c, wire.Retire)
			retiring++
		}
	}
}

// timeoutCheckInterval paces the checks of RequestTimeout.
const timeoutCheckInterval = 100 * time.Millisecond

// enforceRequestTimeout stops children busy longer than RequestTimeout,
// past the grace that lets a handler see its ctx end: SIGTERM first, then
// SIGKILL.
func (ms *master) enforceRequestTimeout() {
	now := time.Now()
	for _, c := range ms.children {
		state, _, busy := ms.board.State(c.slot)
		switch {
		case c.killed || state != board.Busy || busy < ms.cfg.requestTimeout+killGrace:
		case c.terminated.IsZero():
			ms.log.Warn("prefork: request timed out; stopping the child", "pid", c.pid, "busy", busy.Round(time.Millisecond))
			c.terminated = now
			c.retire = true // it will not take another request
			c.cmd.Process.Signal(syscall.SIGTERM)
		case now.Sub(c.terminated) >= killGrace:
			ms.log.Warn("prefork: child did not stop after SIGTERM; killing it", "pid", c.pid)
			c.cmd.Process.Kill()
			c.killed = true
		}
	}
}

// tell sends a child Retire or Stop, once: either makes it leave the pool.
func (ms *master) tell(c *child, kind wire.Kind) {
	if c.retire {
		return
	}
	c.retire = true
	var b [wire.RecordSize]byte
	// A child that cannot be told (it just died) is reaped all the same.
	c.status.Write(wire.Encode(&b, wire.Record{Kind: kind}))
}

// spawner starts every child from one goroutine locked to its OS thread
// for as long as the master runs, because Linux sends a child its
// parent-death signal when the thread that started it exits, not the
// process.
type spawner struct {
	cmds chan *exec.Cmd
	errs chan error
	done chan struct{}
}

func startSpawner() *spawner {
	s := &spawner{cmds: make(chan *exec.Cmd), errs: make(chan error), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for cmd := range s.cmds {
			s.errs <- cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	s.cmds <- cmd
	return <-s.errs
}

func (s *spawner) stop() {
	close(s.cmds)
	<-s.done
}
