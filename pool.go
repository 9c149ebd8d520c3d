package prefork

import (
	"fmt"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/wire"
)

// retireInterval paces the retirement of surplus idle children, so that a
// pool does not shrink and grow again with every ripple of load.
const retireInterval = time.Second

// Failures: a child that exits by itself (not by SIGKILL) before it is
// ready, or within youngDeath of its start, makes the master wait before
// the next start, doubling the wait each time. A child that has stayed
// ready for youngDeath since the last failure ends the streak. If no child has ever become ready
// after maxStartFailures failures, Run gives up with ErrChildStart.
const (
	youngDeath       = time.Second
	firstBackoff     = 50 * time.Millisecond
	maxBackoff       = 5 * time.Second
	maxStartFailures = 5
)

// idle reports whether a ready child waits for a request.
func (ms *master) idle(c *child) bool {
	state, _, _ := ms.board.State(c.slot)
	return c.ready && state == board.Idle
}

// census counts the children that take requests, or will: those still
// starting, those ready, and of these the idle ones.
type census struct{ starting, ready, idle int }

func (ms *master) census() census {
	var n census
	for _, c := range ms.children {
		switch {
		case !c.active():
		case !c.ready:
			n.starting++
		default:
			n.ready++
			if ms.idle(c) {
				n.idle++
			}
		}
	}
	return n
}

// scale starts the children the pool lacks: enough to reach MinServers and
// MinSpareServers idle ones (a starting child counts as idle), up to
// MaxServers processes. After failures it starts one at a time, paced by
// the back-off; it returns the timer that ends the current back-off.
func (ms *master) scale(timer <-chan time.Time) <-chan time.Time {
	if ms.stopping {
		return nil
	}
	count := ms.census()
	active, idle := count.starting+count.ready, count.starting+count.idle // a starting child will be idle
	// MaxServers bounds processes: a retiring child finishing its last
	// request still counts.
	n := min(max(ms.cfg.minServers-active, ms.cfg.minSpare-idle), ms.cfg.maxServers-len(ms.children))
	if n <= 0 {
		return timer
	}
	if ms.failures > 0 && ms.healthy() {
		ms.log.Info("prefork: children start and stay up again", "failures", ms.failures)
		ms.failures = 0
	}
	if ms.failures > 0 {
		if wait := time.Until(ms.nextSpawn); wait > 0 {
			if timer == nil {
				timer = time.After(wait)
			}
			return timer
		}
		if count.starting > 0 { // wait for it to be ready or fail
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

// healthy reports whether a child that became ready after the last
// failure has stayed up for youngDeath.
func (ms *master) healthy() bool {
	for _, c := range ms.children {
		if c.ready && c.readyAt.After(ms.lastFailure) && time.Since(c.readyAt) >= youngDeath {
			return true
		}
	}
	return false
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
	wait := min(firstBackoff<<min(ms.failures-1, 16), maxBackoff)
	ms.lastFailure = time.Now()
	ms.nextSpawn = ms.lastFailure.Add(wait)
	ms.log.Warn("prefork: waiting before starting another child", "wait", wait, "failures", ms.failures)
}

// retireSurplus asks idle children above MaxSpareServers to exit, keeping
// at least MinServers; children due for replacement go first.
func (ms *master) retireSurplus() {
	if ms.stopping {
		return
	}
	count := ms.census()
	n := min(count.idle-ms.cfg.maxSpare, count.starting+count.ready-ms.cfg.minServers)
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
	ms.restarting = n > 0
	ms.log.Info("prefork: restarting children", "children", n)
}

// replaceOld retires children marked by beginRestart, as many at a time as
// MinSpareServers (at least one), and only while no replacement is still
// starting: the pool keeps its capacity, and the shared socket keeps every
// waiting connection for the children that go on.
func (ms *master) replaceOld() {
	if ms.stopping || !ms.restarting {
		return
	}
	retiring, remaining, batch := 0, 0, max(1, ms.cfg.minSpare)
	for _, c := range ms.children {
		if c.old && c.active() {
			remaining++
		}
	}
	if ms.restarting = remaining > 0; !ms.restarting {
		return
	}
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
// SIGKILL. A request is timed from the first check that sees it, so up to
// one timeoutCheckInterval late.
func (ms *master) enforceRequestTimeout() {
	now := time.Now()
	for _, c := range ms.children {
		state, _, begun := ms.board.State(c.slot)
		if state != board.Busy {
			c.begun, c.busySince = begun, time.Time{}
			continue
		}
		if begun != c.begun || c.busySince.IsZero() { // a new request: time it from now
			c.begun, c.busySince = begun, now
		}
		busy := now.Sub(c.busySince)
		switch {
		case c.killed || busy < ms.cfg.requestTimeout+killGrace:
		case c.terminated.IsZero():
			ms.log.Warn("prefork: request timed out; stopping the child", "pid", c.pid, "busy", busy.Round(time.Millisecond))
			c.terminated = now
			c.timedOut = true // it will not take another request
			c.cmd.Process.Signal(syscall.SIGTERM)
		case now.Sub(c.terminated) >= killGrace:
			ms.log.Warn("prefork: child did not stop after SIGTERM; killing it", "pid", c.pid)
			c.cmd.Process.Kill()
			c.killed = true
		}
	}
}
