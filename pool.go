package prefork

import (
	"cmp"
	"fmt"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/wire"
)

// Failures: a child that exits by itself (not by SIGKILL) before it is
// ready, within youngDeath of its start, or that is not ready within
// StartTimeout, makes the master wait before the next start, doubling the
// wait each time: one step of back-off per attempt, however many children
// the attempt started (the first MinServers fail together when a
// dependency is down at boot). While children fail, starts are paced by the
// back-off, one at a time, whether or not the last one is still starting:
// each start is a step, until a child becomes ready again.
// A child that has stayed ready for youngDeath since the last failure ends
// the streak. If no child has ever become ready, Run gives up with
// ErrChildStart once children have failed for giveUpAfter and at least
// maxStartFailures steps.
const (
	youngDeath       = time.Second
	firstBackoff     = 50 * time.Millisecond
	maxBackoff       = 5 * time.Second
	maxStartFailures = 5
	giveUpAfter      = 5 * time.Second
)

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// backoff is the wait after the nth step of failures.
func backoff(n int) time.Duration { return min(firstBackoff<<min(max(n-1, 0), 16), maxBackoff) }

// watchInterval paces the master's look at the pool while children are
// busy.
const (
	watchInterval = 20 * time.Millisecond
	// alarmPause bounds how often the board's alarm wakes the master
	// while it watches.
	alarmPause = 5 * time.Millisecond
)

// maintain looks at the pool and acts on the policy's decision. It returns
// the timer that ends the current start back-off.
func (ms *master) maintain(timer <-chan time.Time) <-chan time.Time {
	if ms.stopping {
		ms.watching = false
		return nil
	}
	ms.replaceOld()
	ms.enforceStartDeadline()
	ms.enforceLeaveDeadline()
	o := ms.observe()
	d := ms.policy.decide(o)
	ms.counted(func(p *Stats) {
		p.Queued = o.queued
		p.MaxQueued = max(p.MaxQueued, o.queued)
		for i, l := range ms.listeners {
			p.Sockets[i].Queued = l.queued
			p.Sockets[i].MaxQueued = max(p.Sockets[i].MaxQueued, l.queued)
		}
		if d.atMax && !ms.atMax {
			p.MaxServersReached++
		}
	})
	ms.atMax = d.atMax
	ms.reportSlow(o.now)
	if d != (decision{}) {
		ms.log.Debug("prefork: resizing the pool",
			"start", d.start, "start_parked", d.startParked, "unpark", d.unpark, "park", d.park, "retire", d.retire, "contend", d.contend,
			"queued", o.queued, "idle", o.idle, "busy", o.busy, "parked", o.parked, "idle_cores", float32(o.idleCores))
	}
	timer = ms.apply(d, timer)
	ms.watchIf(o.busy > 0 || o.queued > 0 || o.starting+o.startingParked > 0 || ms.restarting || d != (decision{}))
	ms.lookIn = watchInterval
	if ms.watching {
		var when uint32
		when, ms.lookIn = nextAlarm(o.helps() && len(ms.children) < ms.cfg.maxServers, time.Since(ms.alarmAt))
		ms.board.Arm(when)
	}
	return timer
}

// nextAlarm says, while the master watches the pool, when a child that
// takes a request is to wake it, and how soon it looks again by itself.
// While the pool could grow, a child that takes the last idle slot wakes
// it at once, at most every alarmPause; within a pause, it looks again as
// the pause ends, not a whole watchInterval later, so that connections
// that arrive just after a look (the rest of a burst) wait no longer than
// the pause for the look that starts their children.
func nextAlarm(canGrow bool, sinceAlarm time.Duration) (when uint32, lookIn time.Duration) {
	switch {
	case !canGrow:
		return board.AlarmOff, watchInterval
	case sinceAlarm < alarmPause:
		return board.AlarmOff, alarmPause - sinceAlarm
	}
	return board.AlarmNoIdle, watchInterval
}

// reportSlow asks each child whose request has run for SlowRequest to log
// its stacks, once per request. c.busySince is when the master first saw
// the request: at most a look, 20 ms, late.
func (ms *master) reportSlow(now time.Time) {
	if ms.cfg.slowRequest <= 0 {
		return
	}
	for _, c := range ms.children {
		if c.busySince.IsZero() || c.slow == c.begun || now.Sub(c.busySince) < ms.cfg.slowRequest {
			continue
		}
		c.slow = c.begun
		ms.counted(func(p *Stats) { p.SlowRequests++ })
		ms.sendRecord(c, wire.Record{Kind: wire.Slow, Served: uint32(c.begun)}) // the child compares 32 bits
	}
}

// contend asks up to n children whose clients are idle to let them go (see
// Request.Contended), each once per wait.
func (ms *master) contend(n int) {
	now := time.Now()
	for _, c := range ms.children {
		if n <= 0 {
			return
		}
		if c.phase != serving || c.contended == c.waits || !ms.idleClient(c, now) {
			continue
		}
		c.contended = c.waits
		// The child compares 32 bits of the request's number.
		ms.sendRecord(c, wire.Record{Kind: wire.Contended, Served: uint32(c.begun)})
		n--
	}
}

