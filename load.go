package prefork

import (
	"runtime"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
)

// What the master reads to size the pool: the children's states on the
// board, the listener's queue, the machine's idle CPU, and what busy
// children do. observe gathers them into the policy's observation.

// observe counts the children by what they do, and reads the listener's
// queue, and now and then the machine's CPU and the busy children's states.
func (ms *master) observe() observation {
	now := time.Now()
	if ms.failures > 0 && ms.healthy() {
		ms.log.Info("prefork: children start and stay up again", "failures", ms.failures)
		ms.failures, ms.retries = 0, 0
	}
	o := observation{now: now, queued: -1, begun: ms.begunGone, failing: ms.failures > 0, startAfter: ms.nextSpawn}
	o.queued, _ = ms.readQueues()
	switch {
	case o.queued <= 0:
		ms.queuedSince = time.Time{}
	case ms.queuedSince.IsZero():
		ms.queuedSince = now
	}
	var stuck []int
	for _, c := range ms.children {
		o.processes++
		state, begun := ms.track(c, now)
		o.begun += begun
		idle := c.phase == serving && state != board.Busy && state != board.Leaving
		switch {
		case c.phase == starting && c.startPhase == parked:
			o.startingParked++
		case c.phase == starting:
			o.starting++
		case c.phase == parked && state != board.Busy:
			o.parked++
		case (c.phase == serving || c.phase == parked) && state == board.Busy: // a parked one serves what it was woken for as it was parked
			o.busy++
			if ms.idleClient(c, now) {
				o.idleClients++
			}
		case idle:
			o.idle++
		}
		// An idle child that takes nothing while connections wait is
		// stuck: stopped, or unable to accept. Waits are counted from the
		// first look that saw connections waiting, not from the last look
		// at a quiet pool, a second before one connection came.
		if !idle || o.queued <= 0 || begun != c.seen || c.moved.IsZero() {
			c.seen, c.moved, c.stuck = begun, now, false
		} else if now.Sub(later(c.moved, ms.queuedSince)) >= stuckAfter {
			o.stuck++
			if !c.stuck {
				c.stuck = true
				stuck = append(stuck, c.pid)
			}
		}
	}
	if len(stuck) > 0 {
		ms.log.Warn("prefork: idle children take no connection while connections wait; starting others", "pids", stuck, "queued", o.queued)
	}
	ms.readLoad(now, o.busy)
	o.idleCores, o.blocked, o.sampled = ms.load.idleCores, ms.load.blocked, ms.load.sampled
	return o
}

// loadView is what the master last read of the machine's load.
type loadView struct {
	cpu       [8]cpuReading // the latest readings, a ring
	last      int           // the newest reading's index
	idleCores float64       // -1 unknown
	sampledAt time.Time     // when busy children's states were last read
	// Of the busy children sampled, how many slept in their own I/O.
	blocked, sampled int
	next             int // where the next sample starts among the children
}

type cpuReading struct {
	at    time.Time
	times sys.CPUTimes
}

const (
	// loadInterval paces the reading of busy children's states, which
	// costs a few system calls per child.
	loadInterval = 100 * time.Millisecond
	// maxSampled bounds the busy children whose threads are read per look.
	maxSampled = 8
	// heldAfter: a child that has waited for its client this long into a
	// request is held by it.
	heldAfter = 50 * time.Millisecond
	// idleClientAfter: a client that has sent nothing for this long, in
	// one wait of its child, is idle as far as the queue is concerned:
	// longer than a round trip and than the pause of a client that sends
	// its requests back to back, shorter than any idle timeout.
	idleClientAfter = 100 * time.Millisecond
	// cpuWindow is the span over which idle CPU is measured, and
	// cpuMinWindow the least: a few clock ticks per core, yet short enough
	// that a burst that saturates the cores stops the growth it started
	// within a few looks.
	cpuWindow    = 100 * time.Millisecond
	cpuMinWindow = 40 * time.Millisecond
	// cpuReadEvery bounds how often /proc/stat is read.
	cpuReadEvery = 10 * time.Millisecond
)

// readLoad refreshes the load view. The idle CPU is measured from the
// oldest reading within cpuWindow, or after a quiet spell from the last
// reading of all: a long, idle span, which lets a burst grow the pool at
// once. The busy children's threads are read only when the CPU is short,
// which is when what they do decides whether the pool grows, and at most
// every loadInterval.
func (ms *master) readLoad(now time.Time, busy int) {
	v := &ms.load
	newest := v.cpu[v.last]
	if !newest.at.IsZero() && now.Sub(newest.at) < cpuReadEvery {
		return
	}
	times, ok := sys.ReadCPUTimes()
	if !ok {
		v.idleCores = -1
		return
	}
	base := newest // after a quiet spell, the only one there is
	for k := 1; k < len(v.cpu); k++ {
		r := v.cpu[(v.last-k+len(v.cpu))%len(v.cpu)]
		if r.at.IsZero() || now.Sub(r.at) > cpuWindow {
			break
		}
		base = r
	}
	v.last = (v.last + 1) % len(v.cpu)
	v.cpu[v.last] = cpuReading{at: now, times: times}
	switch {
	case base.at.IsZero() || times.Total <= base.times.Total:
		v.idleCores = float64(runtime.NumCPU()) // nothing to compare with yet
	case now.Sub(base.at) >= cpuMinWindow:
		share := float64(times.Idle-base.times.Idle) / float64(times.Total-base.times.Total)
		v.idleCores = share * float64(runtime.NumCPU())
	} // else too few clock ticks yet: keep the last figure

	if now.Sub(v.sampledAt) < loadInterval {
		return
	}
	v.sampledAt = now
	v.blocked, v.sampled = 0, 0
	if busy == 0 || v.idleCores >= spareCores {
		return
	}
	n := len(ms.children)
	for k := range n {
		c := ms.children[(v.next+k)%n]
		if state, _, _ := ms.board.State(c.slot); c.phase != serving || state != board.Busy {
			continue
		}
		v.sampled++
		// A child that waits for its client is part of a conversation
		// that another child would not speed up, unless the client has
		// held it for a while: then it is capacity taken, as much as a
		// handler asleep on its database.
		if ms.board.WaitsForClient(c.slot) && now.Sub(c.busySince) < heldAfter {
			continue
		}
		if runnable, ok := sys.Runnable(c.pid); ok && !runnable {
			v.blocked++
		}
		if v.sampled == maxSampled {
			v.next = (v.next + k + 1) % n
			break
		}
	}
}

// idleClient reports whether busy child c has waited for its client, in
// one wait, for idleClientAfter: a client that sends nothing, such as an
// HTTP connection kept alive between two requests.
func (ms *master) idleClient(c *child, now time.Time) bool {
	return !c.waitSince.IsZero() && now.Sub(c.waitSince) >= idleClientAfter
}

// track reads child c's slot, and notes when the master first saw its
// current request, and its current wait for its client.
func (ms *master) track(c *child, now time.Time) (state uint32, begun uint64) {
	state, _, begun = ms.board.State(c.slot)
	waiting, waits := ms.board.ClientWait(c.slot)
	switch {
	case state != board.Busy || !waiting:
		c.waits, c.waitSince = waits, time.Time{}
	case waits != c.waits || c.waitSince.IsZero():
		c.waits, c.waitSince = waits, now
	}
	switch {
	case state != board.Busy:
		c.begun, c.busySince = begun, time.Time{}
	case begun != c.begun || c.busySince.IsZero(): // a new request: time it from now
		c.begun, c.busySince = begun, now
	}
	return state, begun
}