// watchIf makes the loop look at the pool every watchInterval while busy,
// and otherwise leaves it to the board's alarm to wake the loop when a
// child takes a request.
func (ms *master) watchIf(busy bool) {
	if busy || !ms.watching {
		ms.watching = ms.watching || busy
		return
	}
	ms.board.Arm(board.AlarmAny)
	for _, c := range ms.children { // a child that went busy before Arm did not see it
		if ms.busy(c) {
			return
		}
	}
	ms.watching = false
}

// apply carries out a decision.
func (ms *master) apply(d decision, timer <-chan time.Time) <-chan time.Time {
	isParked := func(c *child) bool { return c.phase == parked }
	isServing := func(c *child) bool { return c.phase == serving }
	ms.pick(d.unpark, serving, isParked)
	n := ms.pick(d.retire, retiring, isParked)
	ms.pick(d.retire-n, retiring, ms.idle)
	n = ms.pick(d.park, parked, ms.idle)
	ms.pick(d.park-n, parked, isServing) // busy ones park after their request
	ms.startChildren(d.start, d.startParked)
	ms.contend(d.contend)
	if d.retryIn > 0 && timer == nil {
		timer = time.After(d.retryIn)
	}
	return timer
}

// pick moves up to n children that match to phase p, those due for
// replacement first, and returns how many it moved.
func (ms *master) pick(n int, p phase, match func(*child) bool) int {
	moved := 0
	for _, due := range []bool{true, false} {
		for _, c := range ms.children {
			if moved < n && (c.due != "") == due && match(c) {
				ms.setPhase(c, p)
				moved++
			}
		}
	}
	return moved
}

// idle reports whether a child serves and waits for a request.
func (ms *master) idle(c *child) bool {
	state, _, _ := ms.board.State(c.slot)
	return c.phase == serving && state == board.Idle
}

// waiting reports whether the board shows child c waiting, for requests or
// parked: not serving one, nor on its way out.
func (ms *master) waiting(c *child) bool {
	state, _, _ := ms.board.State(c.slot)
	return state == board.Idle || state == board.Parked
}

// unanswered reports whether child c was told to retire and, waiting on
// the board, has not said yet that it takes no more requests: until it
// does, it can still be woken for a connection. (A busy one answers when
// its request ends.)
func (ms *master) unanswered(c *child) bool {
	return c.phase == retiring && c.leftAt.IsZero() && ms.waiting(c)
}

// busy reports whether the board shows child c serving a request.
func (ms *master) busy(c *child) bool {
	state, _, _ := ms.board.State(c.slot)
	return state == board.Busy
}

// readyCount counts the children that are ready and take requests, or
// would when unparked.
func (ms *master) readyCount() int {
	n := 0
	for _, c := range ms.children {
		if c.active() && c.ready() {
			n++
		}
	}
	return n
}

// startChildren starts serve children to serve and spare ones parked.
// While children fail, each start is an attempt of its own, a step of the
// back-off before the next, whether its child has failed yet or not: one
// that fails slowly (on a loaded machine, or after a long Initialize) must
// not let starts pile up at the first steps' pace before its failure is
// known.
func (ms *master) startChildren(serve, spare int) {
	if serve+spare > 0 && ms.failures > 0 {
		ms.retries++
		ms.nextSpawn = time.Now().Add(backoff(1 + ms.retries))
	}
	for i := range serve + spare {
		p := serving
		if i >= serve {
			p = parked
		}
		if err := ms.spawn(p); err != nil {
			ms.log.Error("prefork: cannot start a child", "err", err)
			ms.startFailed(time.Now(), err)
			return
		}
	}
}

// healthy reports whether a child that became ready after the last
// failure has stayed up for youngDeath.
func (ms *master) healthy() bool {
	for _, c := range ms.children {
		if c.ready() && c.readyAt.After(ms.lastFailure) && time.Since(c.readyAt) >= youngDeath {
			return true
		}
	}
	return false
}

// startFailed records a child that did not come up (started is when it
// was started), and gives up if none ever has.
func (ms *master) startFailed(started time.Time, cause error) {
	now := time.Now()
	if ms.failures > 0 && !started.After(ms.lastFailure) {
		return // started before the last failure: the same attempt
	}
	if ms.failures == 0 {
		ms.firstFailure = now
	}
	ms.failures++
	ms.lastFailure = now
	if !ms.everReady && ms.failures >= maxStartFailures && now.Sub(ms.firstFailure) >= giveUpAfter {
		ms.log.Error("prefork: children keep failing to start; giving up", "failures", ms.failures,
			"for", now.Sub(ms.firstFailure).Round(time.Millisecond), "last", cause)
		ms.stop(ActionStopNow, fmt.Errorf("%w: %d attempts in %v, the last: %w", ErrChildStart, ms.failures,
			now.Sub(ms.firstFailure).Round(time.Millisecond), cause))
		return
	}
	wait := backoff(max(ms.failures, 1+ms.retries))
	ms.nextSpawn = later(ms.nextSpawn, now.Add(wait))
	ms.log.Warn("prefork: waiting before starting another child", "wait", wait, "failures", ms.failures, "last", cause)
}

// enforceStartDeadline kills children that are not ready StartTimeout
// after their start: a child whose Initialize hangs must not hold its
// place for good, and counts as a failed start.
func (ms *master) enforceStartDeadline() {
	if ms.cfg.startTimeout <= 0 {
		return
	}
	for _, c := range ms.children {
		if c.phase == starting && c.proc != nil && time.Since(c.started) >= ms.cfg.startTimeout {
			c.failed = fmt.Sprintf("not ready after StartTimeout (%v)", ms.cfg.startTimeout)
			ms.log.Warn("prefork: child not ready in time; killing it", "pid", c.pid, "start_timeout", ms.cfg.startTimeout)
			ms.setPhase(c, killed)
		}
	}
}

// beginRestart marks every child due for replacement: replaceOld replaces
// them.
func (ms *master) beginRestart() {
	if ms.stopping {
		return
	}
	n := 0
	for _, c := range ms.children {
		if c.active() {
			c.due = cmp.Or(c.due, ExitRestarted)
			n++
		}
	}
	ms.restarting = ms.restarting || n > 0
	ms.log.Info("prefork: restarting children", "children", n)
}

// replaceOld replaces the children that are due (a restart, MaxLifetime,
// MaxChildMemory; see markDue), as many at a time as MinSpareServers (at
// least one), and only while no replacement is still starting. A due
// child is retired only while MinServers other children are ready: where
// there are no more than that, replacements start first, and due children
// retire as they become ready. A pool at MaxServers has no room for that:
// there, one due child at a time retires before its replacement starts.
// Idle and parked children retire first; a busy one finishes its request,
// and holds up no batch meanwhile, but at MaxServers. The shared socket keeps every waiting connection for the children that
// go on.
func (ms *master) replaceOld() {
	if ms.stopping {
		return
	}
	ms.markDue(time.Now())
	if !ms.restarting {
		return
	}
	due, leaving, finishing := 0, 0, 0
	for _, c := range ms.children {
		switch {
		case c.due == "":
		case c.active():
			due++
		case ms.busy(c):
			finishing++
		default:
			leaving++
		}
	}
	if ms.restarting = due > 0; !ms.restarting {
		return
	}
	for _, c := range ms.children {
		if c.phase == starting {
			return // a replacement is starting
		}
	}
	retire, start := replacing(due, leaving, finishing, ms.readyCount(), len(ms.children), ms.cfg)
	ms.retireDue(retire)
	ms.startAhead(start)
}

// enforceLeaveDeadline kills children that said they take no more
// requests and have not exited ShutdownTimeout and a grace later: a
// Shutdown hook, or code after Run, that never returns must not keep the
// process, and its place under MaxServers, for good. The same goes for a
// child told to retire that has not answered in that time while it was
// not busy (stopped, or wedged): it would hold up a restart, which
// retires a few children at a time, and READY=1 after it. A busy one
// answers when its request ends, however long its client keeps it.
// (During a stop, the loop's own deadline does this.)
func (ms *master) enforceLeaveDeadline() {
	limit := ms.cfg.shutdownTimeout + killGrace
	for _, c := range ms.children {
		switch {
		case c.phase == killed:
		case !c.leftAt.IsZero() && time.Since(c.leftAt) >= limit:
			ms.log.Warn("prefork: child did not exit after it stopped taking requests; killing it", "pid", c.pid,
				"left", time.Since(c.leftAt).Round(time.Millisecond))
			ms.setPhase(c, killed)
		case ms.unanswered(c) && c.ready() && time.Since(c.retiredAt) >= limit:
			ms.log.Warn("prefork: child did not answer when told to retire; killing it", "pid", c.pid,
				"told", time.Since(c.retiredAt).Round(time.Millisecond))
			ms.setPhase(c, killed)
		}
	}
}

// timeoutCheckInterval paces the checks of RequestTimeout.
const timeoutCheckInterval = 100 * time.Millisecond

// enforceRequestTimeout stops children busy longer than RequestTimeout,
// past the grace that lets a handler see its ctx end: SIGTERM first, then
// SIGKILL. A request is timed from the first check that sees it, so up to
// one timeoutCheckInterval late.
func (ms *master) enforceRequestTimeout() {
	now := time.Now()
	for _, c := range ms.children {
		if state, _ := ms.track(c, now); state != board.Busy {
			continue
		}
		busy := now.Sub(c.busySince)
		switch {
		case c.phase == killed || busy < ms.cfg.requestTimeout+killGrace:
		case c.phase != timedOut:
			ms.log.Warn("prefork: request timed out; stopping the child", "pid", c.pid, "busy", busy.Round(time.Millisecond))
			ms.setPhase(c, timedOut) // it will not take another request
		case now.Sub(c.terminated) >= killGrace:
			ms.log.Warn("prefork: child did not stop after SIGTERM; killing it", "pid", c.pid)
			ms.setPhase(c, killed)
		}
	}
}
